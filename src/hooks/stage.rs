//! The hooks stage: takes the deliveries that are due from the journal's
//! outbox, at most a few at a time per hook, runs each through `deliver`,
//! and records the outcome: delivered, or the error and when to try again
//! (jittered exponential backoff, persisted). A claim outlives the hook's
//! timeout, so the delivery of a process that died is made again by the
//! next one (at least once); the same event keeps its `id`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::deliver::{Attempt, DeliverError, HookSecret, HookTarget, Transport};
use crate::config::{self, HookSettings};
use crate::journal::{now_ms, DueDelivery, JournalError, JournalHandle};

/// Deliveries on their way at once, per hook.
const PER_HOOK: usize = 2;
/// How often the outbox is looked at.
const TICK: Duration = Duration::from_secs(1);
/// A claim lasts the hook's timeout and this margin.
const CLAIM_MARGIN: Duration = Duration::from_secs(60);
/// The retries' backoff: full jitter over `BASE · 2^(n-1)`, capped.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_CAP: Duration = Duration::from_secs(600);
/// Delivered events are forgotten after this long.
const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The deliveries' outcomes since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct HookCounters {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl HookCounters {
    /// (delivered, failed) attempts.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.delivered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The delay before the `attempt`-th retry (1-based).
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let ceiling = u64::try_from(exp.min(BACKOFF_CAP).as_millis()).unwrap_or(u64::MAX);
    // At least a second: a hook that fails at once never spins.
    Duration::from_millis(fastrand::u64(1000.min(ceiling)..=ceiling.max(1000)))
}

/// Deliveries on their way, each with its outcome.
type Running = JoinSet<(DueDelivery, Result<(), DeliverError>)>;

/// A configured hook, ready to run.
struct Hook {
    settings: HookSettings,
    target: HookTarget,
}

fn target_of(settings: &HookSettings) -> HookTarget {
    match &settings.target {
        config::HookTarget::Command { argv } => HookTarget::Command { argv: argv.clone() },
        config::HookTarget::Webhook { url, secret, .. } => HookTarget::Webhook {
            url: url.clone(),
            secret: secret
                .as_ref()
                .map(|s| HookSecret::new(s.expose().as_bytes().to_vec())),
        },
    }
}

/// The event's main fields as `INGESTD_*` variables for a command.
fn env_of(body: &str) -> Vec<(String, String)> {
    let Ok(event) = serde_json::from_str::<Json>(body) else {
        return Vec::new();
    };
    let file = &event["file"];
    let text = |v: &Json| match v {
        Json::String(s) => Some(s.clone()),
        Json::Null => None,
        other => Some(other.to_string()),
    };
    [
        ("INGESTD_AT", &event["at"]),
        ("INGESTD_FILE_ID", &file["id"]),
        ("INGESTD_PATH", &file["path"]),
        ("INGESTD_STATE", &file["state"]),
        ("INGESTD_SIZE", &file["size"]),
        ("INGESTD_SHA256", &file["sha256"]),
        ("INGESTD_VIDEO_ID", &file["video_id"]),
        ("INGESTD_PLAYER_URL", &file["player_url"]),
        ("INGESTD_HLS_URL", &file["hls_url"]),
        ("INGESTD_ATTEMPTS", &file["attempts"]),
        ("INGESTD_REASON", &file["reason"]),
        ("INGESTD_PLAYABLE_AT", &file["playable_at"]),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name.to_owned(), text(value)?)))
    .collect()
}

/// Runs the configured hooks' deliveries.
pub struct HookRunner {
    journal: JournalHandle,
    transport: Transport,
    hooks: Arc<Vec<Hook>>,
    counters: Arc<HookCounters>,
}

