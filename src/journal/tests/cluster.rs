//! Several nodes on one PostgreSQL journal: each claim takes a lease and
//! raises the epoch, a node whose lease was taken over writes nothing, one
//! node leads each watch folder, node names are unique, and a database that
//! is not ingestd's or is newer is refused.

use super::pg_server::PgDb;
use super::*;

fn node(db: &PgDb, name: &str, lease: Duration) -> Journal {
    Journal::open_postgres(&PgTarget {
        lease,
        ..pg_target(db, name)
    })
    .unwrap()
}

/// Two nodes of one fresh database, with a short lease.
fn two_nodes() -> Option<(PgDb, Journal, Journal)> {
    let server = super::pg_server::shared()?;
    let db = server.fresh_database("cluster");
    let a = node(&db, "node-a", Duration::from_secs(30));
    let mut b = node(&db, "node-b", Duration::from_secs(30));
    settled(&mut b);
    Some((db, a, b))
}

/// A file `j` journaled and claimed: its id.
fn claimed(j: &mut Journal) -> i64 {
    let id = j
        .add_file(&ident("x.mp4", 10), FileState::Queued)
        .unwrap()
        .id;
    j.claim_next(now_ms(), Duration::from_secs(60), None)
        .unwrap()
        .unwrap();
    id
}

/// `j` has been connected for longer than a lease: it may take over.
fn settled(j: &mut Journal) {
    let c = j.cluster.as_mut().unwrap();
    c.connected_at -= Duration::from_millis(c.lease_ms as u64 + 1);
}

/// Ends `id`'s lease now, as if its node had been silent for a lease.
fn expire(db: &PgDb, id: i64) {
    super::pg_server::shared().unwrap().psql(
        &db.name,
        &format!("UPDATE files SET lease_until = 0 WHERE id = {id}"),
    );
}

#[test]
fn nodes_claim_different_files_and_each_claim_raises_the_epoch() {
    let Some((_db, mut a, mut b)) = two_nodes() else {
        return;
    };
    let x = a
        .add_file(&ident("x.mp4", 10), FileState::Queued)
        .unwrap()
        .id;
    let y = a
        .add_file(&ident("y.mp4", 10), FileState::Queued)
        .unwrap()
        .id;
    let far = Duration::from_secs(60);
    let got_a = a.claim_next(now_ms(), far, None).unwrap().unwrap();
    let got_b = b.claim_next(now_ms(), far, None).unwrap().unwrap();
    assert_eq!((got_a.id, got_b.id), (x, y));
    assert!(b.claim_next(now_ms(), far, None).unwrap().is_none());
    assert_eq!(a.cluster.as_ref().unwrap().leases.get(&x), Some(&1));
    // Each node's writes go through; their leases renew.
    a.set_chunk_size(x, 4).unwrap();
    a.record_progress(x, "vi1", 4).unwrap();
    assert!(a.renew_leases().unwrap().is_empty());
    assert!(b.renew_leases().unwrap().is_empty());
}

#[test]
fn a_node_whose_lease_was_taken_over_writes_nothing() {
    let Some((db, mut a, mut b)) = two_nodes() else {
        return;
    };
    let far = Duration::from_secs(60);
    let id = claimed(&mut a);
    a.set_chunk_size(id, 4).unwrap();
    a.record_progress(id, "vi1", 4).unwrap();
    // node-b started before: its own sweep is done. node-a goes silent.
    b.requeue_interrupted().unwrap();
    assert_eq!(
        b.requeue_interrupted().unwrap(),
        0,
        "a live lease is not taken over"
    );
    expire(&db, id);
    assert_eq!(b.requeue_interrupted().unwrap(), 1);
    let row = b.claim_next(now_ms(), far, None).unwrap().unwrap();
    assert_eq!(
        (row.id, row.bytes_uploaded, row.video_id.as_deref()),
        (id, 4, Some("vi1"))
    );
    // node-a comes back: every write of its attempt is refused, and its
    // renewal says the lease is gone.
    let err = a.record_progress(id, "vi1", 8).unwrap_err();
    assert!(
        matches!(err, JournalError::LeaseLost { id: i } if i == id),
        "{err}"
    );
    assert!(a.mark_done(id, Some("vi1"), None, None).is_err());
    assert!(a.renew_leases().unwrap().is_empty(), "already forgotten");
    let row = b.get(id).unwrap().unwrap();
    assert_eq!((row.state, row.bytes_uploaded), (FileState::Uploading, 4));
    // node-b finishes it.
    b.record_progress(id, "vi1", 8).unwrap();
    b.mark_done(id, Some("vi1"), None, None).unwrap();
    assert_eq!(b.get(id).unwrap().unwrap().state, FileState::Done);
}

