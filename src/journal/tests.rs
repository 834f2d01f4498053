//! Tests of the journal's rows, transitions, queries, opening and owner thread.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

use super::open::MIGRATIONS;
use super::*;
use crate::config::QueueOrder;

/// Several nodes on one PostgreSQL journal: leases, fencing, leaders.
mod cluster;
/// The stored SHA-256 and the duplicate twins (`digest`).
mod digest;
/// A SQLite journal copied into a shared one (`export`).
mod export;
/// The outbox of events and the playable watch.
mod outbox;
/// The queue's order: ranks, keys, and what keeps them.
mod queue;

fn ident(name: &str, size: u64) -> FileIdentity {
    FileIdentity {
        root: PathBuf::from("/srv/capture"),
        rel_path: PathBuf::from(name),
        size,
        mtime_ns: 1_700_000_000_000_000_000,
        dev: 42,
        inode: 7,
        ctime_ns: Some(1),
    }
}

/// A throwaway PostgreSQL server for the whole test binary.
#[path = "../../tests/common/pg.rs"]
pub(super) mod pg_server;

/// A journal in a fresh database of the shared test server; `None` (the
/// test passes, loudly) where PostgreSQL is not installed.
pub(super) fn open_pg() -> Option<(pg_server::PgDb, Journal)> {
    let server = pg_server::shared()?;
    let db = server.fresh_database("journal");
    let j = Journal::open_postgres(&pg_target(&db, "test-node")).unwrap();
    Some((db, j))
}

/// How node `node` reaches the test database `db` (a lease of 30 s).
pub(super) fn pg_target(db: &pg_server::PgDb, node: &str) -> PgTarget {
    PgTarget {
        url: db.url.clone(),
        shown: db.url.clone(),
        password: Some(db.password.clone()),
        node: node.into(),
        lease: Duration::from_secs(30),
    }
}

/// Runs each test body (`fn name(j: &mut Journal)`) on both backends: a
/// module per test with a `sqlite` and a `postgres` test.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                let (_d, mut j) = super::open_temp();
                super::$name(&mut j);
            }
            #[test]
            fn postgres() {
                let Some((_db, mut j)) = super::open_pg() else { return };
                super::$name(&mut j);
            }
        }
    )*};
}
pub(super) use on_both;

fn open_temp() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("sub/journal.db")).unwrap();
    (dir, j)
}

fn add_is_idempotent_per_identity(j: &mut Journal) {
    let a = j.add_file(&ident("a.mp4", 10), FileState::Queued).unwrap();
    let b = j.add_file(&ident("a.mp4", 10), FileState::Queued).unwrap();
    assert!(a.inserted && !b.inserted);
    assert_eq!(a.id, b.id);
    // Same name, new content (size): a new row.
    let c = j.add_file(&ident("a.mp4", 11), FileState::Queued).unwrap();
    assert!(c.inserted);
    assert_ne!(c.id, a.id);
}

fn a_nested_failure_undoes_only_its_own_writes(j: &mut Journal) {
    let a = j
        .add_file(&ident("a.mp4", 10), FileState::Queued)
        .unwrap()
        .id;
    let b = j
        .add_file(&ident("b.mp4", 10), FileState::Queued)
        .unwrap()
        .id;
    j.atomically(|j| {
        j.mark_gone(a, "vanished")?;
        // A lost race inside: only its own writes go.
        assert!(j.revive(b, FileState::Queued).is_err());
        j.mark_failed(b, "broken")
    })
    .unwrap();
    assert_eq!(j.get(a).unwrap().unwrap().state, FileState::Gone);
    assert_eq!(j.get(b).unwrap().unwrap().state, FileState::Failed);
    // An outer failure undoes everything.
    let r: Result<(), _> = j.atomically(|j| {
        j.retry_failed(Some(&[b]))?;
        j.mark_ready(a, QueuePlace::DEFAULT)
    });
    assert!(r.is_err());
    assert_eq!(j.get(b).unwrap().unwrap().state, FileState::Failed);
}

