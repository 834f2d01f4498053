//! The supervisor task: tells systemd when the daemon is ready, what it is
//! doing (STATUS=) and that it is alive (WATCHDOG=1), and that it stops.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{scrub, Notifier, Vitals, WatchersState};
use crate::journal::{FileState, JournalError};

/// How often the STATUS= line is refreshed.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);
/// While starting, each status refresh asks systemd for at least this much
/// more time, so that a first scan of a huge share does not hit
/// `TimeoutStartSec=` as long as the daemon is alive.
const START_EXTENSION: Duration = Duration::from_secs(30);

type Probe = Pin<Box<dyn Future<Output = Result<BTreeMap<FileState, u64>, JournalError>> + Send>>;

/// The STATUS= line: what blocks uploads, if anything, then the backlog,
/// e.g. `PAUSED: upload token refused; 0 uploading, 12 queued, 0 retrying,
/// 0 settling, 0 failed, 31 done`.
pub fn status_line(
    counts: Option<&BTreeMap<FileState, u64>>,
    token_refused: bool,
    watchers: &WatchersState,
) -> String {
    let mut line = String::new();
    if token_refused {
        line.push_str("PAUSED: upload token refused (replace it, then reload or restart); ");
    }
    match watchers {
        WatchersState::Starting => line.push_str("scanning the watch folders; "),
        WatchersState::Running => {}
        WatchersState::Stopped(why) => {
            line.push_str(&format!("WATCH STAGE STOPPED: {}; ", scrub(why)));
        }
    }
    match counts {
        Some(counts) => {
            let n = |s: FileState| counts.get(&s).copied().unwrap_or(0);
            line.push_str(&format!(
                "{} uploading, {} queued, {} retrying, {} settling, {} failed, {} done",
                n(FileState::Uploading),
                n(FileState::Queued),
                n(FileState::Retrying),
                n(FileState::Settling),
                n(FileState::Failed),
                n(FileState::Done),
            ));
        }
        None => line.push_str("backlog unknown (the journal has not answered yet)"),
    }
    line
}

/// [`status_line`], led by the watch folders that are unavailable.
fn vitals_line(
    vitals: &Vitals,
    counts: Option<&BTreeMap<FileState, u64>>,
    token_refused: bool,
) -> String {
    let mut line = status_line(counts, token_refused, &vitals.watchers.state());
    let bandwidth = vitals.throttle.now();
    if bandwidth.paused {
        line = format!(
            "SCHEDULED PAUSE: {} (upload.bandwidth_limit); {line}",
            bandwidth.description
        );
    }
    if let Some(why) = vitals.gate.state().tls {
        line = format!(
            "PAUSED: {} (ingestd retries by itself); {line}",
            scrub(&why)
        );
    }
    match vitals.shares.summary() {
        Some(away) => format!("WAITING: {}; {line}", scrub(&away)),
        None => line,
    }
}

/// [`supervise_every`] with a status line every [`STATUS_EVERY`].
pub async fn supervise(notifier: Option<Notifier>, vitals: Vitals, cancel: CancellationToken) {
    supervise_every(notifier, vitals, cancel, STATUS_EVERY).await;
}