#[test]
fn renewal_reports_a_lease_lost_while_silent() {
    let Some((db, mut a, mut b)) = two_nodes() else {
        return;
    };
    let far = Duration::from_secs(60);
    let id = claimed(&mut a);
    b.requeue_interrupted().unwrap();
    expire(&db, id);
    b.requeue_interrupted().unwrap();
    b.claim_next(now_ms(), far, None).unwrap().unwrap();
    assert_eq!(a.renew_leases().unwrap(), vec![id]);
}

#[test]
fn a_creating_request_of_a_silent_node_is_in_doubt_on_takeover() {
    let Some((db, mut a, mut b)) = two_nodes() else {
        return;
    };
    let id = claimed(&mut a);
    a.set_chunk_size(id, 4).unwrap(); // creating: no videoId yet
    b.requeue_interrupted().unwrap();
    expire(&db, id);
    assert_eq!(b.requeue_interrupted().unwrap(), 1);
    let row = b.get(id).unwrap().unwrap();
    assert_eq!((row.state, row.sends_in_doubt), (FileState::Queued, 1));
    assert_eq!(b.orphan_count().unwrap(), 1);
}

#[test]
fn a_node_restarted_takes_back_its_own_uploads_at_once() {
    let Some((db, mut a, _b)) = two_nodes() else {
        return;
    };
    let id = claimed(&mut a);
    drop(a);
    let mut again = node(&db, "node-a", Duration::from_secs(30));
    assert_eq!(
        again.requeue_interrupted().unwrap(),
        1,
        "its lease is still running"
    );
    assert_eq!(again.get(id).unwrap().unwrap().state, FileState::Queued);
}

#[test]
fn one_node_leads_each_folder_until_it_goes_silent() {
    let Some((db, mut a, mut b)) = two_nodes() else {
        return;
    };
    let roots = vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")];
    assert_eq!(a.lead_roots(&roots[..1]).unwrap(), roots[..1]);
    assert_eq!(b.lead_roots(&roots).unwrap(), roots[1..]);
    assert_eq!(
        a.lead_roots(&roots).unwrap(),
        roots[..1],
        "renewed, not taken"
    );
    super::pg_server::shared().unwrap().psql(
        &db.name,
        "UPDATE leaders SET lease_until = 0 WHERE node = 'node-a'",
    );
    assert_eq!(b.lead_roots(&roots).unwrap(), roots);
    assert!(a.lead_roots(&roots).unwrap().is_empty());
    b.resign().unwrap();
    assert_eq!(a.lead_roots(&roots).unwrap(), roots);
}

#[test]
fn a_node_name_in_use_elsewhere_is_refused() {
    let Some((db, mut a, _b)) = two_nodes() else {
        return;
    };
    a.register_node("host-1", 100).unwrap();
    a.register_node("host-1", 100).unwrap(); // itself, again
    let mut twin = node(&db, "node-a", Duration::from_secs(30));
    let err = twin.register_node("host-2", 200).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, JournalError::NodeInUse { .. }) && text.contains("host-1"),
        "{text}"
    );
    // On this host, a process that is alive holds the name; one that is
    // gone (killed, restarted at once by systemd) does not.
    let here = "this-host";
    let alive = std::process::id();
    let mut first = node(&db, "node-c", Duration::from_secs(30));
    let mut second = node(&db, "node-c", Duration::from_secs(30));
    first.register_node(here, alive).unwrap();
    assert!(matches!(
        second.register_node(here, alive + 1),
        Err(JournalError::NodeInUse { .. })
    ));
    // The first one killed: its pid is no process any more.
    super::pg_server::shared().unwrap().psql(
        &db.name,
        "UPDATE nodes SET pid = 999999999 WHERE name = 'node-c'",
    );
    second.register_node(here, alive + 1).unwrap();
}

