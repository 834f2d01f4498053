//! What happens to the journal itself: damaged or emptied while ingestd was
//! stopped, its disk full while it runs, and wall-clock jumps (seen by
//! ingestd only through the times written in its journal).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use ingestd::journal::{now_ms, FileIdentity, FileState, Journal};

fn watch_config(env: &Env, journal: &Path) -> String {
    format!(
        "[api]\nbase_url = \"{}\"\ntoken_file = \"{}\"\nchunk_size = \"8MiB\"\n\n\
         [journal]\npath = \"{}\"\n\n[upload]\nconcurrency = 2\n\
         playable_timeout = \"0s\"\n\n\
         [[watch]]\npath = \"{}\"\nsettle = \"200ms\"\n",
        env.emulator.base_url(),
        env.token_file.display(),
        journal.display(),
        env.media.display(),
    )
}

// Some tests put the journal on a 1 MiB tmpfs: the playable watch (whose
// writes are not what they test) is off, so that its log fits there.

/// A journal with `n` done files and some real ones, made by the daemon.
fn journal_with_history(env: &Env, n: usize) {
    let files: Vec<PathBuf> = (0..3)
        .map(|i| env.file(&format!("real-{i}.mp4"), 50_000, i))
        .collect();
    std::fs::write(&env.config, watch_config(env, &env.journal)).unwrap();
    let out = env.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rows(env).len(), files.len());
    // Many more rows, so the file spans many pages.
    let mut j = Journal::open(&env.journal).unwrap();
    let fake: Vec<FileIdentity> = (0..n)
        .map(|i| FileIdentity {
            root: PathBuf::from("/srv/old-capture"),
            rel_path: PathBuf::from(format!("day-{:03}/clip-{i:06}.mov", i / 100)),
            size: 1_000_000 + i as u64,
            mtime_ns: 1_700_000_000_000_000_000,
            dev: 42,
            inode: i as u64,
            ctime_ns: None,
        })
        .collect();
    j.add_files(&fake, FileState::Queued).unwrap();
    drop(j);
}

fn assert_refused_untouched(env: &Env, what: &str, expect: &str) {
    let before = std::fs::read(&env.journal).unwrap();
    let requests = env.emulator.stats().upload_requests;
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
    let msg = text(&out);
    assert!(msg.contains(expect), "{what}: {msg}");
    assert!(
        msg.contains(&env.journal.display().to_string()),
        "{what}: the message names the journal: {msg}"
    );
    assert_eq!(
        std::fs::read(&env.journal).unwrap(),
        before,
        "{what}: the journal was left as it was"
    );
    assert_eq!(
        env.emulator.stats().upload_requests,
        requests,
        "{what}: nothing was uploaded again"
    );
    // `status` says so too, and does not invent a fresh journal either.
    let out = env.run(&["status"]);
    assert!(!out.status.success(), "{what}: status: {}", text(&out));
}

#[test]
fn a_journal_damaged_while_stopped_is_refused_with_what_to_do() {
    for (what, damage) in [
        ("a scribbled page", 0u8),
        ("a zeroed page", 1),
        ("a truncated file", 2),
    ] {
        let env = Env::new();
        journal_with_history(&env, 5_000);
        let len = std::fs::metadata(&env.journal).unwrap().len();
        assert!(len > 100 * 4096, "{len}: the journal spans many pages");
        match damage {
            0 => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&env.journal)
                    .unwrap();
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(len / 2 + 100)).unwrap();
                let mut rng = fastrand::Rng::with_seed(7);
                let noise: Vec<u8> = (0..3000).map(|_| rng.u8(..)).collect();
                f.write_all(&noise).unwrap();
            }
            1 => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&env.journal)
                    .unwrap();
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(4096 * 2)).unwrap();
                f.write_all(&[0u8; 4096]).unwrap();
            }
            _ => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&env.journal)
                    .unwrap();
                f.set_len(len / 2).unwrap();
            }
        }
        assert_refused_untouched(&env, what, "is damaged");
    }
}

#[test]
fn a_journal_emptied_while_stopped_is_refused_not_started_afresh() {
    let env = Env::new();
    journal_with_history(&env, 10);
    std::fs::File::create(&env.journal).unwrap(); // truncated to 0 bytes
    let requests = env.emulator.stats().upload_requests;
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("was deleted, moved or truncated"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::metadata(&env.journal).unwrap().len(), 0);
    assert_eq!(env.emulator.stats().upload_requests, requests);
}