fn non_utf8_names_round_trip(j: &mut Journal) {
    let mut f = ident("x", 5);
    f.rel_path = PathBuf::from(OsStr::from_bytes(b"caf\xe9\nnew.mp4"));
    let a = j.add_file(&f, FileState::Queued).unwrap();
    let row = j.get(a.id).unwrap().unwrap();
    assert_eq!(row.identity, f);
}

fn happy_path_transitions(j: &mut Journal) {
    let a = j
        .add_file(&ident("a.mp4", 100), FileState::Settling)
        .unwrap();
    assert!(j
        .claim_next(now_ms(), Duration::from_secs(300), None)
        .unwrap()
        .is_none());
    j.mark_ready(a.id, QueuePlace::DEFAULT).unwrap();
    let row = j
        .claim_next(now_ms(), Duration::from_secs(300), None)
        .unwrap()
        .unwrap();
    assert_eq!(row.state, FileState::Uploading);
    assert_eq!(j.set_chunk_size(a.id, 50).unwrap(), 50);
    // The plan is fixed once set.
    assert_eq!(j.set_chunk_size(a.id, 60).unwrap(), 50);
    j.record_progress(a.id, "vi1", 50).unwrap();
    let row = j.get(a.id).unwrap().unwrap();
    assert_eq!(
        (row.bytes_uploaded, row.video_id.as_deref()),
        (50, Some("vi1"))
    );
    j.mark_done(a.id, Some("vi1"), Some("{}"), None).unwrap();
    let row = j.get(a.id).unwrap().unwrap();
    assert_eq!(row.state, FileState::Done);
    assert_eq!(row.bytes_uploaded, 100);
    // A done file is never claimed again.
    assert!(j
        .claim_next(now_ms(), Duration::from_secs(300), None)
        .unwrap()
        .is_none());
}

fn guarded_transitions_refuse_wrong_state(j: &mut Journal) {
    let a = j.add_file(&ident("a.mp4", 100), FileState::Queued).unwrap();
    let err = j.record_progress(a.id, "vi1", 10).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::WrongState {
                actual: Some(FileState::Queued),
                ..
            }
        ),
        "{err}"
    );
    let err = j.mark_done(999, Some("vi"), None, None).unwrap_err();
    assert!(matches!(err, JournalError::WrongState { actual: None, .. }));
}

fn retrying_waits_for_its_time_and_clock_jumps_back_count_as_due(j: &mut Journal) {
    let a = j.add_file(&ident("a.mp4", 100), FileState::Queued).unwrap();
    let now = now_ms();
    let cap = Duration::from_secs(300);
    j.claim_next(now, cap, None).unwrap().unwrap();
    j.mark_retrying(a.id, 1, now + 10_000, "503").unwrap();
    assert!(j.claim_next(now, cap, None).unwrap().is_none());
    assert_eq!(j.next_retry_at(Scope::All).unwrap(), Some(now + 10_000));
    assert!(j.claim_next(now + 10_000, cap, None).unwrap().is_some());
    j.mark_retrying(a.id, 2, now + 10_000_000, "503").unwrap();
    // Far beyond the cap: the clock went back; do not wait for it.
    let row = j.claim_next(now, cap, None).unwrap().unwrap();
    assert_eq!(row.attempts, 2);
}

