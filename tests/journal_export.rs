//! `ingestd journal export`: a single-node SQLite journal, made by really
//! uploading to the emulator (done, failed and half-uploaded files), copied
//! into an empty PostgreSQL journal (a real server, started by the tests),
//! then one node run on it: nothing done is sent again, the half-uploaded
//! file resumes on its own videoId. And the refusals: a target that holds
//! files, a wrong password (named, never shown), a journal a daemon holds.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::pg::PgDb;
use common::{sha256, text, toml_path, wait_until, watch, Daemon, Env, MIB};
use ingestd::emulator::Fault;

const LONG: Duration = Duration::from_secs(120);

/// Writes the journal's password to a file of the test's dir.
fn password_file(env: &Env, name: &str, password: &str) -> PathBuf {
    let p = env.dir.path().join(name);
    std::fs::write(&p, format!("{password}\n")).unwrap();
    p
}

/// `ingestd journal export --to URL --password-file FILE` with the
/// (SQLite) configuration.
fn export(env: &Env, db: &PgDb, password_file: &Path) -> Output {
    env.run(&[
        "journal",
        "export",
        "--to",
        &db.url,
        "--password-file",
        password_file.to_str().unwrap(),
    ])
}

/// The configuration of a node on the shared journal: `[journal] url` and
/// `password_file`, no `path`; the same watch folder.
fn write_node_config(env: &Env, db: &PgDb, password_file: &Path) {
    let text = format!(
        "[api]\nbase_url = \"{}\"\ntoken_file = {}\nchunk_size = \"5MiB\"\n\n\
         [journal]\nurl = \"{}\"\npassword_file = {}\nlease = \"3s\"\n\n\
         [upload]\nconcurrency = 2\n{}",
        env.emulator.base_url(),
        toml_path(&env.token_file),
        db.url,
        toml_path(password_file),
        watch(&env.media, "300ms", ""),
    );
    std::fs::write(&env.config, text).unwrap();
}

/// `status --json`, by id: what a row must keep across the export.
fn by_id(env: &Env) -> BTreeMap<i64, serde_json::Value> {
    env.status()
        .into_iter()
        .map(|r| {
            let id = r["id"].as_i64().unwrap();
            let kept = serde_json::json!({
                "path": r["path"], "state": r["state"], "size": r["size"],
                "bytes_uploaded": r["bytes_uploaded"], "video_id": r["video_id"],
                "attempts": r["attempts"], "sha256": r["sha256"],
                "created_at": r["created_at"], "last_error": r["last_error"],
            });
            (id, kept)
        })
        .collect()
}

