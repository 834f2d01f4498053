//! The daemon end to end: `ingestd run` and `ingestd run --once` on real
//! watch folders, against the emulator. Settle times are short (300–800 ms)
//! and polling runs every second, so every wait is a condition with a
//! deadline; the few fixed pauses are windows in which something must NOT
//! happen, and say so.

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use ingestd::emulator::Fault;
use ingestd::journal::{FileRow, FileState};

/// How long any single expected outcome may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

fn rows_at(env: &Env, path: &Path) -> Vec<FileRow> {
    rows(env).into_iter().filter(|r| r.path() == path).collect()
}

/// Waits until the journal has a row for `path` in `state`; returns it.
fn wait_state(env: &Env, d: &Daemon, path: &Path, state: FileState) -> FileRow {
    let mut found = None;
    let ok = wait_until(WAIT, || {
        found = rows_at(env, path).into_iter().find(|r| r.state == state);
        found.is_some()
    });
    assert!(
        ok,
        "{} never became {state}; journal: {:#?}\n--- log\n{}",
        path.display(),
        rows(env),
        d.log()
    );
    found.unwrap()
}

fn wait_done(env: &Env, d: &Daemon, path: &Path) -> FileRow {
    wait_state(env, d, path, FileState::Done)
}

/// The row's video is complete at the emulator with exactly these bytes.
fn assert_video(env: &Env, row: &FileRow, sha: &str) {
    let id = row.video_id.as_deref().expect("a done row has a videoId");
    let v = env.video(id);
    assert!(v.complete, "video not complete: {v:?}");
    assert_eq!(v.sha256.as_deref(), Some(sha), "wrong content for {row:?}");
}

/// Waits for `path`'s row to be done and checks its bytes at the emulator.
fn assert_uploaded(env: &Env, d: &Daemon, path: &Path) -> FileRow {
    let row = wait_done(env, d, path);
    assert_video(env, &row, &sha256(path));
    row
}

fn upload_requests(env: &Env) -> u64 {
    env.emulator.stats().upload_requests
}

fn write_file(path: &Path, size: u64, seed: u64) -> PathBuf {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    write_random(path, size, seed);
    path.to_path_buf()
}

// Readiness ────────────────────────────────────────────────────────────────

#[test]
fn a_slowly_written_file_is_uploaded_once_after_it_stops_changing() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "500ms", ""));
    let d = Daemon::ready(&env);

    let f = env.media.join("slow take.mp4");
    let mut h = std::fs::File::create(&f).unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let mut block = vec![0u8; 200 * 1024];
    // Ten appends 200 ms apart: the file changes for 2 s, never pausing as
    // long as the 500 ms settle time.
    for i in 0..10 {
        rng.fill(&mut block);
        h.write_all(&block).unwrap();
        let next = Instant::now() + Duration::from_millis(200);
        while Instant::now() < next {
            assert_eq!(
                upload_requests(&env),
                0,
                "sent while still being written (after append {i}):\n{}",
                d.log()
            );
            let rs = rows(&env);
            assert!(
                rs.iter().all(|r| r.state == FileState::Settling),
                "queued while still being written (after append {i}): {rs:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(h);
    let last_change = Instant::now();

    let mut first_request = None;
    assert!(
        wait_until(WAIT, || {
            let sent = upload_requests(&env) > 0;
            if sent {
                first_request = Some(Instant::now());
            }
            sent
        }),
        "never uploaded:\n{}",
        d.log()
    );
    let quiet = first_request.unwrap() - last_change;
    assert!(
        quiet >= Duration::from_millis(400),
        "uploaded {quiet:?} after the last write, before it settled for 500 ms"
    );

    let row = assert_uploaded(&env, &d, &f);
    assert_eq!(row.identity.size, 10 * 200 * 1024, "{row:?}");
    assert_eq!(rows(&env).len(), 1, "one row: {:#?}", rows(&env));
    assert_eq!(env.videos().len(), 1, "one video: {:?}", env.videos());
    assert_eq!(upload_requests(&env), 1, "one request for a 2 MB file");
    stop_ok(d);
}

// Temporary names ──────────────────────────────────────────────────────────

#[test]
fn a_part_file_renamed_to_mp4_is_uploaded_once_as_the_mp4() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let d = Daemon::ready(&env);

    let part = env.file("clip.mp4.part", 2 * MIB, 2);
    // Written after the .part: once it is uploaded, the .part has had its
    // events handled and more than its settle time.
    let marker = env.file("marker.mp4", 1000, 3);
    assert_uploaded(&env, &d, &marker);
    assert!(
        rows_at(&env, &part).is_empty(),
        "a .part file was journaled"
    );

    let mp4 = env.media.join("clip.mp4");
    std::fs::rename(&part, &mp4).unwrap();
    let row = assert_uploaded(&env, &d, &mp4);
    assert_eq!(
        env.video(row.video_id.as_deref().unwrap()).title,
        "clip.mp4"
    );

    let all = rows(&env);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all.iter()
            .all(|r| !r.path().as_os_str().as_bytes().ends_with(b".part")),
        "{all:#?}"
    );
    assert_eq!(env.videos().len(), 2, "{:?}", env.videos());
    assert_eq!(upload_requests(&env), 2);
    stop_ok(d);
}

