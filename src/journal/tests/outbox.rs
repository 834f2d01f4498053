//! Tests of the outbox (events written with their change, deliveries in
//! order per file and hook, retries, claims) and of the playable watch.

use super::*;
use crate::config::{HookEvent, HookSettings, HookTarget};

fn hook(key: &str, events: &[HookEvent]) -> HookSettings {
    HookSettings {
        key: key.into(),
        named: true,
        events: events.to_vec(),
        target: HookTarget::Command {
            argv: vec!["/bin/true".into()],
        },
        timeout: Duration::from_secs(30),
    }
}

const PUBLIC_VIDEO: &str = r#"{"videoId":"vi1","public":true,"assets":{"hls":"http://127.0.0.1:1/vod/vi1/hls/manifest.m3u8","player":"http://127.0.0.1:1/vod/vi1"}}"#;

/// A file journaled, claimed and done with `video_json`.
fn done_file(j: &mut Journal, name: &str, video_json: Option<&str>) -> i64 {
    let id = j.add_file(&ident(name, 100), FileState::Queued).unwrap().id;
    let row = j
        .claim_next(now_ms(), Duration::from_secs(300), Some(&[id]))
        .unwrap()
        .unwrap();
    j.mark_done(row.id, Some("vi1"), video_json, None).unwrap();
    id
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn events_are_written_with_their_change_and_go_out_in_order_per_file(j: &mut Journal) {
    j.set_outbox(
        &[
            hook("all", &HookEvent::ALL),
            hook("failures", &[HookEvent::Failed]),
        ],
        true,
    );
    let a = done_file(j, "a.mp4", Some(PUBLIC_VIDEO));
    assert!(j.mark_playable(a, now_ms()).unwrap());
    // Seen once only.
    assert!(!j.mark_playable(a, now_ms()).unwrap());
    let b = j
        .add_file(&ident("b.mp4", 7), FileState::Queued)
        .unwrap()
        .id;
    j.mark_failed(b, "the server refused it").unwrap();
    let hooks = keys(&["all", "failures"]);

    // The first event of each file for each hook, never a later one of
    // the same file before it.
    let due = j.claim_deliveries(&hooks, now_ms(), 60_000, 10).unwrap();
    let mut seen: Vec<(String, String)> = due
        .iter()
        .map(|d| (d.hook.clone(), d.kind.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("all".to_string(), "failed".to_string()),
            ("all".to_string(), "uploaded".to_string()),
            ("failures".to_string(), "failed".to_string()),
        ]
    );
    // Claimed: not handed out twice.
    assert!(j
        .claim_deliveries(&hooks, now_ms(), 60_000, 10)
        .unwrap()
        .is_empty());

    let uploaded = due.iter().find(|d| d.kind == "uploaded").unwrap();
    let body: serde_json::Value = serde_json::from_str(&uploaded.body).unwrap();
    assert_eq!(body["id"], uploaded.uid.as_str());
    assert_eq!(body["event"], "uploaded");
    assert_eq!(body["file"]["id"], a);
    assert_eq!(body["file"]["path"], "/srv/capture/a.mp4");
    assert_eq!(body["file"]["size"], 100);
    assert_eq!(body["file"]["video_id"], "vi1");
    assert_eq!(body["file"]["player_url"], "http://127.0.0.1:1/vod/vi1");
    assert_eq!(body["file"]["state"], "done");
    assert!(body["at"].as_str().unwrap().ends_with('Z'));
    let failed = due
        .iter()
        .find(|d| d.hook == "all" && d.kind == "failed")
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&failed.body).unwrap();
    assert_eq!(body["file"]["reason"], "the server refused it");

    for d in &due {
        j.delivered(d.event_id, &d.hook, now_ms()).unwrap();
    }
    // Now the file's next event.
    let due = j.claim_deliveries(&hooks, now_ms(), 60_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].hook.as_str(), due[0].kind.as_str()),
        ("all", "playable")
    );
    let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
    assert!(body["file"]["playable_at"].is_string());
    j.delivered(due[0].event_id, "all", now_ms()).unwrap();
    assert!(j
        .claim_deliveries(&hooks, now_ms(), 60_000, 10)
        .unwrap()
        .is_empty());

    let backlogs = j.hook_backlogs().unwrap();
    assert_eq!(backlogs.len(), 2);
    assert_eq!(
        (
            backlogs[0].hook.as_str(),
            backlogs[0].delivered,
            backlogs[0].pending
        ),
        ("all", 3, 0)
    );
    assert_eq!(
        (backlogs[1].hook.as_str(), backlogs[1].delivered),
        ("failures", 1)
    );
}

fn a_failed_delivery_waits_and_a_claim_that_ran_out_is_free_again(j: &mut Journal) {
    j.set_outbox(&[hook("h", &HookEvent::ALL)], false);
    let a = done_file(j, "a.mp4", None);
    let hooks = keys(&["h"]);
    let now = now_ms();
    let due = j.claim_deliveries(&hooks, now, 1_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 0);
    // A claim that ran out (its process died): handed out again.
    let again = j.claim_deliveries(&hooks, now + 2_000, 1_000, 10).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].uid, due[0].uid);
    j.delivery_failed(due[0].event_id, "h", now + 60_000, "exit status 1")
        .unwrap();
    assert!(j
        .claim_deliveries(&hooks, now + 59_000, 1_000, 10)
        .unwrap()
        .is_empty());
    let pending = j.pending_deliveries(10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].attempts, pending[0].file_id), (1, a));
    assert_eq!(pending[0].last_error.as_deref(), Some("exit status 1"));
    let backlog = &j.hook_backlogs().unwrap()[0];
    assert_eq!((backlog.pending, backlog.failing), (1, 1));
    assert_eq!(backlog.last_error.as_deref(), Some("exit status 1"));
    let due = j.claim_deliveries(&hooks, now + 60_000, 1_000, 10).unwrap();
    assert_eq!(due[0].attempts, 1);
    // At a restart, this process's claims are free at once.
    assert_eq!(j.free_own_claims().unwrap(), 1);
    assert_eq!(
        j.claim_deliveries(&hooks, now + 60_000, 1_000, 10)
            .unwrap()
            .len(),
        1
    );
}