#[test]
fn a_first_start_that_failed_before_making_the_journal_does_not_block_the_next() {
    let env = Env::new();
    let f = env.file("a.mp4", 10_000, 1);
    // The journal's directory is a file: the first start fails after the
    // lock file is made (beside it, in the parent) but before the journal.
    let journal = env.dir.path().join("journal.db");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(&env.config, watch_config(&env, &journal)).unwrap();
    let out = env.run(&["run", "--once"]);
    assert!(!out.status.success(), "{}", text(&out));
    std::fs::remove_dir(&journal).unwrap();
    let out = env.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows = ingestd::journal::Journal::open_read_only(&journal)
        .unwrap()
        .list(None)
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, FileState::Done);
    assert_eq!(rows[0].path(), std::fs::canonicalize(f).unwrap());
}

/// `next_attempt_at` is wall-clock time. A clock set back after a retry was
/// scheduled (or a journal written by a machine whose clock was ahead) leaves
/// retries far in the future; a clock set forward leaves them in the past.
/// Either way the files go now: a retry is never further away than the
/// longest backoff.
#[test]
fn retries_scheduled_by_a_clock_that_jumped_are_made_now_not_in_a_month() {
    let env = Env::new();
    std::fs::write(&env.config, watch_config(&env, &env.journal)).unwrap();
    let root = std::fs::canonicalize(&env.media).unwrap();
    let month_ms: i64 = 30 * 24 * 3600 * 1000;
    let mut ids = Vec::new();
    {
        let mut j = Journal::open(&env.journal).unwrap();
        for (i, at) in [now_ms() + month_ms, now_ms() - month_ms, 0]
            .into_iter()
            .enumerate()
        {
            let p = env.file(&format!("clip-{i}.mp4"), 200_000, i as u64);
            let meta = std::fs::metadata(&p).unwrap();
            let ident =
                FileIdentity::from_metadata(&root, Path::new(p.file_name().unwrap()), &meta);
            let added = j.add_file(&ident, FileState::Queued).unwrap();
            let row = j
                .claim_next(now_ms(), Duration::from_secs(300), Some(&[added.id]))
                .unwrap()
                .unwrap();
            j.mark_retrying(row.id, 3, at, "503 from the server")
                .unwrap();
            ids.push(row.id);
        }
    }
    let child = env.spawn(&["run"]);
    let done = wait_until(Duration::from_secs(30), || {
        let rows = rows(&env);
        rows.len() == 3 && rows.iter().all(|r| r.state == FileState::Done)
    });
    signal(&child, 15);
    let out = wait_child(child, Duration::from_secs(40));
    assert!(done, "{:#?}\n{}", rows(&env), text(&out));
    assert_eq!(env.videos().iter().filter(|v| v.complete).count(), 3);
}

/// A camera with a wrong clock: mtimes far in the past or the future do not
/// change readiness (the settle clock is ingestd's own monotonic clock).
#[test]
fn files_with_mtimes_far_in_the_past_or_future_are_uploaded() {
    let env = Env::new();
    std::fs::write(&env.config, watch_config(&env, &env.journal)).unwrap();
    let year = Duration::from_secs(365 * 24 * 3600);
    let now = std::time::SystemTime::now();
    for (i, t) in [
        std::time::UNIX_EPOCH,
        now - 20 * year,
        now + 20 * year,
        now + Duration::from_secs(3600),
    ]
    .into_iter()
    .enumerate()
    {
        let p = env.file(&format!("cam-{i}.mp4"), 100_000, i as u64);
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(t).unwrap();
    }
    let out = env.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows = rows(&env);
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert!(rows.iter().all(|r| r.state == FileState::Done), "{rows:#?}");
}

/// The daemon in its own mount namespace with the journal on a 1 MiB tmpfs
/// (`unshare -rm`); the test reaches that tmpfs through `/proc/PID/root`.
fn spawn_with_journal_on_tmpfs(env: &Env, jdir: &Path, log: &Path) -> Option<Child> {
    let probe = Command::new("unshare")
        .args(["-rm", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=1m tmpfs '{}'",
            jdir.display()
        ))
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        other => {
            println!(
                "SKIPPED: cannot mount a small tmpfs in a user namespace here \
                 (unshare -rm): {other:?}"
            );
            return None;
        }
    }
    let mut c = Command::new("unshare");
    c.args(["-rm", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=1m tmpfs '{}' && exec \"$0\" \"$@\"",
            jdir.display()
        ))
        .arg(env!("CARGO_BIN_EXE_ingestd"))
        .arg("--config")
        .arg(&env.config)
        .arg("run");
    for (k, _) in std::env::vars() {
        if k.starts_with("INGESTD_") || k == "RUST_LOG" || k == "NOTIFY_SOCKET" {
            c.env_remove(k);
        }
    }
    c.env("INGESTD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    Some(c.spawn().unwrap())
}