// New directories ──────────────────────────────────────────────────────────

#[test]
fn files_in_a_new_subdirectory_are_uploaded() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let d = Daemon::ready(&env);

    // The tree and its files appear at once: the files exist before any
    // watch on their directories can.
    let a = write_file(&env.media.join("day1/a.mp4"), 300_000, 4);
    let b = write_file(&env.media.join("day1/cam2/b.mov"), 9 * MIB, 5);
    assert_uploaded(&env, &d, &a);
    assert_uploaded(&env, &d, &b);
    // And a file written later into the now watched subdirectory.
    let c = write_file(&env.media.join("day1/cam2/c.mkv"), 50_000, 6);
    assert_uploaded(&env, &d, &c);
    assert_eq!(env.videos().len(), 3, "{:?}", env.videos());
    assert_eq!(rows(&env).len(), 3, "{:#?}", rows(&env));
    stop_ok(d);
}

// Start-up and restart ─────────────────────────────────────────────────────

#[test]
fn files_present_at_start_are_uploaded_and_a_restart_uploads_nothing_again() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let files = [
        env.file("a.mp4", 100_000, 7),
        write_file(&env.media.join("sub/b.mov"), 12 * MIB, 8),
        env.file("c.mkv", 1, 9),
    ];
    let d = Daemon::ready(&env);
    for f in &files {
        assert_uploaded(&env, &d, f);
    }
    let requests = upload_requests(&env);
    // 12 MiB in 8 MiB chunks: two requests; one each for the others.
    assert_eq!(requests, 4);
    let log = stop_ok(d);
    assert!(log.contains("stopped"), "{log}");

    let d = Daemon::ready(&env);
    assert!(d.log().contains("already_done=3"), "{}", d.log());
    // A new file goes through; its upload proves the daemon is working,
    // and the old ones were not sent again meanwhile.
    let e = env.file("e.mp4", 2000, 10);
    assert_uploaded(&env, &d, &e);
    assert_eq!(upload_requests(&env), requests + 1, "{}", d.log());
    assert_eq!(env.videos().len(), 4, "{:?}", env.videos());
    assert_eq!(rows(&env).len(), 4, "{:#?}", rows(&env));
    stop_ok(d);
}

#[test]
fn a_restart_mid_upload_resumes_the_same_video() {
    let env = Env::new();
    env.write_config("5MiB", &watch(&env.media, "300ms", ""));
    let f = env.file("long take.mxf", 30 * MIB, 37);
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(300))); 8]);
    let d = Daemon::ready(&env);
    assert!(
        wait_until(WAIT, || rows_at(&env, &f)
            .first()
            .is_some_and(|r| r.bytes_uploaded > 0)),
        "the upload never started:\n{}",
        d.log()
    );
    stop_ok(d);
    let row = rows_at(&env, &f).pop().unwrap();
    assert_eq!(row.state, FileState::Queued, "{row:?}");
    assert!(row.bytes_uploaded < 30 * MIB, "stopped too late: {row:?}");
    let video = row.video_id.clone().expect("the videoId is journaled");

    let d = Daemon::ready(&env);
    let done = assert_uploaded(&env, &d, &f);
    assert_eq!(done.id, row.id);
    assert_eq!(done.video_id.as_deref(), Some(video.as_str()), "same video");
    assert_eq!(env.videos().len(), 1, "{:?}", env.videos());
    let sent = env.emulator.stats().body_bytes;
    assert!(sent <= 35 * MIB, "at most one chunk sent again: {sent}");
    stop_ok(d);
}