fn make_due_moves_only_the_given_retrying_rows_and_keeps_their_attempts(j: &mut Journal) {
    let now = now_ms();
    let cap = Duration::from_secs(300);
    let a = j.add_file(&ident("a.mp4", 100), FileState::Queued).unwrap();
    let b = j.add_file(&ident("b.mp4", 100), FileState::Queued).unwrap();
    let c = j.add_file(&ident("c.mp4", 100), FileState::Queued).unwrap();
    for id in [a.id, b.id] {
        j.claim_next(now, cap, None).unwrap().unwrap();
        j.mark_retrying(id, 6, now + 60_000, "cannot connect")
            .unwrap();
    }
    // Over several statements: ids that are not rows, then a and c.
    let ids: Vec<i64> = (10_000..11_000).chain([a.id, c.id]).collect();
    assert_eq!(j.make_due(&ids, now).unwrap(), 1);
    assert_eq!(j.make_due(&[], now).unwrap(), 0);
    let row = j.claim_next(now, cap, None).unwrap().unwrap();
    assert_eq!((row.id, row.attempts), (a.id, 6));
    // c is queued (claimable anyway), b still waits.
    let row = j.claim_next(now, cap, None).unwrap().unwrap();
    assert_eq!(row.id, c.id);
    assert!(j.claim_next(now, cap, None).unwrap().is_none());
    assert_eq!(
        j.get(b.id).unwrap().unwrap().next_attempt_at,
        Some(now + 60_000)
    );
}

#[test]
fn interrupted_uploads_are_resumed_with_their_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let id = {
        let mut j = Journal::open(&path).unwrap();
        let a = j.add_file(&ident("a.mp4", 100), FileState::Queued).unwrap();
        j.claim_next(now_ms(), Duration::from_secs(1), None)
            .unwrap();
        j.set_chunk_size(a.id, 40).unwrap();
        j.record_progress(a.id, "vi9", 40).unwrap();
        a.id
    };
    let mut j = Journal::open(&path).unwrap();
    assert_eq!(j.requeue_interrupted().unwrap(), 1);
    let row = j
        .claim_next(now_ms(), Duration::from_secs(1), None)
        .unwrap()
        .unwrap();
    assert_eq!(row.id, id);
    assert_eq!(row.bytes_uploaded, 40);
    assert_eq!(row.video_id.as_deref(), Some("vi9"));
    assert_eq!(row.chunk_size, Some(40));
}

fn failing_with_restart_voids_the_progress(j: &mut Journal) {
    let a = j.add_file(&ident("a", 100), FileState::Queued).unwrap();
    j.claim_next(now_ms(), Duration::from_secs(1), None)
        .unwrap();
    j.set_chunk_size(a.id, 50).unwrap();
    j.record_progress(a.id, "vi1", 50).unwrap();
    j.mark_failed_restart(a.id, "404").unwrap();
    let r = j.get(a.id).unwrap().unwrap();
    assert_eq!(
        (r.state, r.bytes_uploaded, r.video_id, r.chunk_size),
        (FileState::Failed, 0, None, None)
    );
}

fn retry_failed_requeues_only_failed(j: &mut Journal) {
    let a = j.add_file(&ident("a", 1), FileState::Queued).unwrap();
    let b = j.add_file(&ident("b", 1), FileState::Queued).unwrap();
    j.mark_failed(a.id, "400 nope").unwrap();
    let out = j.retry_failed(Some(&[a.id, b.id])).unwrap();
    assert!(out[0].1.is_ok());
    assert!(out[1].1.is_err());
    assert_eq!(j.get(a.id).unwrap().unwrap().state, FileState::Queued);
}

fn claim_only_among_given_ids(j: &mut Journal) {
    let _a = j.add_file(&ident("a", 1), FileState::Queued).unwrap();
    let b = j.add_file(&ident("b", 1), FileState::Queued).unwrap();
    let row = j
        .claim_next(now_ms(), Duration::from_secs(1), Some(&[b.id]))
        .unwrap()
        .unwrap();
    assert_eq!(row.id, b.id);
    assert!(j
        .claim_next(now_ms(), Duration::from_secs(1), Some(&[b.id]))
        .unwrap()
        .is_none());
    assert_eq!(j.unfinished(Scope::Ids(&[b.id])).unwrap(), 1);
}