/// A copy of the journal (and its WAL) out of the daemon's namespace: SQLite
/// resolves `/proc/PID/root` to our own `/`, so it cannot open it in place.
/// A copy taken mid-write may be torn; callers poll, so a miss is retried.
fn snapshot(journal: &Path, into: &Path) -> Option<PathBuf> {
    let _ = std::fs::remove_dir_all(into);
    std::fs::create_dir_all(into).ok()?;
    let copy = into.join("journal.db");
    std::fs::copy(journal, &copy).ok()?;
    let mut wal = journal.as_os_str().to_owned();
    wal.push("-wal");
    let _ = std::fs::copy(&wal, into.join("journal.db-wal"));
    Some(copy)
}

fn rows_at(journal: &Path, scratch: &Path) -> Vec<ingestd::journal::FileRow> {
    snapshot(journal, scratch)
        .and_then(|copy| {
            Journal::open_read_only(&copy)
                .and_then(|j| j.list(None))
                .ok()
        })
        .unwrap_or_default()
}

#[test]
fn a_full_journal_disk_pauses_everything_and_loses_nothing() {
    let env = Env::new();
    let jdir = env.dir.path().join("jfs");
    std::fs::create_dir_all(&jdir).unwrap();
    let log = env.dir.path().join("daemon.log");
    std::fs::write(&env.config, watch_config(&env, &jdir.join("journal.db"))).unwrap();
    let mut files: Vec<PathBuf> = (0..5)
        .map(|i| env.file(&format!("before-{i}.mp4"), 100_000, i))
        .collect();
    let Some(mut child) = spawn_with_journal_on_tmpfs(&env, &jdir, &log) else {
        return;
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    // The daemon's view of the tmpfs (outside its namespace `jdir` is empty).
    let inside =
        PathBuf::from(format!("/proc/{}/root", child.id())).join(jdir.strip_prefix("/").unwrap());
    let journal = inside.join("journal.db");
    let scratch = env.dir.path().join("snapshot");
    let all_done = |n: usize| {
        let rows = rows_at(&journal, &scratch);
        rows.len() == n && rows.iter().all(|r| r.state == FileState::Done)
    };
    assert!(
        wait_until(Duration::from_secs(30), || all_done(5)),
        "{:#?}\n{}",
        rows_at(&journal, &scratch),
        log_text()
    );

    // Fill the journal's disk to the last byte.
    let filler = inside.join("filler");
    fill(&filler);
    // New files arrive: they cannot be journaled yet.
    for i in 0..20 {
        files.push(env.file(&format!("during-{i}.mp4"), 100_000, 100 + i));
    }
    assert!(
        wait_until(Duration::from_secs(30), || log_text()
            .contains("disk is full")),
        "the log says the disk is full:\n{}",
        log_text()
    );
    // While it waits, nothing moves: no upload goes out that the journal
    // could not record.
    let requests = env.emulator.stats().upload_requests;
    assert!(
        !wait_until(Duration::from_secs(1), || env
            .emulator
            .stats()
            .upload_requests
            != requests),
        "uploads went on while the journal could not record them"
    );
    let during = rows_at(&journal, &scratch);
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running:\n{}",
        log_text()
    );
    assert!(
        during.iter().all(|r| r.state != FileState::Failed),
        "nothing failed for it: {during:#?}"
    );

    // Space returns: everything goes on by itself.
    std::fs::remove_file(&filler).unwrap();
    let finished = wait_until(Duration::from_secs(60), || all_done(files.len()));
    let rows = rows_at(&journal, &scratch);
    // The journal is sound (checked while the tmpfs still exists).
    let conn = rusqlite::Connection::open(snapshot(&journal, &scratch).unwrap()).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    drop(conn);
    signal(&child, 15);
    let status = child.wait().unwrap();
    let text = log_text();
    assert!(finished, "{rows:#?}\n{text}");
    assert_eq!(integrity, "ok");
    assert!(status.success(), "{status:?}\n{text}");
    assert!(text.contains("has room again"), "{text}");
    let videos = env.videos();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let complete: Vec<_> = videos
            .iter()
            .filter(|v| v.complete && v.title == name)
            .collect();
        assert_eq!(complete.len(), 1, "{name}: exactly one video");
        assert_eq!(complete[0].sha256.as_deref(), Some(sha256(f).as_str()));
    }
    for line in text
        .lines()
        .filter(|l| l.contains("disk") || l.contains("room"))
    {
        println!("  {line}");
    }
    println!(
        "journal disk full: {} files waited (the log said so), none failed, all {} done once space returned; integrity_check ok",
        files.len() - during.iter().filter(|r| r.state == FileState::Done).count(),
        files.len()
    );
}