#[test]
fn a_file_replaced_after_its_upload_is_uploaded_again_as_a_new_file() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let d = Daemon::ready(&env);
    let f = env.file("a.mp4", 5000, 38);
    let first = assert_uploaded(&env, &d, &f);
    // A new version copied in the usual way: a hidden temp renamed over it.
    let tmp = env.file(".a.mp4.copying", 6000, 39);
    std::fs::rename(&tmp, &f).unwrap();
    let mut second = None;
    assert!(
        wait_until(WAIT, || {
            second = rows_at(&env, &f)
                .into_iter()
                .find(|r| r.id != first.id && r.state == FileState::Done);
            second.is_some()
        }),
        "the new version was not uploaded: {:#?}\n{}",
        rows(&env),
        d.log()
    );
    assert_video(&env, &second.unwrap(), &sha256(&f));
    assert_eq!(env.videos().len(), 2, "{:?}", env.videos());
    stop_ok(d);
}

// Name rules ───────────────────────────────────────────────────────────────

/// Names that must never be journaled with the include and exclude below.
const UNWANTED: &[&str] = &[
    ".hidden.mp4",
    "x.tmp",
    "x.crdownload",
    "x.mp4.part",
    "~x.mp4",
    "._x.mp4",
    "Thumbs.db",
    "@eaDir/thumb.mp4",
    ".cache/inner.mp4",
    "clip_proxy.mp4",
    "notes.txt",
    ".DS_Store",
    "x.swp",
    "x.partial",
];

#[test]
fn ignored_excluded_and_not_included_names_are_never_journaled() {
    let env = Env::new();
    // The user's include takes .tmp, .crdownload, .db, .part…: the
    // built-in ignore list must win anyway.
    let extra = "include = [\"*.mp4\", \"*.tmp\", \"*.crdownload\", \"*.db\", \"*.part\", \
                 \"*.swp\", \"*.partial\", \".DS_Store\"]\n\
                 exclude = [\"*_proxy.mp4\"]";
    env.write_config("8MiB", &watch(&env.media, "300ms", extra));
    for (i, name) in UNWANTED.iter().enumerate() {
        write_file(&env.media.join(name), 1000, 20 + i as u64);
    }
    let before = env.file("wanted-before.mp4", 1000, 40);
    let d = Daemon::ready(&env);
    assert_uploaded(&env, &d, &before);

    // The same names appearing while it runs, in a new directory; the
    // wanted file last, so once it is done the others were seen.
    let live = env.media.join("live");
    std::fs::create_dir(&live).unwrap();
    for (i, name) in UNWANTED.iter().enumerate() {
        write_file(&live.join(name), 1000, 60 + i as u64);
    }
    let after = write_file(&live.join("wanted-after.mp4"), 1000, 41);
    assert_uploaded(&env, &d, &after);

    let all = rows(&env);
    let paths: Vec<PathBuf> = all.iter().map(FileRow::path).collect();
    assert_eq!(paths, vec![before, after], "{all:#?}");
    assert_eq!(env.videos().len(), 2, "{:?}", env.videos());
    assert_eq!(upload_requests(&env), 2);
    stop_ok(d);
}

// Polling ──────────────────────────────────────────────────────────────────

#[test]
fn poll_mode_uploads_files_present_new_and_in_new_directories() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "500ms", "mode = \"poll\""));
    let before = env.file("before.mp4", 5000, 11);
    let d = Daemon::ready(&env);
    assert!(d.log().contains("polling the watch folder"), "{}", d.log());
    assert_uploaded(&env, &d, &before);
    let new = env.file("new.mov", 6 * MIB, 12);
    let deep = write_file(&env.media.join("a/b/deep.mp4"), 7000, 13);
    assert_uploaded(&env, &d, &new);
    assert_uploaded(&env, &d, &deep);
    assert_eq!(env.videos().len(), 3, "{:?}", env.videos());
    stop_ok(d);
}

// After upload ─────────────────────────────────────────────────────────────