/// Runs until `cancel`; returns at once without a notifier (not under
/// systemd). It sends:
/// - READY=1 when `vitals.watchers` first turns `Running` (the first scan
///   is done); until then, EXTEND_TIMEOUT_USEC with each status line;
/// - STATUS= with [`status_line`] every `status_every`;
/// - WATCHDOG=1 every half `$WATCHDOG_USEC`, but only while the journal
///   answers: a journal silent for the whole watchdog timeout (a hung disk,
///   a dead journal thread) stops the pings so systemd restarts the daemon,
///   which is safe at any instant;
/// - STOPPING=1 and a last STATUS= on `cancel`.
pub async fn supervise_every(
    notifier: Option<Notifier>,
    vitals: Vitals,
    cancel: CancellationToken,
    status_every: Duration,
) {
    let Some(notifier) = notifier else {
        return;
    };
    let status_every = status_every.max(Duration::from_millis(10));
    let mut watchers = vitals.watchers.subscribe();
    let mut watchers_open = true;
    let mut ready_sent = false;

    let mut status_tick = tokio::time::interval(status_every);
    status_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let watchdog_every = notifier.watchdog_interval();
    let watchdog_timeout = notifier.watchdog_timeout().unwrap_or(Duration::MAX);
    // The period only matters when there is a watchdog.
    let mut watchdog_tick =
        tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut withholding = false;

    // The journal is asked in the background so that a slow answer never
    // delays a ping or a status line.
    let mut probe: Option<(Probe, Instant)> = None;
    let mut counts: Option<BTreeMap<FileState, u64>> = None;
    let mut journal_ok_at = Instant::now();
    let mut journal_error_logged = false;

    loop {
        if !ready_sent && *watchers.borrow_and_update() == WatchersState::Running {
            ready_sent = true;
            notifier.ready();
            info!("told systemd: ready");
            let refused = vitals.gate.state().refused.is_some();
            notifier.status(&vitals_line(&vitals, counts.as_ref(), refused));
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            changed = watchers.changed(), if watchers_open => {
                watchers_open = changed.is_ok();
            }
            _ = watchdog_tick.tick(), if watchdog_every.is_some() => {
                // A journal waiting for space on a full disk, or for its database, is alive and
                // will go on by itself: a restart would not help.
                let silent = if vitals.journal.disk().waiting_since().is_some() {
                    journal_ok_at = Instant::now();
                    Duration::ZERO
                } else {
                    journal_ok_at.elapsed()
                };
                if silent < watchdog_timeout {
                    notifier.watchdog();
                    if withholding {
                        withholding = false;
                        warn!("the journal answers again; watchdog pings resume");
                    }
                } else if !withholding {
                    withholding = true;
                    error!(
                        silent_s = silent.as_secs(),
                        "the journal has not answered for the whole watchdog timeout; \
                         no more watchdog pings, so systemd restarts ingestd (every file keeps its state)"
                    );
                }
            }
            answer = async {
                match probe.as_mut() {
                    Some((fut, _)) => fut.await,
                    None => std::future::pending().await,
                }
            } => {
                probe = None;
                match answer {
                    Ok(c) => {
                        counts = Some(c);
                        journal_ok_at = Instant::now();
                        journal_error_logged = false;
                    }
                    Err(e) => {
                        if !journal_error_logged {
                            journal_error_logged = true;
                            warn!("status for systemd: cannot read the journal: {e}");
                        }
                    }
                }
                let refused = vitals.gate.state().refused.is_some();
                notifier.status(&vitals_line(&vitals, counts.as_ref(), refused));
            }
            _ = status_tick.tick() => {
                match &probe {
                    None => {
                        let journal = vitals.journal.clone();
                        let fut: Probe = Box::pin(async move { journal.call(|j| j.counts()).await });
                        probe = Some((fut, Instant::now()));
                    }
                    Some((_, since)) if since.elapsed() >= status_every * 2 => {
                        let refused = vitals.gate.state().refused.is_some();
                        let what = if vitals.journal.disk().full_since().is_some() {
                            "PAUSED: the journal's disk is full (free space; work resumes by itself)"
                        } else if vitals.journal.disk().away_since().is_some() {
                            "PAUSED: the journal's database does not answer (work resumes by itself when it is back)"
                        } else {
                            "JOURNAL NOT ANSWERING"
                        };
                        notifier.status(&format!(
                            "{what} for {}s; {}",
                            since.elapsed().as_secs(),
                            vitals_line(&vitals, counts.as_ref(), refused)
                        ));
                    }
                    Some(_) => {}
                }
                if !ready_sent && journal_ok_at.elapsed() < START_EXTENSION {
                    notifier.extend_timeout(START_EXTENSION.max(status_every * 3));
                }
            }
        }
    }
    notifier.stopping();
    notifier.status("stopping: finishing the chunks in flight; every file keeps its place");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_what_blocks_and_the_backlog() {
        let counts: BTreeMap<FileState, u64> = [
            (FileState::Uploading, 3),
            (FileState::Queued, 12),
            (FileState::Done, 7),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            status_line(Some(&counts), false, &WatchersState::Running),
            "3 uploading, 12 queued, 0 retrying, 0 settling, 0 failed, 7 done"
        );
        let paused = status_line(Some(&counts), true, &WatchersState::Running);
        assert!(
            paused.starts_with("PAUSED: upload token refused"),
            "{paused}"
        );
        let stopped = status_line(None, false, &WatchersState::Stopped("boom".into()));
        assert!(stopped.contains("WATCH STAGE STOPPED: boom"), "{stopped}");
        assert!(stopped.contains("backlog unknown"), "{stopped}");
    }
}
