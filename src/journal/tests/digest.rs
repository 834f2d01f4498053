//! Tests of the stored SHA-256 and of the done twins `duplicates = "skip"`
//! compares with.

use super::*;

#[test]
fn a_version_3_journal_opens_and_its_rows_have_no_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    {
        let mut conn = Connection::open(&path).unwrap();
        let old = Migrations::new(MIGRATIONS[..3].iter().map(|sql| M::up(sql)).collect());
        old.to_latest(&mut conn).unwrap();
        for (i, state) in ["done", "queued"].iter().enumerate() {
            conn.execute(
                "INSERT INTO files (root, rel_path, size, mtime_ns, dev, inode, state, \
                 created_at, updated_at, video_id, sample) VALUES (?1, ?2, 10, 5, 1, ?3, ?4, 1, 1, 'vi', ?5)",
                rusqlite::params![
                    b"/srv/capture".to_vec(),
                    format!("f{i}.mp4").into_bytes(),
                    i as i64,
                    state,
                    vec![9u8; 16]
                ],
            )
            .unwrap();
        }
    }
    // Read-only (`status` while an older ingestd holds it): not migrated,
    // and no row has a SHA-256.
    let old = Journal::open_read_only(&path).unwrap();
    let rows = old.list_hashed(None).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|(_, sha)| sha.is_none()), "{rows:?}");
    drop(old);
    let mut j = Journal::open(&path).unwrap();
    let rows = j.list_hashed(None).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|(_, sha)| sha.is_none()), "{rows:?}");
    assert_eq!(rows[0].0.state, FileState::Done);
    // An old done row without a SHA-256 is no twin to compare with.
    let twins = j
        .done_twins(rows[1].0.id, 10, crate::sample::Sample([9; 16]))
        .unwrap();
    assert!(twins.is_empty(), "{twins:?}");
    // The queued one finishes with its SHA-256.
    let id = rows[1].0.id;
    j.claim_next(now_ms(), Duration::from_secs(1), None)
        .unwrap()
        .unwrap();
    j.mark_done_hashed(id, Some("vi2"), None, None, Some("ab12"))
        .unwrap();
    assert_eq!(j.sha256(id).unwrap().as_deref(), Some("ab12"));
    assert_eq!(j.sha256(rows[0].0.id).unwrap(), None);
}

fn the_sha256_is_stored_with_done_and_done_twins_are_found(j: &mut Journal) {
    let s = crate::sample::Sample([4; 16]);
    let a = j
        .add_sampled(&ident("a.mp4", 100), s, FileState::Queued)
        .unwrap()
        .id;
    let b = j
        .add_sampled(&ident("b.mp4", 100), s, FileState::Queued)
        .unwrap()
        .id;
    assert!(j.done_twins(b, 100, s).unwrap().is_empty());
    j.claim_next(now_ms(), Duration::from_secs(1), None)
        .unwrap()
        .unwrap();
    // Not done: refused, and nothing is stored.
    assert!(j
        .mark_done_hashed(b, Some("vi"), None, None, Some("ff"))
        .is_err());
    assert_eq!(j.sha256(b).unwrap(), None);
    j.mark_done_hashed(
        a,
        Some("vi1"),
        Some(r#"{"videoId":"vi1"}"#),
        None,
        Some("ab"),
    )
    .unwrap();
    let twins = j.done_twins(b, 100, s).unwrap();
    assert_eq!(twins.len(), 1);
    assert_eq!((twins[0].row.id, twins[0].sha256.as_str()), (a, "ab"));
    assert_eq!(twins[0].video_json.as_deref(), Some(r#"{"videoId":"vi1"}"#));
    // A file is not its own twin; another size or sample is no twin.
    assert!(j.done_twins(a, 100, s).unwrap().is_empty());
    assert!(j.done_twins(b, 101, s).unwrap().is_empty());
    assert!(j
        .done_twins(b, 100, crate::sample::Sample([5; 16]))
        .unwrap()
        .is_empty());
    let listed = j.list_hashed(Some(&[FileState::Done])).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1.as_deref(), Some("ab"));
}

super::on_both!(the_sha256_is_stored_with_done_and_done_twins_are_found,);