fn a_batch_claims_only_its_files_until_they_leave_it(j: &mut Journal) {
    let cap = Duration::from_secs(1);
    let a = j.add_file(&ident("a", 1), FileState::Queued).unwrap();
    let b = j.add_file(&ident("b", 2), FileState::Queued).unwrap();
    let c = j.add_file(&ident("c", 3), FileState::Queued).unwrap();
    // An empty batch claims nothing and has nothing left to do.
    j.set_batch(&[]).unwrap();
    assert!(j
        .claim_next_skipping(now_ms(), cap, Scope::Batch, &[])
        .unwrap()
        .is_none());
    assert_eq!(j.unfinished(Scope::Batch).unwrap(), 0);
    // A new batch replaces it; ids given twice count once.
    j.set_batch(&[c.id, a.id, a.id]).unwrap();
    assert_eq!(j.unfinished(Scope::Batch).unwrap(), 2);
    let first = j
        .claim_next_skipping(now_ms(), cap, Scope::Batch, &[])
        .unwrap();
    assert_eq!(first.map(|r| r.id), Some(a.id));
    // `a` is uploading (still unfinished); it leaves the batch.
    j.leave_batch(a.id).unwrap();
    assert_eq!(j.unfinished(Scope::Batch).unwrap(), 1);
    let second = j
        .claim_next_skipping(now_ms(), cap, Scope::Batch, &[])
        .unwrap();
    assert_eq!(second.map(|r| r.id), Some(c.id));
    assert!(j
        .claim_next_skipping(now_ms(), cap, Scope::Batch, &[])
        .unwrap()
        .is_none());
    // `b` was never in it, and is still queued for anyone else.
    assert_eq!(j.get(b.id).unwrap().unwrap().state, FileState::Queued);
    assert_eq!(j.unfinished(Scope::All).unwrap(), 3);
}

#[test]
fn garbage_file_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = Journal::open(&path).unwrap_err();
    assert!(matches!(err, JournalError::NotAJournal { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 8192]);
}

#[test]
fn foreign_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let err = Journal::open(&path).unwrap_err();
    assert!(matches!(err, JournalError::NotAJournal { .. }), "{err}");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    drop(Journal::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Journal::open(&path).unwrap_err();
    assert!(
        matches!(err, JournalError::TooNew { found: 99, .. }),
        "{err}"
    );
    let err = Journal::open_read_only(&path).unwrap_err();
    assert!(matches!(err, JournalError::TooNew { .. }), "{err}");
}

#[test]
fn migrations_are_valid() {
    let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
    migrations.validate().unwrap();
}

#[test]
fn read_only_open_sees_writes_and_refuses_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    assert!(matches!(
        Journal::open_read_only(&path),
        Err(JournalError::Missing { .. })
    ));
    let mut w = Journal::open(&path).unwrap();
    w.add_file(&ident("a", 1), FileState::Queued).unwrap();
    let r = Journal::open_read_only(&path).unwrap();
    assert_eq!(r.list(None).unwrap().len(), 1);
    assert_eq!(r.counts().unwrap().get(&FileState::Queued), Some(&1));
}

fn resettle_follows_a_growing_file_and_merges_into_an_existing_identity(j: &mut Journal) {
    let a = j
        .add_file(&ident("a.mp4", 10), FileState::Settling)
        .unwrap();
    assert_eq!(
        j.resettle(a.id, &ident("a.mp4", 20)).unwrap(),
        Resettled::Updated
    );
    let row = j.get(a.id).unwrap().unwrap();
    assert_eq!((row.identity.size, row.state), (20, FileState::Settling));
    assert_eq!(
        j.rows_at(Path::new("/srv/capture"), Path::new("a.mp4"))
            .unwrap()
            .len(),
        1
    );
    // Back to an identity another row has: this one is gone, that one wins.
    let done = j.add_file(&ident("a.mp4", 30), FileState::Done).unwrap();
    let merged = j.resettle(a.id, &ident("a.mp4", 30)).unwrap();
    assert_eq!(
        merged,
        Resettled::Merged {
            into: done.id,
            state: FileState::Done
        }
    );
    assert_eq!(j.get(a.id).unwrap().unwrap().state, FileState::Gone);
    // Only a settling row may be resettled.
    let q = j.add_file(&ident("q.mp4", 1), FileState::Queued).unwrap();
    let err = j.resettle(q.id, &ident("q.mp4", 2)).unwrap_err();
    assert!(matches!(err, JournalError::WrongState { .. }), "{err}");
}