#[test]
fn after_upload_delete_removes_the_file_only_once_it_is_done() {
    let env = Env::new();
    env.write_config(
        "5MiB",
        &watch(&env.media, "300ms", "after_upload = \"delete\""),
    );
    let d = Daemon::ready(&env);
    let f = write_file(&env.media.join("cam/clip.mp4"), 12 * MIB, 14);
    let sha = sha256(&f);
    // Slow chunks, so the file sits in the folder while it is uploading.
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(200))); 3]);
    let mut seen_uploading = false;
    let vanished = wait_until(WAIT, || {
        // The state first: if the file is missing afterwards, the row must
        // have been done before it was deleted.
        let state = rows_at(&env, &f).first().map(|r| r.state);
        seen_uploading |= state == Some(FileState::Uploading);
        if f.exists() {
            return false;
        }
        assert_eq!(
            state,
            Some(FileState::Done),
            "deleted before its upload was done:\n{}",
            d.log()
        );
        true
    });
    assert!(vanished, "never deleted:\n{}", d.log());
    assert!(seen_uploading, "the file was never seen uploading");
    let row = wait_done(&env, &d, &f);
    assert_video(&env, &row, &sha);
    assert!(env.media.join("cam").is_dir(), "only the file is removed");
    stop_ok(d);
}

#[test]
fn after_upload_move_keeps_the_relative_path_and_writes_a_sidecar() {
    let env = Env::new();
    // move_to inside the watch folder: the moved files must not come back
    // as new ones.
    env.write_config(
        "8MiB",
        &watch(
            &env.media,
            "300ms",
            "after_upload = \"move\"\nmove_to = \"done\"\nsidecar = true",
        ),
    );
    let d = Daemon::ready(&env);
    let f = write_file(&env.media.join("cam1/day 2/clip.mp4"), 3 * MIB, 15);
    let sha = sha256(&f);
    let row = wait_done(&env, &d, &f);
    assert_video(&env, &row, &sha);
    let moved = env.media.join("done/cam1/day 2/clip.mp4");
    assert!(
        wait_until(WAIT, || moved.exists() && !f.exists()),
        "not moved to {}:\n{}",
        moved.display(),
        d.log()
    );
    assert_eq!(sha256(&moved), sha);
    let side = env.media.join("done/cam1/day 2/clip.mp4.ingestd.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&side).unwrap()).unwrap();
    assert_eq!(json["videoId"].as_str(), row.video_id.as_deref(), "{json}");
    assert_eq!(json["sha256"].as_str(), Some(sha.as_str()), "{json}");
    assert_eq!(json["size"], 3 * MIB, "{json}");
    assert!(
        !f.with_file_name("clip.mp4.ingestd.json").exists(),
        "no sidecar left at the old place"
    );

    // A second file: once it is moved too, the first move has had every
    // chance to be seen as a new file.
    let g = env.file("g.mp4", 4000, 16);
    wait_done(&env, &d, &g);
    let g_moved = env.media.join("done/g.mp4");
    assert!(
        wait_until(WAIT, || g_moved.exists()),
        "g.mp4 not moved:\n{}",
        d.log()
    );
    // A row of the file caught half-written may have gone `gone` when it
    // grew (a scan racing the events under load); what must not be is a
    // row for a moved file.
    let all = rows(&env);
    let live: Vec<_> = all.iter().filter(|r| r.state != FileState::Gone).collect();
    assert_eq!(live.len(), 2, "moved files journaled again: {all:#?}");
    assert!(
        all.iter().all(|r| !r.identity.rel_path.starts_with("done")),
        "a moved file journaled again: {all:#?}"
    );
    assert_eq!(env.videos().len(), 2, "{:?}", env.videos());
    stop_ok(d);
}

#[test]
fn a_file_not_done_is_never_deleted_nor_moved() {
    let env = Env::new();
    let del = env.dir.path().join("in-delete");
    let mov = env.dir.path().join("in-move");
    let done_dir = env.dir.path().join("moved");
    std::fs::create_dir_all(&del).unwrap();
    std::fs::create_dir_all(&mov).unwrap();
    let cfg = watch(&del, "300ms", "after_upload = \"delete\"")
        + &watch(
            &mov,
            "300ms",
            &format!(
                "after_upload = \"move\"\nmove_to = {}\nsidecar = true",
                toml_path(&done_dir)
            ),
        );
    env.write_config("8MiB", &cfg);
    env.set_token("to1wrongWRONGwrongWRONGx");
    let d = Daemon::ready(&env);
    let a = write_file(&del.join("a.mp4"), 4000, 17);
    let b = write_file(&mov.join("sub/b.mp4"), 5000, 18);
    assert!(
        d.wait_log("UPLOADS PAUSED", WAIT),
        "the refused token was not reported:\n{}",
        d.log()
    );
    assert!(
        wait_until(WAIT, || [&a, &b].iter().all(|p| {
            rows_at(&env, p)
                .first()
                .is_some_and(|r| r.state == FileState::Queued)
        })),
        "both files wait in the queue: {:#?}",
        rows(&env)
    );
    // A window in which nothing may happen to them.
    std::thread::sleep(Duration::from_secs(1));
    assert!(a.exists(), "deleted without an upload:\n{}", d.log());
    assert!(b.exists(), "moved without an upload:\n{}", d.log());
    assert!(!done_dir.join("sub/b.mp4").exists());
    assert!(!done_dir.join("sub/b.mp4.ingestd.json").exists());
    assert!(
        rows(&env).iter().all(|r| r.state == FileState::Queued),
        "{:#?}",
        rows(&env)
    );

    // With a valid token they go, then (only then) are deleted and moved.
    let (sha_a, sha_b) = (sha256(&a), sha256(&b));
    env.set_token(TOKEN);
    signal(&d.child, 1);
    let ra = wait_done(&env, &d, &a);
    let rb = wait_done(&env, &d, &b);
    assert_video(&env, &ra, &sha_a);
    assert_video(&env, &rb, &sha_b);
    assert!(
        wait_until(WAIT, || !a.exists() && done_dir.join("sub/b.mp4").exists()),
        "after_upload not applied once done:\n{}",
        d.log()
    );
    assert!(!b.exists());
    assert!(done_dir.join("sub/b.mp4.ingestd.json").exists());
    stop_ok(d);
}

// Deleted during upload ────────────────────────────────────────────────────

#[test]
fn a_file_deleted_while_uploading_ends_gone_and_the_daemon_goes_on() {
    let env = Env::new();
    env.write_config("5MiB", &watch(&env.media, "300ms", ""));
    let f = env.file("vanishing.mp4", 30 * MIB, 19);
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(300))); 10]);
    let mut d = Daemon::ready(&env);
    assert!(
        wait_until(WAIT, || rows_at(&env, &f)
            .first()
            .is_some_and(|r| r.bytes_uploaded > 0)),
        "the upload never started:\n{}",
        d.log()
    );
    std::fs::remove_file(&f).unwrap();
    let row = wait_state(&env, &d, &f, FileState::Gone);
    assert!(
        row.bytes_uploaded < 30 * MIB,
        "deleted too late to test anything: {row:?}"
    );
    let why = row.last_error.clone().unwrap_or_default();
    assert!(why.contains("deleted or renamed"), "{row:?}");
    assert!(
        d.wait_log("abandoning the upload", WAIT),
        "no log line says the upload was abandoned:\n{}",
        d.log()
    );
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("abandoning the upload"))
        .unwrap();
    assert!(
        line.contains("vanishing.mp4") && line.contains("deleted or renamed"),
        "the log line names neither the file nor why: {line}"
    );
    assert!(d.running(), "the daemon died:\n{log}");
    assert!(
        env.videos().iter().all(|v| !v.complete),
        "{:?}",
        env.videos()
    );

    let later = env.file("later.mp4", 6 * MIB, 20);
    assert_uploaded(&env, &d, &later);
    assert_eq!(rows(&env).len(), 2, "{:#?}", rows(&env));
    stop_ok(d);
}

