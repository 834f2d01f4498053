//! Tests of the queue's order: a claim takes the lowest (rank, key, id),
//! the key is the folder's `order` over the row's size or mtime, and a file
//! back in the queue (retry, release, requeue) keeps its place.

use super::*;
use crate::config::QueueOrder;

/// Journals `name` (size `size`, mtime `ident`'s + `mtime`) and queues it
/// at `place`.
fn queued(j: &mut Journal, name: &str, size: u64, mtime: i64, place: QueuePlace) -> i64 {
    let mut f = ident(name, size);
    f.mtime_ns += mtime;
    let id = j.add_file(&f, FileState::Settling).unwrap().id;
    j.mark_ready(id, place).unwrap();
    id
}

/// Claims until nothing is due: the ids in claim order.
fn claim_all(j: &mut Journal) -> Vec<i64> {
    let mut out = Vec::new();
    while let Some(row) = j
        .claim_next(now_ms(), Duration::from_secs(300), None)
        .unwrap()
    {
        out.push(row.id);
    }
    out
}

/// The row's (queue_rank, queue_key).
fn place_of(j: &Journal, id: i64) -> (i64, i64) {
    let rows = j
        .rows(
            "read a place",
            "SELECT queue_rank, queue_key FROM files WHERE id = ?1",
            sql::args![id],
        )
        .unwrap();
    (rows[0].i64(0).unwrap(), rows[0].i64(1).unwrap())
}

fn rank_then_key_then_id_decide_the_claim_order(j: &mut Journal) {
    let rank = |i| QueuePlace::new(i, QueueOrder::Oldest);
    let rest = queued(j, "rest.mp4", 10, 0, rank(None));
    let second_new = queued(j, "second-new.mp4", 10, 50, rank(Some(1)));
    let first_new = queued(j, "first-new.mp4", 10, 40, rank(Some(0)));
    let first_old = queued(j, "first-old.mp4", 10, 10, rank(Some(0)));
    let first_tie = queued(j, "first-tie.mp4", 10, 10, rank(Some(0)));
    let second_old = queued(j, "second-old.mp4", 10, 20, rank(Some(1)));
    assert_eq!(
        claim_all(j),
        [first_old, first_tie, first_new, second_old, second_new, rest],
        "by rank, then oldest first, then by id"
    );
}

fn each_order_keys_by_the_rows_size_or_mtime(j: &mut Journal) {
    for order in [
        QueueOrder::Oldest,
        QueueOrder::Newest,
        QueueOrder::Smallest,
        QueueOrder::Largest,
    ] {
        let place = QueuePlace::new(None, order);
        let name = |n: &str| format!("{}-{n}.mp4", order.as_str());
        let x = queued(j, &name("x"), 20, 1, place);
        let y = queued(j, &name("y"), 10, 3, place);
        let z = queued(j, &name("z"), 30, 2, place);
        let want = match order {
            QueueOrder::Oldest => [x, z, y],
            QueueOrder::Newest => [y, z, x],
            QueueOrder::Smallest => [y, x, z],
            QueueOrder::Largest => [z, x, y],
        };
        assert_eq!(claim_all(j), want, "{order:?}");
        let mtime = ident("", 0).mtime_ns;
        let key = match order {
            QueueOrder::Oldest => mtime + 3,
            QueueOrder::Newest => -1 - (mtime + 3),
            QueueOrder::Smallest => 10,
            QueueOrder::Largest => -1 - 10,
        };
        assert_eq!(place_of(j, y), (QueuePlace::UNMATCHED, key), "{order:?}");
    }
}

fn the_extreme_mtimes_are_keyed_without_overflow(j: &mut Journal) {
    let newest = QueuePlace::new(None, QueueOrder::Newest);
    let mut ids = Vec::new();
    for (name, mtime) in [
        ("epoch.mp4", 0),
        ("min.mp4", i64::MIN),
        ("max.mp4", i64::MAX),
    ] {
        let mut f = ident(name, 10);
        f.mtime_ns = mtime;
        let id = j.add_file(&f, FileState::Settling).unwrap().id;
        j.mark_ready(id, newest).unwrap();
        ids.push(id);
    }
    assert_eq!(claim_all(j), [ids[2], ids[0], ids[1]]);
    assert_eq!(place_of(j, ids[1]).1, i64::MAX);
}

