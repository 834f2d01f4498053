//! The Prometheus text exposition (format 0.0.4) of the upload counters and
//! the journal's gauges. It renders what it is given and reads nothing itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::WatchSettings;
use crate::journal::FileState;
use crate::upload::{BandwidthNow, MetricsSnapshot};

/// What the journal says, read in one call for a scrape.
#[derive(Debug, Clone, Default)]
pub(crate) struct JournalView {
    pub counts: BTreeMap<FileState, u64>,
    /// Unix ms when the oldest queued/retrying file was journaled.
    pub oldest_waiting_since: Option<i64>,
    /// Files with work ahead, by journal root.
    pub unfinished_by_root: BTreeMap<PathBuf, u64>,
    /// Videos started on api.video and abandoned (`status --orphans`).
    pub orphans: u64,
    /// Per hook with undelivered events: how many, and when the oldest
    /// happened (Unix ms).
    pub hooks_pending: Vec<(String, u64, i64)>,
}

/// Everything one scrape shows.
pub(crate) struct Exposition<'a> {
    pub counters: MetricsSnapshot,
    /// `None` when the journal did not answer in time.
    pub journal: Option<JournalView>,
    pub now_ms: i64,
    pub token_ok: bool,
    pub tls_ok: bool,
    pub watchers_ok: bool,
    pub watches: &'a [WatchSettings],
    /// The configured hooks' keys, and this process's delivery attempts:
    /// (delivered, failed).
    pub hook_keys: &'a [String],
    pub hook_deliveries: (u64, u64),
    /// What `upload.bandwidth_limit` lets uploads do now.
    pub bandwidth: BandwidthNow,
}

/// A label value in the text format: `\`, `"` and line feeds escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // `write!` into a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn folder_name(path: &Path) -> String {
    String::from_utf8_lossy(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).into_owned()
}