fn batch_transitions_skip_rows_in_other_states(j: &mut Journal) {
    let a = j.add_file(&ident("a", 1), FileState::Settling).unwrap();
    let b = j.add_file(&ident("b", 1), FileState::Queued).unwrap();
    let c = j.add_file(&ident("c", 1), FileState::Done).unwrap();
    let d = QueuePlace::DEFAULT;
    assert_eq!(
        j.mark_ready_many(&[(a.id, d), (b.id, d), (999, d)])
            .unwrap(),
        vec![a.id]
    );
    let gone = j.mark_gone_many(&[a.id, b.id, c.id], "vanished").unwrap();
    assert_eq!(gone, vec![a.id, b.id]);
    assert_eq!(j.get(c.id).unwrap().unwrap().state, FileState::Done);
    assert_eq!(
        j.get(b.id).unwrap().unwrap().last_error.as_deref(),
        Some("vanished")
    );
    let other = FileIdentity {
        root: PathBuf::from("/elsewhere"),
        ..ident("a", 1)
    };
    j.add_file(&other, FileState::Queued).unwrap();
    let under = j.rows_under(Path::new("/srv/capture")).unwrap();
    assert_eq!(
        under.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![a.id, b.id, c.id]
    );
}

fn monitoring_queries_count_work_ahead_per_root_and_the_oldest_wait(j: &mut Journal) {
    assert!(j.unfinished_by_root().unwrap().is_empty());
    assert_eq!(j.oldest_waiting_since().unwrap(), None);
    let a = j.add_file(&ident("a", 1), FileState::Queued).unwrap();
    j.add_file(&ident("b", 1), FileState::Settling).unwrap();
    j.add_file(&ident("c", 1), FileState::Done).unwrap();
    let f = j.add_file(&ident("f", 1), FileState::Queued).unwrap();
    j.mark_failed(f.id, "nope").unwrap();
    let other = FileIdentity {
        root: PathBuf::from("/elsewhere"),
        ..ident("d", 1)
    };
    j.add_file(&other, FileState::Queued).unwrap();
    let by_root = j.unfinished_by_root().unwrap();
    assert_eq!(by_root.get(Path::new("/srv/capture")), Some(&2));
    assert_eq!(by_root.get(Path::new("/elsewhere")), Some(&1));
    let created = j.get(a.id).unwrap().unwrap().created_at;
    assert_eq!(j.oldest_waiting_since().unwrap(), Some(created));
}