// Rewritten during upload ──────────────────────────────────────────────────

#[test]
fn a_file_rewritten_while_uploading_is_abandoned_and_its_new_content_uploaded() {
    let env = Env::new();
    env.write_config("5MiB", &watch(&env.media, "300ms", ""));
    let f = env.file("rewritten.mp4", 30 * MIB, 21);
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(300))); 10]);
    let d = Daemon::ready(&env);
    let mut old = None;
    assert!(
        wait_until(WAIT, || {
            old = rows_at(&env, &f).into_iter().find(|r| r.bytes_uploaded > 0);
            old.is_some()
        }),
        "the upload never started:\n{}",
        d.log()
    );
    let old = old.unwrap();
    // Truncated and rewritten in place (same inode), shorter.
    write_random(&f, 3 * MIB, 22);
    let new_sha = sha256(&f);

    let gone = wait_state(&env, &d, &f, FileState::Gone);
    assert_eq!(gone.id, old.id, "the old row is the one abandoned");
    assert!(
        gone.last_error.as_deref().unwrap_or("").contains("changed"),
        "{gone:?}"
    );
    let new = wait_done(&env, &d, &f);
    assert_ne!(new.id, old.id, "the new content is a new row");
    assert_eq!(new.identity.size, 3 * MIB);
    assert_video(&env, &new, &new_sha);
    // The worker says it at its next chunk; or, when the short read failed
    // the chunk in flight first, the watch stage says it for the waiting row.
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains("rewritten.mp4")
            && l.contains("changed")
            && (l.contains("abandoning the upload") || l.contains("marked gone"))),
        "no log line says the upload was abandoned:\n{log}"
    );
    let complete: Vec<_> = env.videos().into_iter().filter(|v| v.complete).collect();
    assert_eq!(
        complete.len(),
        1,
        "only the new content completes: {complete:?}"
    );
    assert_eq!(rows(&env).len(), 2, "{:#?}", rows(&env));
    stop_ok(d);
}