#[test]
fn an_exported_journal_resumes_on_one_node_and_sends_nothing_again() {
    let Some(pg) = common::pg::shared() else {
        return;
    };
    let env = Env::new();
    // Two done files.
    env.write_config("5MiB", "");
    let a = env.file("a.mp4", 300_000, 1);
    let b = env.file("b.mov", 6 * MIB + 123, 2);
    let out = env.run(&["upload", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // One failed: the server refuses it for good.
    let bad = env.file("bad.mp4", 2000, 3);
    env.emulator.push_faults(vec![Some(Fault::Reject(
        "uploaded-file-invalid-file".into(),
    ))]);
    let out = env.run(&["upload", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // One half-uploaded: killed (SIGKILL) mid-upload, slowed by a bandwidth limit.
    env.write_config("5MiB", "bandwidth_limit = \"5MiB\"\n");
    let big = env.file("big.mxf", 40 * MIB + 7, 4);
    let mut child = env.spawn(&["upload", big.to_str().unwrap()]);
    let started = wait_until(LONG, || {
        env.status().iter().any(|r| {
            r["path"] == big.to_str().unwrap()
                && r["bytes_uploaded"].as_u64().unwrap_or(0) >= 5 * MIB
        })
    });
    child.kill().unwrap();
    let _ = child.wait();
    assert!(started, "the big file never got a chunk acknowledged");
    let before = by_id(&env);
    assert_eq!(before.len(), 4, "{before:#?}");
    let half = before
        .iter()
        .find(|(_, r)| r["path"] == big.to_str().unwrap())
        .map(|(id, r)| (*id, r.clone()))
        .unwrap();
    assert_eq!(half.1["state"], "uploading", "{:?}", half.1);
    let half_video = half.1["video_id"].as_str().unwrap().to_owned();
    let half_sent = half.1["bytes_uploaded"].as_u64().unwrap();
    assert!(half_sent < 40 * MIB + 7);
    let videos_before = env.videos().len();
    let body_before = env.emulator.stats().body_bytes;

    // Export.
    let db = pg.fresh_database("export");
    let pw = password_file(&env, "journal-password", &db.password);
    let out = export(&env, &db, &pw);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "exported 4 files (2 done, 1 failed, 0 queued/retrying, 1 half-uploaded), \
             0 orphans, 0 roots into {}",
            db.url
        )),
        "{said}"
    );
    assert!(said.contains("[journal] url = "), "{said}");
    assert!(!said.contains(&db.password), "{said}");
    // The identity sequence is past the copied ids.
    let next = pg.psql(
        &db.name,
        "SELECT nextval(pg_get_serial_sequence('files', 'id'))",
    );
    assert_eq!(
        next.trim().parse::<i64>().unwrap(),
        before.keys().max().unwrap() + 1
    );
    assert_eq!(
        pg.psql(
            &db.name,
            "SELECT count(*) FROM files WHERE owner IS NULL AND lease_until IS NULL AND epoch = 0"
        )
        .trim(),
        "4"
    );

    // `status --json` on the shared journal: the same rows, the interrupted
    // upload queued with its progress.
    write_node_config(&env, &db, &pw);
    let after = by_id(&env);
    let mut expected = before.clone();
    expected.get_mut(&half.0).unwrap()["state"] = "queued".into();
    assert_eq!(after, expected);

    // One node takes over.
    let node = Daemon::from_child(
        env.cmd(&["run"])
            .env("INGESTD_JOURNAL__NODE", "capture-01")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let finished = wait_until(LONG, || {
        env.status()
            .iter()
            .any(|r| r["id"].as_i64() == Some(half.0) && r["state"] == "done")
    });
    assert!(
        finished,
        "the half-uploaded file never finished\n{}",
        node.log()
    );
    // Let it scan the folder again: nothing it knows is sent again.
    assert!(node.wait_log("first scan done", LONG), "{}", node.log());
    std::thread::sleep(Duration::from_secs(2));
    let (code, log) = node.stop();
    assert_eq!(code, Some(0), "{log}");

    let stats = env.emulator.stats();
    assert_eq!(
        env.videos().len(),
        videos_before,
        "a video was created again"
    );
    assert_eq!(
        stats.body_bytes - body_before,
        40 * MIB + 7 - half_sent,
        "only the rest of the half-uploaded file was sent"
    );
    let v = env.video(&half_video);
    assert!(v.complete, "{v:?}");
    assert_eq!(v.sha256.as_deref(), Some(sha256(&big).as_str()));
    let end = by_id(&env);
    assert_eq!(end[&half.0]["video_id"].as_str(), Some(half_video.as_str()));
    for (id, row) in &before {
        if *id != half.0 {
            assert_eq!(&end[id], row, "file {id} changed");
        }
    }
}

#[test]
fn a_target_that_holds_files_is_refused_and_left_unchanged() {
    let Some(pg) = common::pg::shared() else {
        return;
    };
    let env = Env::new();
    let a = env.file("a.mp4", 1000, 1);
    let out = env.run(&["upload", a.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let db = pg.fresh_database("export_full");
    let pw = password_file(&env, "journal-password", &db.password);
    let out = export(&env, &db, &pw);
    assert!(out.status.success(), "{}", text(&out));
    let snapshot = "SELECT id, state, video_id, updated_at FROM files ORDER BY id";
    let held = pg.psql(&db.name, snapshot);

    // Another file journaled since: a second export would mix journals.
    let b = env.file("b.mp4", 2000, 2);
    let out = env.run(&["upload", b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = export(&env, &db, &pw);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("refusing: "), "{said}");
    assert!(said.contains("holds 1 files"), "{said}");
    assert!(said.contains("export only into an empty journal"), "{said}");
    assert_eq!(pg.psql(&db.name, snapshot), held);
    assert_eq!(pg.psql(&db.name, "SELECT count(*) FROM files").trim(), "1");
}

#[test]
fn a_wrong_password_is_named_and_never_shown() {
    let Some(pg) = common::pg::shared() else {
        return;
    };
    let env = Env::new();
    let a = env.file("a.mp4", 1000, 1);
    let out = env.run(&["upload", a.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let db = pg.fresh_database("export_pw");
    let wrong = "Wr0ngPassw0rdXyz";
    let pw = password_file(&env, "journal-password", wrong);
    let out = export(&env, &db, &pw);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("password"), "{said}");
    assert!(!said.contains(wrong), "{said}");
    // In the URL itself: shown redacted.
    let url = db.url.replace("ingestd@", &format!("ingestd:{wrong}@"));
    let out = env.run(&["journal", "export", "--to", &url]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("password"), "{said}");
    assert!(!said.contains(wrong), "{said}");
    assert!(said.contains("***"), "{said}");
    // Nothing was written.
    assert_eq!(
        pg.psql(
            &db.name,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .trim(),
        "0"
    );
}

#[test]
fn a_journal_in_use_missing_or_no_target_is_refused() {
    let Some(pg) = common::pg::shared() else {
        return;
    };
    let env = Env::new();
    let db = pg.fresh_database("export_busy");
    let pw = password_file(&env, "journal-password", &db.password);
    // No journal yet.
    let out = export(&env, &db, &pw);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("there is no journal at"), "{said}");
    // No target: a bad argument.
    let out = env.run(&["journal", "export"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("--to"), "{}", text(&out));
    let out = env.run(&["journal", "export", "--to", "mysql://db/x"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    // A running daemon holds the journal.
    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let daemon = Daemon::ready(&env);
    let out = export(&env, &db, &pw);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("stop the daemon first"), "{said}");
    assert_eq!(
        pg.psql(
            &db.name,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .trim(),
        "0"
    );
    drop(daemon);
}