fn video_json_is_read_back(j: &mut Journal) {
    let a = j.add_file(&ident("a", 1), FileState::Queued).unwrap();
    assert_eq!(j.video_json(a.id).unwrap(), None);
    j.claim_next(now_ms(), Duration::from_secs(1), None)
        .unwrap();
    j.mark_done(a.id, Some("vi1"), Some(r#"{"videoId":"vi1"}"#), None)
        .unwrap();
    assert_eq!(
        j.video_json(a.id).unwrap().as_deref(),
        Some(r#"{"videoId":"vi1"}"#)
    );
    assert_eq!(j.video_json(999).unwrap(), None);
}

#[tokio::test]
async fn handle_runs_calls_on_the_owner_thread() {
    let (_d, j) = open_temp();
    let h = JournalHandle::spawn(j).unwrap();
    let added = h
        .call(|j| j.add_file(&ident("a", 1), FileState::Queued))
        .await
        .unwrap();
    let row = h.call(move |j| j.get(added.id)).await.unwrap().unwrap();
    assert_eq!(row.state, FileState::Queued);
}

/// A claim must not sort the queue (one claim per file would make a batch
/// quadratic): the queued arm walks `files_by_queue` in queue order, in
/// every scope, and only the (few) due retries and the two candidates may
/// be sorted.
#[test]
fn claiming_walks_the_queue_in_order_without_sorting_it() {
    let (_d, mut j) = open_temp();
    for i in 0..200 {
        let mut f = ident(&format!("{i}.mp4"), 10 + i);
        f.mtime_ns += i64::try_from(i % 7).unwrap();
        let id = j.add_file(&f, FileState::Settling).unwrap().id;
        let rank = usize::try_from(i % 2).unwrap();
        j.mark_ready(id, QueuePlace::new(Some(rank), QueueOrder::Newest))
            .unwrap();
    }
    let ids: Vec<i64> = j.list(None).unwrap().iter().map(|r| r.id).collect();
    j.set_batch(&ids).unwrap();
    j.batch("analyze", "ANALYZE").unwrap();
    for scope in [Scope::All, Scope::Batch, Scope::Ids(&ids[..3])] {
        let filter = super::queries::scope_filter(scope);
        let sql = format!("EXPLAIN QUERY PLAN {}", super::queries::claim_sql(&filter));
        let rows = j.rows("explain", &sql, sql::args![0_i64, 0_i64]).unwrap();
        // (id, parent, what)
        let plan: Vec<(i64, i64, String)> = rows
            .iter()
            .map(|r| (r.i64(0).unwrap(), r.i64(1).unwrap(), r.text(3).unwrap()))
            .collect();
        let text: Vec<&str> = plan.iter().map(|(_, _, t)| t.as_str()).collect();
        let text = text.join("\n");
        let fresh = plan
            .iter()
            .find(|(_, _, t)| t == "CO-ROUTINE fresh")
            .map(|(id, _, _)| *id)
            .unwrap_or_else(|| panic!("{scope:?}: no fresh arm:\n{text}"));
        let under_fresh: Vec<&str> = plan
            .iter()
            .filter(|(_, parent, _)| *parent == fresh)
            .map(|(_, _, t)| t.as_str())
            .collect();
        assert!(
            under_fresh
                .iter()
                .any(|t| t.starts_with("SEARCH files USING INDEX files_by_queue (state=?)")),
            "{scope:?}: the queued arm does not walk the queue's index:\n{text}"
        );
        assert!(
            !under_fresh.iter().any(|t| t.contains("TEMP B-TREE")),
            "{scope:?}: the queue is sorted on every claim:\n{text}"
        );
        // The due retries, and the two candidates.
        assert_eq!(
            text.matches("TEMP B-TREE").count(),
            2,
            "{scope:?}: more is sorted than the due retries and the two candidates:\n{text}"
        );
    }
    // And it still claims the first due file of the scope in queue order:
    // of these, one of rank 0 (an even i), the newest of those.
    let got = j
        .claim_next_skipping(
            now_ms(),
            Duration::from_secs(60),
            Scope::Ids(&ids[5..9]),
            &[],
        )
        .unwrap()
        .unwrap();
    assert_eq!(got.id, ids[6]);
}

#[test]
fn column_count_matches_the_column_list() {
    assert_eq!(row::COLUMNS.split(',').count(), row::COLUMN_COUNT);
}

on_both!(
    add_is_idempotent_per_identity,
    a_nested_failure_undoes_only_its_own_writes,
    non_utf8_names_round_trip,
    happy_path_transitions,
    guarded_transitions_refuse_wrong_state,
    retrying_waits_for_its_time_and_clock_jumps_back_count_as_due,
    make_due_moves_only_the_given_retrying_rows_and_keeps_their_attempts,
    failing_with_restart_voids_the_progress,
    retry_failed_requeues_only_failed,
    claim_only_among_given_ids,
    a_batch_claims_only_its_files_until_they_leave_it,
    resettle_follows_a_growing_file_and_merges_into_an_existing_identity,
    batch_transitions_skip_rows_in_other_states,
    monitoring_queries_count_work_ahead_per_root_and_the_oldest_wait,
    video_json_is_read_back,
);
