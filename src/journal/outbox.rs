//! The outbox: the events of files (`uploaded`, `playable`, `not_playable`,
//! `failed`, `gone`) and their deliveries to hooks. An event is written in
//! the transaction of the change that causes it ([`Journal::emit`], called
//! by the transitions), with the JSON the hooks receive, frozen then, and
//! one delivery per hook that takes it; so a crash between the change and
//! the delivery loses nothing, and the event goes out at the next start.
//!
//! Deliveries are claimed (by this process, until past the hook's timeout),
//! one at a time per file and hook, in event order; a failed one waits for
//! its persisted `next_attempt_at`. No I/O besides SQL: running the hooks
//! is the hooks stage's.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value as Json};

use super::row::{row_to_file, COLUMNS, COLUMN_COUNT};
use super::sql::args;
use super::{now_ms, Journal, JournalError};
use crate::config::{HookEvent, HookSettings};

/// Who claims deliveries in a SQLite journal: its one daemon.
const LOCAL_CLAIMER: &str = "local";

/// What the journal needs to know of the hooks: which events each takes
/// (events no hook takes are not written), and whether done videos are
/// watched for "playable".
#[derive(Debug, Clone, Default)]
pub(crate) struct Outbox {
    hooks: Vec<(String, Vec<HookEvent>)>,
    pub(super) watch_playable: bool,
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub event_id: i64,
    pub hook: String,
    /// What a receiver dedupes on.
    pub uid: String,
    pub kind: String,
    /// The event's JSON.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// The deliveries of one hook, for `status --hooks` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookBacklog {
    pub hook: String,
    pub pending: u64,
    /// Of the pending, those that failed at least once.
    pub failing: u64,
    pub delivered: u64,
    pub dropped: u64,
    /// When the oldest pending delivery's event happened (Unix ms).
    pub oldest_pending_at: Option<i64>,
    /// The newest error among the pending deliveries.
    pub last_error: Option<String>,
}

/// One undelivered event, for `status --hooks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    pub hook: String,
    pub uid: String,
    pub kind: String,
    pub file_id: i64,
    pub at: i64,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// Unix ms as RFC 3339 (UTC, milliseconds), as events carry time.