#[test]
fn a_foreign_or_newer_database_is_refused_untouched() {
    let Some(server) = super::pg_server::shared() else {
        return;
    };
    let foreign = server.fresh_database("foreign");
    server.psql(&foreign.name, "CREATE TABLE invoices (id int)");
    let target = pg_target(&foreign, "n");
    let err = Journal::open_postgres(&target).unwrap_err();
    assert!(matches!(err, JournalError::ForeignDatabase { .. }), "{err}");
    assert_eq!(
        server
            .psql(
                &foreign.name,
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
            .trim(),
        "1"
    );
    let newer = server.fresh_database("newer");
    drop(node(&newer, "n", Duration::from_secs(30)));
    server.psql(&newer.name, "INSERT INTO ingestd_schema VALUES (99, 0)");
    let err = node_err(&newer);
    assert!(
        matches!(err, JournalError::DatabaseTooNew { found: 99, .. }),
        "{err}"
    );
    // A wrong password is refused with what to do.
    let wrong = PgTarget {
        password: Some("wrong".into()),
        ..target
    };
    let err = Journal::open_postgres(&wrong).unwrap_err();
    assert!(err.to_string().contains("password"), "{err}");
    assert!(!err.to_string().contains("wrong"), "{err}");
}

fn node_err(db: &PgDb) -> JournalError {
    Journal::open_postgres(&pg_target(db, "n")).unwrap_err()
}

#[test]
fn a_stale_attempt_cannot_fail_or_drop_a_file_taken_over() {
    let Some((db, mut a, mut b)) = two_nodes() else {
        return;
    };
    let id = claimed(&mut a);
    b.requeue_interrupted().unwrap();
    expire(&db, id);
    assert_eq!(b.requeue_interrupted().unwrap(), 1);
    // Queued again, not yet claimed by anyone: node-a's late verdicts are refused.
    for r in [a.mark_failed(id, "permanent"), a.mark_gone(id, "vanished")] {
        assert!(matches!(r, Err(JournalError::LeaseLost { .. })), "{r:?}");
    }
    assert_eq!(b.get(id).unwrap().unwrap().state, FileState::Queued);
}

#[test]
fn a_node_just_connected_takes_nothing_over_until_a_lease_has_passed() {
    let Some((db, mut a, _b)) = two_nodes() else {
        return;
    };
    let id = claimed(&mut a);
    let mut fresh = node(&db, "node-c", Duration::from_secs(30));
    fresh.requeue_interrupted().unwrap(); // its own start-up sweep
    expire(&db, id);
    // The database may just be back: node-a may not have renewed yet.
    assert_eq!(fresh.requeue_interrupted().unwrap(), 0);
    assert!(
        a.renew_leases().unwrap().is_empty(),
        "node-a renews in time"
    );
    settled(&mut fresh);
    assert_eq!(fresh.requeue_interrupted().unwrap(), 0, "a renewed lease");
}

#[test]
fn a_claim_no_worker_holds_is_not_renewed_and_runs_out() {
    let Some((db, mut a, mut b)) = two_nodes() else {
        return;
    };
    let id = claimed(&mut a);
    // As if the claim's reply had been lost: node-a does not hold it.
    a.cluster.as_mut().unwrap().leases.clear();
    b.requeue_interrupted().unwrap();
    expire(&db, id);
    assert!(a.renew_leases().unwrap().is_empty());
    assert_eq!(
        b.requeue_interrupted().unwrap(),
        1,
        "taken over, not renewed forever"
    );
}

#[test]
fn a_file_journaled_by_another_node_is_found_whatever_its_device_number_there() {
    let Some((_db, mut a, mut b)) = two_nodes() else {
        return;
    };
    let f = ident("x.mp4", 10);
    let first = a.add_file(&f, FileState::Settling).unwrap();
    let mut there = f.clone();
    (there.dev, there.inode) = (f.dev + 7, f.inode + 9); // another machine's mount
    let second = b.add_files(&[there], FileState::Settling).unwrap()[0];
    assert_eq!((second.id, second.inserted), (first.id, false));
}