fn no_hook_no_event_and_a_refused_change_writes_none(j: &mut Journal) {
    let a = done_file(j, "a.mp4", None);
    assert!(j.pending_deliveries(10).unwrap().is_empty());
    j.set_outbox(&[hook("h", &[HookEvent::Uploaded])], false);
    // Done already: refused, and nothing written.
    assert!(j.mark_done(a, Some("vi1"), None, None).is_err());
    // Not an event this hook takes.
    let b = j
        .add_file(&ident("b.mp4", 5), FileState::Queued)
        .unwrap()
        .id;
    j.mark_gone(b, "deleted").unwrap();
    assert!(j.pending_deliveries(10).unwrap().is_empty());
}

fn removed_hooks_lose_their_backlog_and_old_events_are_pruned(j: &mut Journal) {
    j.set_outbox(
        &[hook("old", &HookEvent::ALL), hook("kept", &HookEvent::ALL)],
        false,
    );
    done_file(j, "a.mp4", None);
    let dropped = j.drop_unconfigured(&keys(&["kept"])).unwrap();
    assert_eq!(dropped, [("old".to_string(), 1)]);
    let pending = j.pending_deliveries(10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].hook, "kept");
    // Pending events are kept however old.
    assert_eq!(j.prune_outbox(now_ms() + 1_000).unwrap(), 0);
    let due = j
        .claim_deliveries(&keys(&["kept"]), now_ms(), 1_000, 10)
        .unwrap();
    j.delivered(due[0].event_id, "kept", now_ms()).unwrap();
    assert_eq!(j.prune_outbox(now_ms() - 60_000).unwrap(), 0);
    assert_eq!(j.prune_outbox(now_ms() + 1_000).unwrap(), 1);
    assert!(j.hook_backlogs().unwrap().is_empty());
}

fn done_videos_are_watched_until_playable_or_given_up(j: &mut Journal) {
    j.set_outbox(
        &[hook("h", &[HookEvent::Playable, HookEvent::NotPlayable])],
        true,
    );
    let a = done_file(j, "a.mp4", Some(PUBLIC_VIDEO));
    let private = done_file(
        j,
        "private.mp4",
        Some(r#"{"public":false,"assets":{"hls":"http://x/vod/vi/hls/manifest.m3u8"}}"#),
    );
    let none = done_file(j, "none.mp4", None);
    let now = now_ms();
    let watches = j.claim_playable(now, 30_000, 10).unwrap();
    assert_eq!(watches.len(), 1);
    assert_eq!(watches[0].id, a);
    assert!(watches[0].hls_url.ends_with("/vod/vi1/hls/manifest.m3u8"));
    // Held: not handed out again until the hold ends or it is rescheduled.
    assert!(j.claim_playable(now, 30_000, 10).unwrap().is_empty());
    j.playable_later(a, now + 1_000).unwrap();
    assert_eq!(j.claim_playable(now + 1_000, 30_000, 10).unwrap().len(), 1);
    assert!(j.mark_not_playable(a, "not playable after 2h").unwrap());
    assert!(!j.mark_not_playable(a, "again").unwrap());
    let states = j.playable_states().unwrap();
    assert!(states[&private].1.as_deref().unwrap().contains("private"));
    assert!(states[&none].1.as_deref().unwrap().contains("not kept"));
    assert_eq!(states[&a].1.as_deref(), Some("not playable after 2h"));
    let kinds: Vec<String> = j
        .pending_deliveries(10)
        .unwrap()
        .into_iter()
        .map(|d| d.kind)
        .collect();
    assert_eq!(kinds, ["not_playable"]);
}

fn the_uploaded_event_carries_the_sha256_stored_with_it(j: &mut Journal) {
    j.set_outbox(&[hook("h", &[HookEvent::Uploaded])], false);
    let id = j
        .add_file(&ident("a.mp4", 100), FileState::Queued)
        .unwrap()
        .id;
    j.claim_next(now_ms(), Duration::from_secs(300), Some(&[id]))
        .unwrap()
        .unwrap();
    j.mark_done_hashed(id, Some("vi1"), None, None, Some("ab12"))
        .unwrap();
    let due = j
        .claim_deliveries(&keys(&["h"]), now_ms(), 1_000, 10)
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
    assert_eq!(body["file"]["sha256"], "ab12");
    assert_eq!(j.sha256(id).unwrap().as_deref(), Some("ab12"));
}

on_both!(
    the_uploaded_event_carries_the_sha256_stored_with_it,
    events_are_written_with_their_change_and_go_out_in_order_per_file,
    a_failed_delivery_waits_and_a_claim_that_ran_out_is_free_again,
    no_hook_no_event_and_a_refused_change_writes_none,
    removed_hooks_lose_their_backlog_and_old_events_are_pruned,
    done_videos_are_watched_until_playable_or_given_up,
);