pub(crate) fn rfc3339(ms: i64) -> String {
    // RFC 3339 ends at year 9999 (and the formatter fails past it).
    const LAST_MS: u64 = 253_402_300_799_999;
    let ms = u64::try_from(ms).unwrap_or(0).min(LAST_MS);
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A new event id: 128 random bits, which a receiver can dedupe on.
fn new_uid() -> String {
    format!("evt_{:032x}", fastrand::u128(..))
}

/// `'a', 'b'`: hook keys are validated names or derived hex, so inlining
/// them quoted is safe (a quote is doubled all the same).
fn key_list(keys: &[String]) -> String {
    let quoted: Vec<String> = keys
        .iter()
        .map(|k| format!("'{}'", k.replace('\'', "''")))
        .collect();
    quoted.join(", ")
}

impl Journal {
    /// Which events to write, for which hooks; whether to watch done videos
    /// for "playable". Set once after opening (and again on a reload).
    pub fn set_outbox(&mut self, hooks: &[HookSettings], watch_playable: bool) {
        self.outbox = Outbox {
            hooks: hooks
                .iter()
                .map(|h| (h.key.clone(), h.events.clone()))
                .collect(),
            watch_playable,
        };
    }

    /// Writes `event` of file `id` and its deliveries, if any hook takes
    /// it. Called inside the transaction of the change that causes it.
    pub(super) fn emit(&mut self, id: i64, event: HookEvent) -> Result<(), JournalError> {
        let hooks: Vec<String> = self
            .outbox
            .hooks
            .iter()
            .filter(|(_, events)| events.contains(&event))
            .map(|(key, _)| key.clone())
            .collect();
        if hooks.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let uid = new_uid();
        let body = self.event_body(id, event, &uid, now)?;
        const OP: &str = "journal an event";
        let event_id = self
            .row(
                OP,
                "INSERT INTO events (uid, file_id, kind, body, at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 RETURNING id",
                args![uid, id, event.as_str(), body, now],
            )?
            .ok_or(JournalError::Closed)?
            .i64(0)
            .map_err(self.query_err(OP))?;
        for hook in hooks {
            self.exec(
                OP,
                "INSERT INTO deliveries (event_id, hook, file_id, state, next_attempt_at) \
                 VALUES (?1, ?2, ?3, 'pending', ?4)",
                args![event_id, hook, id, now],
            )?;
        }
        Ok(())
    }

    /// The JSON an event carries: what happened, when, and the file's row
    /// as it is now (never the token: the row does not hold it).
    fn event_body(
        &self,
        id: i64,
        event: HookEvent,
        uid: &str,
        now: i64,
    ) -> Result<String, JournalError> {
        const OP: &str = "read a file for its event";
        let rows = self.rows(
            OP,
            &format!(
                "SELECT {COLUMNS}, sha256, video_json, playable_at, playable_note \
                 FROM files WHERE id = ?1"
            ),
            args![id],
        )?;
        let Some(r) = rows.first() else {
            return Err(JournalError::WrongState {
                op: OP,
                id,
                expected: "in the journal",
                actual: None,
            });
        };
        let read = |r: &super::sql::SqlRow| -> Result<_, super::sql::DbError> {
            Ok((
                row_to_file(r)?,
                r.opt_text(COLUMN_COUNT)?,
                r.opt_text(COLUMN_COUNT + 1)?,
                r.opt_i64(COLUMN_COUNT + 2)?,
                r.opt_text(COLUMN_COUNT + 3)?,
            ))
        };
        let (file, sha256, video_json, playable_at, playable_note) =
            read(r).map_err(self.query_err(OP))?;
        let video: Json = video_json
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or(Json::Null);
        let asset = |name: &str| video["assets"][name].as_str().map(str::to_owned);
        let reason = match event {
            HookEvent::Failed | HookEvent::Gone => file.last_error.clone(),
            HookEvent::NotPlayable => playable_note,
            HookEvent::Uploaded | HookEvent::Playable => None,
        };
        let path = file.path();
        let body = json!({
            "id": uid,
            "event": event.as_str(),
            "at": rfc3339(now),
            "node": self.node(),
            "file": {
                "id": file.id,
                "path": String::from_utf8_lossy(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())),
                "state": file.state.as_str(),
                "size": file.identity.size,
                "sha256": sha256,
                "video_id": file.video_id,
                "player_url": asset("player"),
                "hls_url": asset("hls"),
                "attempts": file.attempts,
                "reason": reason,
                "done_at": file.done_at.map(rfc3339),
                "playable_at": playable_at.map(rfc3339),
            },
        });
        Ok(body.to_string())
    }

    fn claimer(&self) -> String {
        self.node().unwrap_or(LOCAL_CLAIMER).to_owned()
    }

    /// Claims up to `limit` deliveries due at `now` to the hooks `keys`,
    /// each the oldest undelivered event of its file for its hook, until
    /// `now + hold_ms` (past the hook's timeout: a claim of a process that
    /// died runs out, and the delivery is made again).
    pub(crate) fn claim_deliveries(
        &mut self,
        keys: &[String],
        now: i64,
        hold_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, JournalError> {
        if keys.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let claimer = self.claimer();
        let hooks = key_list(keys);
        self.atomically(|j| {
            const OP: &str = "claim hook deliveries";
            // Free: due, and not on its way (or its claim ran out).
            let free = |t: &str| {
                format!(
                    "{t}state = 'pending' AND {t}next_attempt_at <= ?3 \
                     AND ({t}claimed_until IS NULL OR {t}claimed_until < ?3)"
                )
            };
            let claimed = j.rows(
                OP,
                &format!(
                    "UPDATE deliveries SET claimed_by = ?1, claimed_until = ?2 \
                     WHERE (event_id, hook) IN ( \
                       SELECT d.event_id, d.hook FROM deliveries d \
                       WHERE {free_d} AND d.hook IN ({hooks}) \
                         AND NOT EXISTS (SELECT 1 FROM deliveries p \
                           WHERE p.state = 'pending' AND p.hook = d.hook \
                             AND p.file_id = d.file_id AND p.event_id < d.event_id) \
                       ORDER BY d.next_attempt_at, d.event_id LIMIT ?4) \
                     AND {free} \
                     RETURNING event_id, hook, attempts",
                    free_d = free("d."),
                    free = free(""),
                ),
                args![
                    claimer,
                    now.saturating_add(hold_ms),
                    now,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
            )?;
            let claimed = j.map_rows(OP, claimed, |r| Ok((r.i64(0)?, r.text(1)?, r.u32(2)?)))?;
            let mut due = Vec::with_capacity(claimed.len());
            for (event_id, hook, attempts) in claimed {
                let event = j.rows(
                    OP,
                    "SELECT uid, kind, body FROM events WHERE id = ?1",
                    args![event_id],
                )?;
                let event = j.map_rows(OP, event, |e| Ok((e.text(0)?, e.text(1)?, e.text(2)?)))?;
                for (uid, kind, body) in event {
                    due.push(DueDelivery {
                        event_id,
                        hook: hook.clone(),
                        uid,
                        kind,
                        body,
                        attempts,
                    });
                }
            }
            due.sort_by_key(|d| d.event_id);
            Ok(due)
        })
    }

    /// The hook took the event.
    pub(crate) fn delivered(
        &mut self,
        event_id: i64,
        hook: &str,
        now: i64,
    ) -> Result<(), JournalError> {
        self.exec(
            "record a delivery",
            "UPDATE deliveries SET state = 'delivered', delivered_at = ?3, attempts = attempts + 1, \
             last_error = NULL, claimed_by = NULL, claimed_until = NULL \
             WHERE event_id = ?1 AND hook = ?2 AND state = 'pending'",
            args![event_id, hook, now],
        )?;
        Ok(())
    }

    /// The attempt failed: the next one is at `next_attempt_at`, and the
    /// file's later events for this hook wait at least as long (so a hook
    /// that is down costs the claim nothing for each event waiting behind).
    /// Nothing changes if this process's claim ran out and another took it.
    pub(crate) fn delivery_failed(
        &mut self,
        event_id: i64,
        hook: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), JournalError> {
        let claimer = self.claimer();
        self.atomically(|j| {
            const OP: &str = "record a failed delivery";
            let n = j.exec(
                OP,
                "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?3, last_error = ?4, \
                 claimed_by = NULL, claimed_until = NULL \
                 WHERE event_id = ?1 AND hook = ?2 AND state = 'pending' AND claimed_by = ?5",
                args![event_id, hook, next_attempt_at, error, claimer],
            )?;
            if n == 1 {
                j.exec(
                    OP,
                    "UPDATE deliveries SET next_attempt_at = ?3 \
                     WHERE hook = ?2 AND state = 'pending' AND event_id > ?1 AND next_attempt_at < ?3 \
                     AND file_id = (SELECT file_id FROM events WHERE id = ?1)",
                    args![event_id, hook, next_attempt_at],
                )?;
            }
            Ok(())
        })
    }

    /// At start-up: the claims this process held before it stopped (or
    /// crashed) are free again, so their deliveries go out now.
    pub(crate) fn free_own_claims(&mut self) -> Result<usize, JournalError> {
        let claimer = self.claimer();
        self.exec(
            "free the hook deliveries of the last run",
            "UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL \
             WHERE state = 'pending' AND claimed_by = ?1",
            args![claimer],
        )
    }

    /// Drops the pending deliveries to hooks no longer configured; how many
    /// for each hook.
    pub(crate) fn drop_unconfigured(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<(String, u64)>, JournalError> {
        let keep = if keys.is_empty() {
            String::new()
        } else {
            format!("AND hook NOT IN ({})", key_list(keys))
        };
        self.atomically(|j| {
            const OP: &str = "drop deliveries to removed hooks";
            let rows = j.rows(
                OP,
                &format!(
                    "SELECT hook, count(*) FROM deliveries WHERE state = 'pending' {keep} \
                     GROUP BY hook ORDER BY hook"
                ),
                &[],
            )?;
            let dropped = j.map_rows(OP, rows, |r| {
                Ok((r.text(0)?, u64::try_from(r.i64(1)?).unwrap_or(0)))
            })?;
            j.exec(
                OP,
                &format!(
                    "UPDATE deliveries SET state = 'dropped', claimed_by = NULL, claimed_until = NULL, \
                     last_error = 'the hook is no longer in the configuration' \
                     WHERE state = 'pending' {keep}"
                ),
                &[],
            )?;
            Ok(dropped)
        })
    }

    /// Forgets delivered and dropped deliveries, and events none waits
    /// for, older than `before` (Unix ms). How many events went.
    pub(crate) fn prune_outbox(&mut self, before: i64) -> Result<usize, JournalError> {
        self.atomically(|j| {
            const OP: &str = "prune the outbox";
            j.exec(
                OP,
                "DELETE FROM deliveries WHERE state <> 'pending' \
                 AND event_id IN (SELECT id FROM events WHERE at < ?1)",
                args![before],
            )?;
            j.exec(
                OP,
                "DELETE FROM events WHERE at < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
                args![before],
            )
        })
    }

    /// Whether this journal has the outbox (a SQLite journal read while an
    /// older ingestd holds it may not).
    pub(super) fn has_outbox(&self) -> Result<bool, JournalError> {
        let sql = if self.is_postgres() {
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'deliveries'"
        } else {
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'"
        };
        Ok(self.scalar("inspect schema", sql, &[])?.unwrap_or(0) > 0)
    }

    /// Each hook's deliveries by state, hooks in name order.
    pub fn hook_backlogs(&self) -> Result<Vec<HookBacklog>, JournalError> {
        if !self.has_outbox()? {
            return Ok(Vec::new());
        }
        const OP: &str = "count hook deliveries";
        let rows = self.rows(
            OP,
            "SELECT d.hook, d.state, count(*), \
               sum(CASE WHEN d.attempts > 0 THEN 1 ELSE 0 END), min(e.at) \
             FROM deliveries d JOIN events e ON e.id = d.event_id \
             GROUP BY d.hook, d.state ORDER BY d.hook",
            &[],
        )?;
        let counts = self.map_rows(OP, rows, |r| {
            Ok((
                r.text(0)?,
                r.text(1)?,
                u64::try_from(r.i64(2)?).unwrap_or(0),
                u64::try_from(r.opt_i64(3)?.unwrap_or(0)).unwrap_or(0),
                r.opt_i64(4)?,
            ))
        })?;
        let mut out: Vec<HookBacklog> = Vec::new();
        for (hook, state, n, failing, oldest) in counts {
            if out.last().is_none_or(|b| b.hook != hook) {
                out.push(HookBacklog {
                    hook: hook.clone(),
                    ..HookBacklog::default()
                });
            }
            let Some(b) = out.last_mut() else { continue };
            match state.as_str() {
                "pending" => {
                    b.pending = n;
                    b.failing = failing;
                    b.oldest_pending_at = oldest;
                }
                "delivered" => b.delivered = n,
                _ => b.dropped += n,
            }
        }
        for b in &mut out {
            if b.failing > 0 {
                b.last_error = self
                    .rows(
                        OP,
                        "SELECT last_error FROM deliveries WHERE state = 'pending' AND hook = ?1 \
                         AND last_error IS NOT NULL ORDER BY next_attempt_at DESC LIMIT 1",
                        args![b.hook.clone()],
                    )?
                    .first()
                    .and_then(|r| r.opt_text(0).ok().flatten());
            }
        }
        Ok(out)
    }

    /// For each hook with undelivered events: how many, and when the oldest
    /// happened (Unix ms). Reads only the pending deliveries (an index),
    /// so a scrape stays cheap however long the history.
    pub fn pending_by_hook(&self) -> Result<Vec<(String, u64, i64)>, JournalError> {
        const OP: &str = "count undelivered events";
        let rows = self.rows(
            OP,
            "SELECT d.hook, count(*), min(e.at) FROM deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.state = 'pending' GROUP BY d.hook ORDER BY d.hook",
            &[],
        )?;
        self.map_rows(OP, rows, |r| {
            Ok((r.text(0)?, u64::try_from(r.i64(1)?).unwrap_or(0), r.i64(2)?))
        })
    }

    /// The undelivered events, oldest first, at most `limit`.
    pub fn pending_deliveries(&self, limit: usize) -> Result<Vec<PendingDelivery>, JournalError> {
        if !self.has_outbox()? {
            return Ok(Vec::new());
        }
        const OP: &str = "list undelivered events";
        let rows = self.rows(
            OP,
            "SELECT d.hook, e.uid, e.kind, d.file_id, e.at, d.attempts, d.next_attempt_at, \
               d.last_error \
             FROM deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.state = 'pending' ORDER BY e.id, d.hook LIMIT ?1",
            args![i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        self.map_rows(OP, rows, |r| {
            Ok(PendingDelivery {
                hook: r.text(0)?,
                uid: r.text(1)?,
                kind: r.text(2)?,
                file_id: r.i64(3)?,
                at: r.i64(4)?,
                attempts: r.u32(5)?,
                next_attempt_at: r.i64(6)?,
                last_error: r.opt_text(7)?,
            })
        })
    }
}
