//! Running as a system service: what systemd and monitoring see of the daemon.
//!
//! ```text
//!  workers ──counters──▶ Metrics ─┐
//!  token gate, throttle ──────────┼──▶ Vitals ──▶ supervise ──sd_notify──▶ systemd
//!  watch stage ──Watchers state───┤            │   (READY, STATUS, WATCHDOG, STOPPING)
//!  journal (counts, backlog) ─────┘            └──▶ serve_metrics ──HTTP──▶ /metrics, /healthz
//! ```
//!
//! - [`Notifier`]: `sd_notify(3)` over `$NOTIFY_SOCKET` (a path or an
//!   abstract `@name`), without libsystemd. Absent outside systemd, so every
//!   caller holds an `Option<Notifier>`.
//! - [`supervise`]: READY=1 once the first scan of the watch folders is
//!   done, a STATUS= line with the backlog every few seconds, WATCHDOG=1
//!   while the journal answers, STOPPING=1 on cancellation.
//! - [`Metrics`]: counters the upload workers bump, one call per event.
//! - [`MetricsServer`] / [`serve_metrics`]: the optional `[metrics] listen`
//!   endpoint, Prometheus text on `GET /metrics`, `GET /healthz`.
//!
//! Nothing here ever sees the upload token; a refusal reason shown to
//! monitoring is scrubbed of any `token=` query value all the same.

mod http;
mod metrics;
mod notify;
mod supervise;

use std::sync::Arc;

use tokio::sync::watch;

use crate::journal::JournalHandle;
use crate::upload::{Folders, Throttle, TokenGate};

pub use crate::upload::{Metrics, MetricsSnapshot};
pub use http::{serve_metrics, Health, MetricsServer, ServiceError};
pub use notify::Notifier;
pub use supervise::{status_line, supervise, supervise_every, STATUS_EVERY};

/// The state of the watch stage, as the daemon reports it: the supervisor
/// sends READY=1 when it first turns [`WatchersState::Running`], and
/// `/healthz` fails unless it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchersState {
    /// The first scan of the watch folders is not finished.
    Starting,
    /// The first scan is done; events (or polling) run.
    Running,
    /// The watch stage ended; the reason is its error.
    Stopped(String),
}

impl WatchersState {
    /// The word `/healthz` shows.
    pub fn as_str(&self) -> &'static str {
        match self {
            WatchersState::Starting => "starting",
            WatchersState::Running => "ok",
            WatchersState::Stopped(_) => "stopped",
        }
    }
}

/// Shared handle on [`WatchersState`]: the daemon sets it, the supervisor
/// and the HTTP endpoint read it.
#[derive(Debug, Clone)]
pub struct Watchers {
    tx: Arc<watch::Sender<WatchersState>>,
}

impl Default for Watchers {
    fn default() -> Self {
        Watchers {
            tx: Arc::new(watch::channel(WatchersState::Starting).0),
        }
    }
}

impl Watchers {
    /// The first scan is done: the daemon is ready.
    pub fn running(&self) {
        self.tx.send_replace(WatchersState::Running);
    }

    /// The watch stage ended with this error.
    pub fn stopped(&self, why: impl Into<String>) {
        self.tx.send_replace(WatchersState::Stopped(why.into()));
    }

    pub fn state(&self) -> WatchersState {
        self.tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<WatchersState> {
        self.tx.subscribe()
    }
}

/// Everything the supervisor and the HTTP endpoint look at. Cheap to clone;
/// build it once from the session's [`crate::upload::Uploader`].
#[derive(Debug, Clone)]
pub struct Vitals {
    /// File counts, the backlog per folder, the oldest waiting file; a
    /// journal that stops answering also stops the watchdog pings.
    pub journal: JournalHandle,
    /// Closed = the token was refused: uploads are paused.
    pub gate: TokenGate,
    /// The counters the workers bump (the same `Arc` as the uploader's).
    pub metrics: Arc<Metrics>,
    pub watchers: Watchers,
    /// The configured watch folders (they change on reload): one backlog
    /// gauge each.
    pub watches: Folders,
    /// Watch folders that are unavailable (a share away): nothing can move
    /// from them, so health says so.
    pub shares: Arc<crate::roots::Shares>,
    /// The hooks' delivery counters (the same `Arc` as the hooks stage's),
    /// and the configured hooks' keys: one backlog gauge each.
    pub hooks: Arc<crate::hooks::HookCounters>,
    pub hook_keys: Vec<String>,
    /// The uploads' bandwidth limit (the uploader's own), for its gauges
    /// and a scheduled pause in the STATUS line; unlimited unless set.
    pub throttle: Arc<Throttle>,
}

impl Vitals {
    /// Vitals with the watch stage `Starting`. `metrics` must be the
    /// uploader's own counters, or `/metrics` never moves.
    pub fn new(
        journal: JournalHandle,
        gate: TokenGate,
        metrics: Arc<Metrics>,
        watches: impl Into<Folders>,
    ) -> Self {
        Vitals {
            journal,
            gate,
            metrics,
            watchers: Watchers::default(),
            watches: watches.into(),
            shares: Arc::default(),
            hooks: Arc::default(),
            hook_keys: Vec::new(),
            throttle: Arc::new(Throttle::new(Default::default())),
        }
    }
}

/// A refusal reason fit for monitoring: single line, and any `token=…`
/// query value (from a URL quoted in an error) replaced.
pub(crate) fn scrub(reason: &str) -> String {
    let one_line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = String::with_capacity(one_line.len());
    let mut rest = one_line.as_str();
    while let Some(at) = rest.find("token=") {
        let value_start = at + "token=".len();
        out.push_str(&rest[..value_start]);
        out.push_str("<redacted>");
        let tail = &rest[value_start..];
        let value_len = tail
            .find(|c: char| c == '&' || c == '#' || c == ')' || c.is_whitespace())
            .unwrap_or(tail.len());
        rest = &tail[value_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_token_values_and_line_breaks() {
        assert_eq!(
            scrub("error for url (https://x/upload?token=to1abc&y=1)\nnext"),
            "error for url (https://x/upload?token=<redacted>&y=1) next"
        );
        assert_eq!(scrub("token=abc"), "token=<redacted>");
        assert_eq!(
            scrub("upload token refused (401): bad"),
            "upload token refused (401): bad"
        );
    }

    #[test]
    fn watchers_start_starting_and_report_changes() {
        let w = Watchers::default();
        assert_eq!(w.state(), WatchersState::Starting);
        w.running();
        assert_eq!(w.state().as_str(), "ok");
        w.stopped("inotify limit");
        assert_eq!(w.state(), WatchersState::Stopped("inotify limit".into()));
    }
}