// run --once ───────────────────────────────────────────────────────────────

#[test]
fn run_once_uploads_what_is_there_and_exits_0() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let files = [
        env.file("a.mp4", 1000, 23),
        write_file(&env.media.join("x/y/b.mxf"), 10 * MIB, 24),
        env.file("c.mov", 70_000, 25),
    ];
    env.file("skip.txt", 10, 26);
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = rows(&env);
    assert_eq!(all.len(), 3, "{all:#?}");
    for f in &files {
        let row = all.iter().find(|r| &r.path() == f).expect("journaled");
        assert_eq!(row.state, FileState::Done, "{row:?}");
        assert_video(&env, row, &sha256(f));
    }
    // Again: nothing to do, nothing sent.
    let requests = upload_requests(&env);
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(upload_requests(&env), requests);
    assert_eq!(env.videos().len(), 3);
}

#[test]
fn run_once_leaves_a_file_still_being_written_for_the_next_run() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "800ms", ""));
    let f = env.media.join("slow.mp4");
    let mut h = std::fs::File::create(&f).unwrap();
    let mut rng = fastrand::Rng::with_seed(27);
    let mut block = vec![0u8; 100 * 1024];
    rng.fill(&mut block);
    h.write_all(&block).unwrap();

    let mut child = Daemon::spawn(&env, &["run", "--once"]);
    // Appends 200 ms apart while it runs, until it has exited.
    let mut appends: u64 = 0;
    while child.running() && appends < 100 {
        std::thread::sleep(Duration::from_millis(200));
        rng.fill(&mut block);
        h.write_all(&block).unwrap();
        appends += 1;
    }
    let (code, log) = child.wait(WAIT);
    assert_eq!(
        code,
        Some(0),
        "a file still being written is no failure:\n{log}"
    );
    assert!(
        appends < 100,
        "run --once waited on a file that never stopped growing:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("not ready") && l.contains("slow.mp4")),
        "the file left for the next run is not named:\n{log}"
    );
    assert!(env.videos().is_empty(), "{:?}", env.videos());
    let row = rows_at(&env, &f).pop().expect("journaled");
    assert_eq!(row.state, FileState::Settling, "{row:?}");

    // The writer is done: the next run uploads it, whole.
    drop(h);
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let row = rows_at(&env, &f).pop().expect("journaled");
    assert_eq!(row.state, FileState::Done, "{row:?}\n{}", text(&out));
    assert_eq!(row.identity.size, (appends + 1) * 100 * 1024, "{row:?}");
    assert_video(&env, &row, &sha256(&f));
    assert_eq!(env.videos().len(), 1, "{:?}", env.videos());
}

#[test]
fn run_once_exits_1_when_a_file_failed() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let a = env.file("a.mp4", 1000, 28);
    env.emulator.push_faults(vec![Some(Fault::Reject(
        "uploaded-file-invalid-file".into(),
    ))]);
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let row = rows_at(&env, &a).pop().expect("journaled");
    assert_eq!(row.state, FileState::Failed, "{row:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a.mp4"),
        "{}",
        text(&out)
    );
}

// Bad input ────────────────────────────────────────────────────────────────

