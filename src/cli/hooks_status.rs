//! `ingestd status --hooks`: each configured hook with its backlog (events
//! waiting, failing, delivered), then the undelivered events oldest first,
//! for people or as JSON. A hook's target is shown without secrets.

use std::fmt::Write as _;

use serde_json::json;

use crate::config::HookSettings;
use crate::journal::{now_ms, rfc3339, HookBacklog, PendingDelivery};

/// How many undelivered events are listed.
pub(crate) const LISTED: usize = 200;

/// The hooks of the configuration and those the journal still has
/// deliveries for (a hook removed since shows as such).
fn joined<'a>(
    hooks: &'a [HookSettings],
    backlogs: &'a [HookBacklog],
) -> Vec<(String, Option<&'a HookSettings>, HookBacklog)> {
    let mut out: Vec<_> = hooks
        .iter()
        .map(|h| {
            let b = backlogs.iter().find(|b| b.hook == h.key).cloned();
            (h.key.clone(), Some(h), b.unwrap_or_default())
        })
        .collect();
    for b in backlogs {
        if !hooks.iter().any(|h| h.key == b.hook) {
            out.push((b.hook.clone(), None, b.clone()));
        }
    }
    out
}

fn seconds_ago(at: Option<i64>) -> Option<i64> {
    at.map(|at| (now_ms() - at).max(0) / 1000)
}

pub(crate) fn to_json(
    hooks: &[HookSettings],
    backlogs: &[HookBacklog],
    pending: &[PendingDelivery],
) -> String {
    let hooks: Vec<serde_json::Value> = joined(hooks, backlogs)
        .into_iter()
        .map(|(key, settings, b)| {
            json!({
                "hook": key,
                "configured": settings.is_some(),
                "target": settings.map(HookSettings::describe),
                "events": settings.map(|s| s.events.iter().map(|e| e.as_str()).collect::<Vec<_>>()),
                "pending": b.pending,
                "failing": b.failing,
                "delivered": b.delivered,
                "dropped": b.dropped,
                "oldest_pending_seconds": seconds_ago(b.oldest_pending_at),
                "last_error": b.last_error,
            })
        })
        .collect();
    let pending: Vec<serde_json::Value> = pending
        .iter()
        .map(|p| {
            json!({
                "hook": p.hook,
                "id": p.uid,
                "event": p.kind,
                "file_id": p.file_id,
                "at": rfc3339(p.at),
                "attempts": p.attempts,
                "next_attempt_at": rfc3339(p.next_attempt_at),
                "last_error": p.last_error,
            })
        })
        .collect();
    let all = json!({ "hooks": hooks, "undelivered": pending });
    serde_json::to_string_pretty(&all).unwrap_or_else(|_| "{}".to_owned())
}

pub(crate) fn to_table(
    hooks: &[HookSettings],
    backlogs: &[HookBacklog],
    pending: &[PendingDelivery],
) -> String {
    let mut out = String::new();
    let all = joined(hooks, backlogs);
    if all.is_empty() {
        let _ = writeln!(out, "no hooks configured ([[hook]] in the config file)");
        return out;
    }
    for (key, settings, b) in &all {
        let target = settings.map_or_else(
            || "(no longer in the configuration)".to_owned(),
            |s| s.describe(),
        );
        let _ = write!(
            out,
            "{key}  {target}\n    {} waiting ({} failing), {} delivered",
            b.pending, b.failing, b.delivered
        );
        if b.dropped > 0 {
            let _ = write!(out, ", {} dropped", b.dropped);
        }
        if let Some(s) = seconds_ago(b.oldest_pending_at) {
            let _ = write!(out, "; the oldest waits since {s}s");
        }
        out.push('\n');
        if let Some(e) = &b.last_error {
            let _ = writeln!(out, "    └ last error: {}", e.escape_debug());
        }
    }
    if !pending.is_empty() {
        let _ = writeln!(out, "\nundelivered (oldest first):");
        for p in pending {
            let due = (p.next_attempt_at - now_ms()).max(0) / 1000;
            let _ = writeln!(
                out,
                "  {}  {}  file {}  to {}  tries {}  next in {due}s{}",
                p.uid,
                p.kind,
                p.file_id,
                p.hook,
                p.attempts,
                p.last_error
                    .as_deref()
                    .map(|e| format!("  └ {}", e.escape_debug()))
                    .unwrap_or_default()
            );
        }
        if pending.len() == LISTED {
            let _ = writeln!(out, "  (the first {LISTED} shown)");
        }
    }
    out
}