#[test]
fn retry_never_migrates_a_journal_another_process_holds() {
    let env = Env::new();
    journal_with_history(&env, 0);
    // The journal as an older ingestd left it: schema 1.
    {
        let conn = rusqlite::Connection::open(&env.journal).unwrap();
        conn.execute_batch(
            "ALTER TABLE files DROP COLUMN creating; \
             ALTER TABLE files DROP COLUMN sends_in_doubt; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let version = || -> i64 {
        rusqlite::Connection::open(&env.journal)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    // Another process (an older daemon) holds it.
    let lock = ingestd::journal::lock_journal(&env.journal).unwrap();
    let out = env.run(&["retry", "--failed"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("schema version 1"), "{}", text(&out));
    assert_eq!(version(), 1, "not migrated under the other process");
    drop(lock);
    // Free: retry may bring it up to date.
    let out = env.run(&["retry", "--failed"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(version() > 1);
}

#[test]
fn an_empty_lock_file_of_an_older_ingestd_beside_a_missing_journal_is_refused() {
    let env = Env::new();
    let f = env.file("a.mp4", 10_000, 1);
    std::fs::write(&env.config, watch_config(&env, &env.journal)).unwrap();
    std::fs::create_dir_all(env.journal.parent().unwrap()).unwrap();
    let mut lock = env.journal.clone().into_os_string();
    lock.push(".lock");
    std::fs::write(&lock, b"").unwrap();
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("gone or empty"), "{}", text(&out));
    assert_eq!(env.emulator.stats().upload_requests, 0);
    std::fs::remove_file(&lock).unwrap();
    let out = env.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rows(&env)[0].path(), std::fs::canonicalize(f).unwrap());
}

#[test]
fn a_request_refused_with_429_is_not_in_doubt_when_ingestd_dies_waiting() {
    let env = Env::with(|o| {
        o.rate_limit = 1;
        o.rate_window = Duration::from_secs(120);
    });
    let mut cfg = watch_config(&env, &env.journal);
    cfg = cfg.replace("concurrency = 2", "concurrency = 1\nin_doubt = \"fail\"");
    std::fs::write(&env.config, cfg).unwrap();
    // The window's one request goes to a.mp4.
    env.file("a.mp4", 100_000, 1);
    let out = env.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    // A new process knows nothing of the window: b.mp4 is refused with 429
    // and waits for its turn.
    env.file("b.mp4", 100_000, 2);
    let mut child = env.spawn(&["run"]);
    assert!(wait_until(Duration::from_secs(30), || {
        env.emulator
            .stats()
            .responses_by_status
            .get(&429)
            .is_some_and(|n| *n >= 1)
    }));
    let creating = || -> i64 {
        rusqlite::Connection::open(&env.journal)
            .unwrap()
            .query_row("SELECT sum(creating) FROM files", [], |r| r.get(0))
            .unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(10), || creating() == 0),
        "a refused request is not in flight"
    );
    child.kill().unwrap();
    let _ = child.wait();
    env.emulator.set_rate_limit(0, Duration::from_secs(60));
    let out = env.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows = rows(&env);
    assert!(
        rows.iter()
            .all(|r| r.state == FileState::Done && r.sends_in_doubt == 0),
        "{rows:#?}"
    );
    assert_eq!(env.videos().len(), 2);
}

#[test]
fn sigterm_while_the_journal_disk_is_full_still_stops() {
    let env = Env::new();
    let jdir = env.dir.path().join("jfs");
    std::fs::create_dir_all(&jdir).unwrap();
    let log = env.dir.path().join("daemon.log");
    std::fs::write(&env.config, watch_config(&env, &jdir.join("journal.db"))).unwrap();
    env.file("before.mp4", 100_000, 1);
    let Some(mut child) = spawn_with_journal_on_tmpfs(&env, &jdir, &log) else {
        return;
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || log_text()
            .contains("upload done")),
        "{}",
        log_text()
    );
    let inside =
        PathBuf::from(format!("/proc/{}/root", child.id())).join(jdir.strip_prefix("/").unwrap());
    fill(&inside.join("filler"));
    for i in 0..5 {
        env.file(&format!("during-{i}.mp4"), 100_000, 10 + i);
    }
    assert!(
        wait_until(Duration::from_secs(30), || log_text()
            .contains("disk is full")),
        "{}",
        log_text()
    );
    signal(&child, 15);
    let stopped = wait_until(Duration::from_secs(45), || {
        child.try_wait().unwrap().is_some()
    });
    if !stopped {
        let _ = child.kill();
    }
    assert!(stopped, "SIGTERM did not stop it:\n{}", log_text());
    assert!(
        log_text().contains("stopped waiting for room"),
        "{}",
        log_text()
    );
}

/// Writes to `path` until its filesystem is full, to the last byte.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    let byte = [0u8; 1];
    while f.write(&byte).is_ok_and(|n| n == 1) {}
}