#[test]
fn a_missing_watch_folder_is_named_and_the_others_keep_working() {
    let env = Env::new();
    let missing = env.dir.path().join("not-mounted-yet");
    env.write_config(
        "8MiB",
        &(watch(&missing, "300ms", "") + &watch(&env.media, "300ms", "")),
    );
    let d = Daemon::ready(&env);
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("does not exist"))
        .unwrap_or_else(|| panic!("no error about the missing folder:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(missing.to_str().unwrap()),
        "the error does not name the folder: {line}"
    );
    let f = env.file("clip.mp4", 3000, 29);
    assert_uploaded(&env, &d, &f);
    stop_ok(d);

    // `run --once` says it too, and uploads the other folder's files.
    let g = env.file("clip2.mp4", 4000, 36);
    let out = env.run(&["run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("does not exist") && l.contains(missing.to_str().unwrap())),
        "{}",
        text(&out)
    );
    let row = rows_at(&env, &g).pop().expect("journaled");
    assert_eq!(row.state, FileState::Done, "{row:?}\n{}", text(&out));
    // A job that could not see one of its folders (an unmounted share)
    // must not look successful to cron.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("watch folder not scanned"),
        "{}",
        text(&out)
    );
}

/// The daemon looks for an unavailable folder again every 30 s (not
/// configurable), so this one takes that long.
#[test]
fn a_watch_folder_that_appears_later_is_watched() {
    let env = Env::new();
    let late = env.dir.path().join("late");
    env.write_config(
        "8MiB",
        &(watch(&late, "300ms", "") + &watch(&env.media, "300ms", "")),
    );
    let d = Daemon::ready(&env);
    assert!(d.log().contains("does not exist"), "{}", d.log());
    let f = write_file(&late.join("sub/clip.mp4"), 3000, 30);
    let found = wait_until(Duration::from_secs(45), || {
        rows_at(&env, &f)
            .first()
            .is_some_and(|r| r.state == FileState::Done)
    });
    assert!(found, "the folder was never picked up:\n{}", d.log());
    assert_uploaded(&env, &d, &f);
    assert!(d.log().contains("available again"), "{}", d.log());
    stop_ok(d);
}

#[test]
fn overlapping_watch_folders_are_refused_naming_both() {
    let env = Env::new();
    let inner = env.media.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    let cases = [
        (env.media.clone(), inner.clone()),
        (inner.clone(), env.media.clone()),
        (env.media.clone(), env.media.join(".")),
    ];
    for (first, second) in cases {
        env.write_config(
            "8MiB",
            &(watch(&first, "300ms", "") + &watch(&second, "300ms", "")),
        );
        for args in [&["run"][..], &["run", "--once"][..]] {
            let out = env.run(args);
            assert_eq!(out.status.code(), Some(78), "{args:?}: {}", text(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            for p in [&first, &second] {
                assert!(
                    err.contains(p.to_str().unwrap()),
                    "{args:?}: the message does not name {}: {err}",
                    p.display()
                );
            }
        }
    }
    assert!(
        !env.journal.exists(),
        "a refused config touched the journal"
    );
    assert_eq!(upload_requests(&env), 0);
}

#[test]
fn names_with_a_newline_or_invalid_utf8_are_uploaded() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let before = env.media.join(OsStr::from_bytes(b"caf\xe9 before.mp4"));
    write_random(&before, 4000, 31);
    let d = Daemon::ready(&env);
    let newline = env.media.join("two\nlines.mp4");
    let latin1 = env.media.join(OsStr::from_bytes(b"sub/caf\xe9 \xff.mov"));
    write_file(&newline, 5000, 32);
    write_file(&latin1, 6000, 33);
    for f in [&before, &newline, &latin1] {
        assert_uploaded(&env, &d, f);
    }
    assert_eq!(env.videos().len(), 3, "{:?}", env.videos());
    stop_ok(d);
}

/// Paths in log lines are escaped (as the watch stage does), so a name
/// holding a newline stays on its line.
#[test]

fn a_newline_in_a_file_name_cannot_forge_a_log_line() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let d = Daemon::ready(&env);
    let forged = env.media.join("x.mp4\nERROR forged line.mp4");
    write_file(&forged, 5000, 34);
    assert_uploaded(&env, &d, &forged);
    let log = stop_ok(d);
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("ERROR forged"))
        .collect();
    assert!(
        bad.is_empty(),
        "a file name forged log lines: {bad:?}\n{log}"
    );
}

/// A watch path that is a symlink to another watch folder is an overlap
/// like any other: refused, or at least no file uploaded twice.
#[test]