fn a_file_back_in_the_queue_keeps_its_place(j: &mut Journal) {
    let max_backoff = Duration::from_secs(300);
    let first = QueuePlace::new(Some(0), QueueOrder::Newest);
    let p = queued(j, "a.proxy.mp4", 10, 100, first);
    let placed = place_of(j, p);
    assert_eq!(placed, (0, -1 - (ident("", 0).mtime_ns + 100)));
    let q = queued(j, "old.mp4", 10, 0, QueuePlace::DEFAULT);
    let claim = |j: &mut Journal| {
        j.claim_next(now_ms(), max_backoff, None)
            .unwrap()
            .unwrap()
            .id
    };

    // `ingestd retry`: queued again at its rank, before the older file.
    assert_eq!(claim(j), p);
    j.mark_failed(p, "refused").unwrap();
    let outcome = j.retry_failed(Some(&[p])).unwrap();
    assert!(outcome[0].1.is_ok(), "{outcome:?}");
    assert_eq!(place_of(j, p), placed);
    assert_eq!(claim(j), p);

    // A due retry competes with the fresh files by its place.
    j.mark_retrying(p, 1, now_ms() - 1, "timeout").unwrap();
    assert_eq!(claim(j), p);
    // Given back untouched, and requeued after a crash.
    j.release(p, None).unwrap();
    assert_eq!(claim(j), p);
    j.requeue_interrupted().unwrap();
    assert_eq!(place_of(j, p), placed);
    assert_eq!(claim(j), p);

    // And a retry of rank 0 waiting out its backoff lets the rest go.
    j.mark_retrying(p, 2, now_ms() + 60_000, "timeout").unwrap();
    assert_eq!(claim(j), q);
    assert_eq!(place_of(j, p), placed);
}

fn rows_journaled_queued_get_the_default_place_unless_placed(j: &mut Journal) {
    let files = [ident("a.mp4", 10), ident("b.mp4", 30), ident("c.mp4", 20)];
    let added = j.add_files(&files, FileState::Queued).unwrap();
    let mtime = ident("", 0).mtime_ns;
    assert_eq!(place_of(j, added[0].id), (QueuePlace::UNMATCHED, mtime));
    // `ingestd upload FILE` of files of a folder with order = "largest".
    let largest = QueuePlace::new(None, QueueOrder::Largest);
    let placed: Vec<(i64, QueuePlace)> = added.iter().map(|a| (a.id, largest)).collect();
    j.place_queued(&placed).unwrap();
    assert_eq!(place_of(j, added[1].id), (QueuePlace::UNMATCHED, -1 - 30));
    assert_eq!(
        claim_all(j),
        [added[1].id, added[2].id, added[0].id],
        "largest first"
    );
    // A row that is not freshly queued keeps its place.
    let d = queued(j, "d.mp4", 5, 0, QueuePlace::DEFAULT);
    j.claim_next(now_ms(), Duration::from_secs(300), None)
        .unwrap();
    j.place_queued(&[(d, QueuePlace::new(Some(0), QueueOrder::Smallest))])
        .unwrap();
    assert_eq!(place_of(j, d), (QueuePlace::UNMATCHED, mtime));
}

on_both!(
    rank_then_key_then_id_decide_the_claim_order,
    each_order_keys_by_the_rows_size_or_mtime,
    the_extreme_mtimes_are_keyed_without_overflow,
    a_file_back_in_the_queue_keeps_its_place,
    rows_journaled_queued_get_the_default_place_unless_placed,
);

/// The shared journal's claim walks `files_by_queue` too: no sort of the
/// queued files (only of the due retries and the two candidates).
#[test]
fn postgres_claims_walk_the_queue_in_order_without_sorting_it() {
    let Some((_db, mut j)) = super::open_pg() else {
        return;
    };
    j.batch(
        "fill the queue",
        "INSERT INTO files (root, rel_path, size, mtime_ns, dev, inode, state, created_at, \
         updated_at, queue_rank, queue_key) \
         SELECT '\\x2f'::bytea, convert_to(i::text, 'UTF8'), i, i, 1, i, 'queued', 1, 1, i % 3, -i \
         FROM generate_series(1, 20000) AS i; \
         ANALYZE files",
    )
    .unwrap();
    let ids: Vec<i64> = (1..=500).collect();
    j.set_batch(&ids).unwrap();
    for scope in [Scope::All, Scope::Batch, Scope::Ids(&ids[..3])] {
        let filter = super::super::queries::scope_filter(scope);
        let sql = format!(
            "EXPLAIN {}",
            super::super::postgres::claim_leased_sql(&filter)
        );
        let rows = j
            .rows("explain", &sql, sql::args![0_i64, 0_i64, "n", 1_i64])
            .unwrap();
        let lines: Vec<String> = rows.iter().map(|r| r.text(0).unwrap()).collect();
        let plan = lines.join("\n");
        let fresh = plan
            .split("CTE fresh")
            .nth(1)
            .and_then(|p| p.split("CTE due").next())
            .unwrap_or_else(|| panic!("{scope:?}: no fresh arm:\n{plan}"));
        assert!(
            fresh.contains("Index Scan using files_by_queue"),
            "{scope:?}: the queued arm does not walk the queue's index:\n{plan}"
        );
        assert!(
            !fresh.contains("Sort"),
            "{scope:?}: the queue is sorted on every claim:\n{plan}"
        );
    }
    // And the claim takes the first in queue order: rank 0, lowest key.
    let got = j
        .claim_next(now_ms(), Duration::from_secs(60), None)
        .unwrap()
        .unwrap();
    assert_eq!(got.id, 19998, "rank 0 (i % 3 == 0), the largest i");
}
