//! `journal export`: a SQLite journal copied into an empty shared one, the
//! interrupted uploads queued by the start-up rule, the source untouched.

use super::*;

#[test]
fn an_export_copies_every_row_and_queues_interrupted_uploads_by_the_start_rule() {
    let Some((db, mut shared)) = open_pg() else {
        return;
    };
    let (_dir, mut source) = open_temp();
    let far = Duration::from_secs(60);
    let x = source
        .add_file(&ident("x.mp4", 10), FileState::Queued)
        .unwrap()
        .id;
    let y = source
        .add_file(&ident("y.mp4", 20), FileState::Queued)
        .unwrap()
        .id;
    // x: its creating request on its way; y: a chunk acknowledged on a video.
    assert_eq!(
        source.claim_next(now_ms(), far, None).unwrap().unwrap().id,
        x
    );
    source.set_chunk_size(x, 4).unwrap();
    assert_eq!(
        source.claim_next(now_ms(), far, None).unwrap().unwrap().id,
        y
    );
    source.set_chunk_size(y, 8).unwrap();
    source.record_progress(y, "vi1", 8).unwrap();

    let report = source.export_into(&mut shared).unwrap();
    assert_eq!(
        (report.files, report.half_uploaded, report.waiting),
        (2, 1, 1)
    );
    assert_eq!(
        (report.interrupted, report.in_doubt, report.orphans),
        (2, 1, 1)
    );
    let (gx, gy) = (
        shared.get(x).unwrap().unwrap(),
        shared.get(y).unwrap().unwrap(),
    );
    assert_eq!((gx.state, gy.state), (FileState::Queued, FileState::Queued));
    assert_eq!((gx.sends_in_doubt, gy.sends_in_doubt), (1, 0));
    assert_eq!(
        (gy.video_id.as_deref(), gy.bytes_uploaded, gy.chunk_size),
        (Some("vi1"), 8, Some(8))
    );
    assert_eq!(shared.orphans().unwrap().len(), 1);
    // The source is only read.
    assert_eq!(source.get(x).unwrap().unwrap().state, FileState::Uploading);
    assert!(source.orphans().unwrap().is_empty());
    // New rows get ids past the copied ones; nothing is copied twice.
    let z = shared
        .add_file(&ident("z.mp4", 30), FileState::Queued)
        .unwrap()
        .id;
    assert_eq!(z, y + 1);
    let refused = source.export_into(&mut shared).unwrap_err().to_string();
    assert!(refused.contains("holds 3 files"), "{refused}");
    assert!(
        refused.contains("export only into an empty journal"),
        "{refused}"
    );
    drop(db);
}