impl Exposition<'_> {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let c = &self.counters;

        header(
            &mut out,
            "ingestd_journal_ok",
            "gauge",
            "1 if the journal answered this scrape (the journal gauges are missing otherwise).",
        );
        let _ = writeln!(
            out,
            "ingestd_journal_ok {}",
            u8::from(self.journal.is_some())
        );

        if let Some(j) = &self.journal {
            header(
                &mut out,
                "ingestd_files",
                "gauge",
                "Files in the journal, by state.",
            );
            for state in FileState::ALL {
                let n = j.counts.get(&state).copied().unwrap_or(0);
                let _ = writeln!(out, "ingestd_files{{state=\"{}\"}} {n}", state.as_str());
            }
            header(
                &mut out,
                "ingestd_oldest_waiting_seconds",
                "gauge",
                "Seconds since the oldest file waiting for upload (queued or retrying) was journaled; 0 when none waits.",
            );
            let age_ms = j
                .oldest_waiting_since
                .map_or(0, |since| self.now_ms.saturating_sub(since).max(0));
            let _ = writeln!(
                out,
                "ingestd_oldest_waiting_seconds {}.{:03}",
                age_ms / 1000,
                age_ms % 1000
            );
            header(
                &mut out,
                "ingestd_folder_backlog",
                "gauge",
                "Files under a watch folder with work ahead (settling, queued, uploading, retrying).",
            );
            for watch in self.watches {
                let root = watch.root();
                let n = j.unfinished_by_root.get(&root).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "ingestd_folder_backlog{{folder=\"{}\"}} {n}",
                    label(&folder_name(&watch.path))
                );
            }
            header(
                &mut out,
                "ingestd_orphan_videos",
                "gauge",
                "Videos ingestd started on api.video and then abandoned (`ingestd status --orphans` lists them, to delete in the dashboard).",
            );
            let _ = writeln!(out, "ingestd_orphan_videos {}", j.orphans);
            self.render_hook_backlog(&mut out, j);
        }

        header(
            &mut out,
            "ingestd_uploaded_bytes_total",
            "counter",
            "Bytes of chunks acknowledged by the server.",
        );
        let _ = writeln!(out, "ingestd_uploaded_bytes_total {}", c.bytes_acked);
        header(
            &mut out,
            "ingestd_chunks_acknowledged_total",
            "counter",
            "Chunks (or whole small files) acknowledged by the server.",
        );
        let _ = writeln!(out, "ingestd_chunks_acknowledged_total {}", c.chunks_acked);
        header(
            &mut out,
            "ingestd_upload_errors_total",
            "counter",
            "Failed upload requests by class: retry (backoff), token (uploads paused), tls (uploads paused: TLS refused), permanent (file failed).",
        );
        for (class, n) in [
            ("retry", c.errors_retry),
            ("token", c.errors_token),
            ("tls", c.errors_tls),
            ("permanent", c.errors_permanent),
        ] {
            let _ = writeln!(out, "ingestd_upload_errors_total{{class=\"{class}\"}} {n}");
        }
        header(
            &mut out,
            "ingestd_retries_scheduled_total",
            "counter",
            "Upload attempts that ended with a retry scheduled (persisted backoff).",
        );
        let _ = writeln!(
            out,
            "ingestd_retries_scheduled_total {}",
            c.retries_scheduled
        );
        header(
            &mut out,
            "ingestd_files_finished_total",
            "counter",
            "Files this process finished, by outcome: done (uploaded), failed (permanent error), gone (source vanished or changed).",
        );
        for (outcome, n) in [
            ("done", c.files_done),
            ("failed", c.files_failed),
            ("gone", c.files_gone),
        ] {
            let _ = writeln!(
                out,
                "ingestd_files_finished_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        header(
            &mut out,
            "ingestd_hook_deliveries_total",
            "counter",
            "Hook delivery attempts by this process, by result: delivered, or failed (retried with backoff).",
        );
        let (delivered, failed) = self.hook_deliveries;
        for (result, n) in [("delivered", delivered), ("failed", failed)] {
            let _ = writeln!(
                out,
                "ingestd_hook_deliveries_total{{result=\"{result}\"}} {n}"
            );
        }
        header(
            &mut out,
            "ingestd_token_ok",
            "gauge",
            "1 unless the server refused the upload token (uploads paused until it is replaced).",
        );
        let _ = writeln!(out, "ingestd_token_ok {}", u8::from(self.token_ok));
        header(
            &mut out,
            "ingestd_tls_ok",
            "gauge",
            "1 unless the TLS handshake with the server is refused (uploads paused until it works again).",
        );
        let _ = writeln!(out, "ingestd_tls_ok {}", u8::from(self.tls_ok));
        header(
            &mut out,
            "ingestd_watchers_ok",
            "gauge",
            "1 once the first scan of the watch folders is done and while the watch stage runs.",
        );
        let _ = writeln!(out, "ingestd_watchers_ok {}", u8::from(self.watchers_ok));
        header(
            &mut out,
            "ingestd_bandwidth_limit_bytes_per_second",
            "gauge",
            "The upload bandwidth limit now (upload.bandwidth_limit, which may follow a timetable); 0 = unlimited. During a scheduled pause, the rate a chunk in flight finishes at.",
        );
        let _ = writeln!(
            out,
            "ingestd_bandwidth_limit_bytes_per_second {}",
            self.bandwidth.bytes_per_second
        );
        header(
            &mut out,
            "ingestd_bandwidth_paused",
            "gauge",
            "1 during a scheduled pause of upload.bandwidth_limit's timetable (no new chunk starts; planned, so /healthz stays ok).",
        );
        let _ = writeln!(
            out,
            "ingestd_bandwidth_paused {}",
            u8::from(self.bandwidth.paused)
        );
        out
    }
}

impl Exposition<'_> {
    /// Each hook's undelivered events and the age of its oldest (0 and 0
    /// for a configured hook with none; a removed hook's backlog shows too).
    fn render_hook_backlog(&self, out: &mut String, j: &JournalView) {
        header(
            out,
            "ingestd_hook_undelivered",
            "gauge",
            "Events waiting for delivery to a hook (`ingestd status --hooks` lists them).",
        );
        let mut keys: Vec<&str> = self.hook_keys.iter().map(String::as_str).collect();
        for (hook, _, _) in &j.hooks_pending {
            if !keys.contains(&hook.as_str()) {
                keys.push(hook);
            }
        }
        let pending = |key: &str| j.hooks_pending.iter().find(|(h, _, _)| h == key);
        for key in &keys {
            let n = pending(key).map_or(0, |(_, n, _)| *n);
            let _ = writeln!(
                out,
                "ingestd_hook_undelivered{{hook=\"{}\"}} {n}",
                label(key)
            );
        }
        header(
            out,
            "ingestd_hook_oldest_undelivered_seconds",
            "gauge",
            "Seconds since the oldest event still waiting for delivery to a hook happened; 0 when none waits.",
        );
        for key in &keys {
            let age_ms =
                pending(key).map_or(0, |(_, _, at)| self.now_ms.saturating_sub(*at).max(0));
            let _ = writeln!(
                out,
                "ingestd_hook_oldest_undelivered_seconds{{hook=\"{}\"}} {}.{:03}",
                label(key),
                age_ms / 1000,
                age_ms % 1000
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