impl HookRunner {
    pub fn new(
        journal: JournalHandle,
        hooks: &[HookSettings],
        counters: Arc<HookCounters>,
    ) -> Result<HookRunner, DeliverError> {
        let hooks = hooks
            .iter()
            .map(|settings| Hook {
                target: target_of(settings),
                settings: settings.clone(),
            })
            .collect();
        Ok(HookRunner {
            journal,
            transport: Transport::new()?,
            hooks: Arc::new(hooks),
            counters,
        })
    }

    fn keys(&self) -> Vec<String> {
        self.hooks.iter().map(|h| h.settings.key.clone()).collect()
    }

    /// At start: the claims of the last run are free again (its
    /// deliveries go out now), and, with `drop` (the daemon of a SQLite
    /// journal: the one process its hooks are configured for), the backlog
    /// of hooks no longer configured is dropped, saying so. A shared
    /// journal's nodes may each have other hooks: nothing is dropped there.
    async fn start(&self, drop: bool) -> Result<(), JournalError> {
        let keys = self.keys();
        let (freed, dropped) = self
            .journal
            .call(move |j| {
                let freed = j.free_own_claims()?;
                let dropped = if drop && j.node().is_none() {
                    j.drop_unconfigured(&keys)?
                } else {
                    Vec::new()
                };
                Ok((freed, dropped))
            })
            .await?;
        if freed > 0 {
            info!(
                deliveries = freed,
                "hooks: delivering again what was on its way when ingestd stopped"
            );
        }
        for (hook, n) in dropped {
            warn!(
                hook = %hook,
                deliveries = n,
                "hooks: dropped the undelivered events of a hook no longer in the configuration"
            );
        }
        Ok(())
    }