fn a_watch_folder_aliased_through_a_symlink_never_uploads_a_file_twice() {
    let env = Env::new();
    let alias = env.dir.path().join("alias");
    std::os::unix::fs::symlink(&env.media, &alias).unwrap();
    env.write_config(
        "8MiB",
        &(watch(&env.media, "300ms", "") + &watch(&alias, "300ms", "")),
    );
    env.file("a.mp4", 1000, 35);
    let out = env.run(&["run", "--once"]);
    assert!(
        env.videos().len() <= 1,
        "one file, uploaded once per alias of its folder: {:#?}\n{}",
        rows(&env),
        text(&out)
    );
    if out.status.success() {
        assert_eq!(env.videos().len(), 1, "{}", text(&out));
    } else {
        // Refused, like any other overlap: it must say which folders.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(alias.to_str().unwrap()), "{}", text(&out));
    }
}

// Reload ─────────────────────────────────────────────────────────────────

#[test]
fn sighup_applies_a_new_folder_list_and_refuses_a_bad_config() {
    let env = Env::new();
    let a_dir = env.media.join("a");
    let b_dir = env.media.join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    env.write_config("8MiB", &watch(&a_dir, "300ms", ""));
    let d = Daemon::ready(&env);
    let first = write_file(&a_dir.join("one.mp4"), 20_000, 40);
    assert_uploaded(&env, &d, &first);

    // Folder a out, folder b in, more workers: applied without a restart.
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    let swapped = cfg
        .replace(&toml_path(&a_dir), &toml_path(&b_dir))
        .replace("concurrency = 2", "concurrency = 3");
    std::fs::write(&env.config, swapped).unwrap();
    signal(&d.child, 1);
    assert!(d.wait_log("configuration reloaded", WAIT), "{}", d.log());
    assert!(
        d.wait_log("watch folders changed: restarting the watch stage", WAIT),
        "{}",
        d.log()
    );
    let in_b = write_file(&b_dir.join("two.mp4"), 20_000, 41);
    let in_a = write_file(&a_dir.join("three.mp4"), 20_000, 42);
    assert_uploaded(&env, &d, &in_b);
    // Written at the same moment as two.mp4, same settle: had folder a still
    // been watched, three.mp4 would be journaled by now.
    assert!(rows_at(&env, &in_a).is_empty(), "folder a is still watched");

    // What only a restart can apply is named, not silently ignored.
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        cfg.replace("chunk_size = \"8MiB\"", "chunk_size = \"16MiB\""),
    )
    .unwrap();
    signal(&d.child, 1);
    assert!(
        d.wait_log("applied only by a restart: api.chunk_size;", WAIT),
        "{}",
        d.log()
    );

    // A bad configuration is refused; the old one keeps running.
    std::fs::write(&env.config, "[api]\nchunk_size = \"1KiB\"\n").unwrap();
    signal(&d.child, 1);
    assert!(
        d.wait_log("the new configuration is refused", WAIT),
        "{}",
        d.log()
    );
    let four = write_file(&b_dir.join("four.mp4"), 20_000, 43);
    assert_uploaded(&env, &d, &four);
    stop_ok(d);
}

// Review regressions ──────────────────────────────────────────────────────

/// Started with no watch folder, a reload that adds one must watch it.
#[test]
fn review_a_folder_added_by_reload_after_none_is_watched() {
    let env = Env::new();
    let a_dir = env.media.join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    env.write_config("8MiB", "");
    let d = Daemon::ready(&env);
    env.write_config("8MiB", &watch(&a_dir, "300ms", ""));
    signal(&d.child, 1);
    assert!(d.wait_log("configuration reloaded", WAIT), "{}", d.log());
    let f = write_file(&a_dir.join("one.mp4"), 20_000, 40);
    assert_uploaded(&env, &d, &f);
    stop_ok(d);
}

/// `ingestd upload` of a watched file named through `..` must not make a
/// second row (and a second video) once the watch stage sees the file.
#[test]
fn review_upload_through_dotdot_then_run_once_uploads_once() {
    let env = Env::new();
    let a_dir = env.media.join("a");
    let other = env.media.join("other");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    env.write_config("8MiB", &watch(&a_dir, "300ms", ""));
    let f = write_file(&a_dir.join("one.mp4"), 20_000, 40);
    let dotted = other.join("..").join("a").join(f.file_name().unwrap());
    let out = env.run(&["upload", dotted.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = env.run(&["run", "--once"]);
    assert_eq!(env.videos().len(), 1, "uploaded twice: {}", text(&out));
}