    /// Runs until `stop`; a delivery on its way when it stops is claimed
    /// still, and made again by the next start.
    pub async fn run(self, stop: CancellationToken) {
        let mut started = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running: Running = JoinSet::new();
        let mut in_flight: HashMap<String, usize> = HashMap::new();
        let mut last_prune = tokio::time::Instant::now();
        let mut complained = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(done) = running.join_next() => {
                    if let Ok((due, outcome)) = done {
                        if let Some(n) = in_flight.get_mut(&due.hook) {
                            *n = n.saturating_sub(1);
                        }
                        self.record(due, outcome).await;
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
            if !started {
                match self.start(true).await {
                    Ok(()) => started = true,
                    Err(e) if !complained => {
                        warn!("hooks: cannot read the outbox: {e}; trying again");
                        complained = true;
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            match self.claim(&in_flight, now_ms()).await {
                Ok(due) => {
                    complained = false;
                    for (hook, d) in due {
                        *in_flight.entry(d.hook.clone()).or_default() += 1;
                        self.spawn(&mut running, hook, d);
                    }
                }
                Err(e) if !complained => {
                    warn!("hooks: cannot read the outbox: {e}; trying again");
                    complained = true;
                }
                Err(_) => {}
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                let before = now_ms() - i64::try_from(KEEP_DELIVERED.as_millis()).unwrap_or(0);
                if let Err(e) = self.journal.call(move |j| j.prune_outbox(before)).await {
                    warn!("hooks: cannot prune the outbox: {e}");
                }
            }
        }
        running.abort_all();
    }

    /// Delivers, once each, what is due now (`run --once`, `upload`): what
    /// fails waits for the next run (its backoff runs past `now`, so it is
    /// not taken again here), and so does what `shutdown` interrupts (its
    /// claim is freed at the next start).
    pub async fn deliver_due_once(&self, shutdown: &CancellationToken) -> Result<(), JournalError> {
        self.start(false).await?;
        let now = now_ms();
        loop {
            let due = self.claim(&HashMap::new(), now).await?;
            if due.is_empty() {
                return Ok(());
            }
            let mut running: Running = JoinSet::new();
            for (hook, d) in due {
                self.spawn(&mut running, hook, d);
            }
            loop {
                let done = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    done = running.join_next() => done,
                };
                let Some(done) = done else { break };
                if let Ok((due, outcome)) = done {
                    self.record(due, outcome).await;
                }
            }
        }
    }

    /// Starts the delivery `d` to the hook at `index`.
    fn spawn(&self, running: &mut Running, index: usize, d: DueDelivery) {
        let (transport, hooks) = (self.transport.clone(), self.hooks.clone());
        running.spawn(async move {
            let outcome = match hooks.get(index) {
                Some(h) => deliver_one(&transport, h, &d).await,
                None => Ok(()),
            };
            (d, outcome)
        });
    }

    /// What each hook may take at `now`, with the index of its hook. An
    /// error after some were claimed returns those (the others wait).
    async fn claim(
        &self,
        in_flight: &HashMap<String, usize>,
        now: i64,
    ) -> Result<Vec<(usize, DueDelivery)>, JournalError> {
        let mut out = Vec::new();
        for (index, hook) in self.hooks.iter().enumerate() {
            let room =
                PER_HOOK.saturating_sub(in_flight.get(&hook.settings.key).copied().unwrap_or(0));
            if room == 0 {
                continue;
            }
            let keys = vec![hook.settings.key.clone()];
            let hold = i64::try_from((hook.settings.timeout + CLAIM_MARGIN).as_millis())
                .unwrap_or(i64::MAX);
            let due = self
                .journal
                .call(move |j| j.claim_deliveries(&keys, now, hold, room))
                .await;
            match due {
                Ok(due) => out.extend(due.into_iter().map(|d| (index, d))),
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    async fn record(&self, due: DueDelivery, outcome: Result<(), DeliverError>) {
        let DueDelivery {
            event_id,
            hook,
            uid,
            kind,
            attempts,
            ..
        } = due;
        let attempt = attempts + 1;
        let written = match outcome {
            Ok(()) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                info!(hook = %hook, event = %kind, id = %uid, attempt, "hook delivered");
                let h = hook.clone();
                self.journal
                    .call(move |j| j.delivered(event_id, &h, now_ms()))
                    .await
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let delay = backoff(attempt);
                warn!(
                    hook = %hook,
                    event = %kind,
                    id = %uid,
                    attempt,
                    retry_in_s = delay.as_secs(),
                    "hook failed: {e}; it is tried again (uploads go on)"
                );
                let next = now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(0));
                let error = e.to_string();
                let h = hook.clone();
                self.journal
                    .call(move |j| j.delivery_failed(event_id, &h, next, &error))
                    .await
            }
        };
        if let Err(e) = written {
            // Its claim runs out and it is delivered again: at least once.
            warn!(hook = %hook, id = %uid, "hooks: cannot record a delivery: {e}");
        }
    }
}

async fn deliver_one(
    transport: &Transport,
    hook: &Hook,
    due: &DueDelivery,
) -> Result<(), DeliverError> {
    let env = env_of(&due.body);
    let attempt = Attempt {
        body: due.body.as_bytes(),
        event_id: &due.uid,
        kind: &due.kind,
        env: &env,
        timeout: hook.settings.timeout,
    };
    transport.deliver(&hook.target, &attempt).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_is_capped_and_never_spins() {
        for attempt in 1..40 {
            let d = backoff(attempt);
            assert!(
                d >= Duration::from_secs(1) && d <= BACKOFF_CAP,
                "{attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn a_command_gets_the_main_fields_as_variables() {
        let body = r#"{"id":"evt_1","event":"uploaded","at":"2026-12-04T10:00:00.000Z",
            "file":{"id":7,"path":"/srv/a.mp4","size":10,"sha256":null,"video_id":"vi1","attempts":0}}"#;
        let env: HashMap<String, String> = env_of(body).into_iter().collect();
        assert_eq!(env["INGESTD_FILE_ID"], "7");
        assert_eq!(env["INGESTD_PATH"], "/srv/a.mp4");
        assert_eq!(env["INGESTD_VIDEO_ID"], "vi1");
        assert_eq!(env["INGESTD_SIZE"], "10");
        assert!(!env.contains_key("INGESTD_SHA256"));
    }
}
