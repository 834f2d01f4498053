//! The SHA-256 computed while uploading, end to end: in `status --json` and
//! the sidecar, across a SIGKILL and resent chunks, and `[[watch]]
//! duplicates = "skip"`. Every digest is checked against the system's own
//! `sha256sum`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use ingestd::emulator::Fault;

/// The digest `sha256sum` prints for `path`.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum failed: {}", text(&out));
    let line = String::from_utf8(out.stdout).unwrap();
    let hex = line.split_whitespace().next().unwrap().to_owned();
    assert_eq!(hex.len(), 64, "{line}");
    hex
}

/// A `[[watch]]` table for the media folder, settled by time alone (the
/// test files are random bytes, not containers); `extra` holds more keys.
fn watch(env: &Env, extra: &str) -> String {
    format!(
        "\n[[watch]]\npath = {}\nsettle = \"300ms\"\npoll_interval = \"1s\"\nreadiness = \"settle\"\n{extra}\n",
        serde_json::to_string(env.media.to_str().unwrap()).unwrap()
    )
}

fn run_once(env: &Env) -> String {
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    text(&out)
}

/// `path`'s row in `status --json`, which must be done.
fn done_row(env: &Env, path: &Path) -> serde_json::Value {
    let row = row_for(env, path).unwrap_or_else(|| panic!("{} not journaled", path.display()));
    assert_eq!(row["state"], "done", "{row}");
    row
}

fn sidecar(path: &Path) -> serde_json::Value {
    let side = PathBuf::from(format!("{}.ingestd.json", path.display()));
    serde_json::from_slice(&std::fs::read(&side).unwrap()).unwrap()
}

#[test]
fn status_and_sidecar_show_the_sha256_of_a_done_file_and_null_before() {
    let env = Env::new();
    env.write_config("5MiB", &watch(&env, "sidecar = true"));
    // Refused: failed, so never hashed to the end.
    let refused = env.file("refused.mp4", 70_000, 1);
    env.emulator.push_faults(vec![Some(Fault::Reject(
        "uploaded-file-invalid-file".into(),
    ))]);
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let row = row_for(&env, &refused).unwrap();
    assert_eq!(row["state"], "failed", "{row}");
    assert!(
        row.get("sha256").is_some_and(|v| v.is_null()),
        "status --json has a null sha256 until done: {row}"
    );

    // Three chunks.
    let f = env.file("three chunks.mov", 12 * MIB + 123, 2);
    run_once(&env);
    let row = done_row(&env, &f);
    let expected = sha256sum(&f);
    assert_eq!(row["sha256"].as_str(), Some(expected.as_str()), "{row}");
    let vid = row["video_id"].as_str().unwrap();
    assert_eq!(env.video(vid).sha256.as_deref(), Some(expected.as_str()));
    assert_eq!(env.video(vid).accepted_chunks, 3);
    let side = sidecar(&f);
    assert_eq!(side["sha256"].as_str(), Some(expected.as_str()), "{side}");
    assert_eq!(side["videoId"].as_str(), Some(vid), "{side}");
}

/// Bytes the process `pid` has read so far (files, sockets, pipes).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in /proc/{pid}/io:\n{io}"))
}

#[test]
fn the_upload_reads_the_file_once_for_its_bytes_its_hash_and_its_sidecar() {
    let env = Env::new();
    env.write_config("5MiB", &watch(&env, "sidecar = true"));
    let d = Daemon::ready(&env);
    let before = bytes_read(d.child.id());
    let size = 30 * MIB + 9;
    let f = env.file("once.mov", size, 8);
    let side = PathBuf::from(format!("{}.ingestd.json", f.display()));
    assert!(
        wait_until(Duration::from_secs(60), || side.exists()),
        "no sidecar for {}:\n{}",
        f.display(),
        d.log()
    );
    let read = bytes_read(d.child.id()) - before;
    let expected = sha256sum(&f);
    assert_eq!(sidecar(&f)["sha256"].as_str(), Some(expected.as_str()));
    assert_eq!(
        done_row(&env, &f)["sha256"].as_str(),
        Some(expected.as_str())
    );
    // The upload's one read, its content sample (2 MiB) and small change;
    // a second pass over the file would read 30 MiB more.
    assert!(
        read < size + 8 * MIB,
        "the daemon read {read} bytes for a {size}-byte file"
    );
    stop_ok(d);
}

#[test]
fn a_sigkilled_upload_resumed_still_has_the_right_sha256() {
    let env = Env::new();
    env.write_config("5MiB", "");
    let f = env.file("long take.mxf", 40 * MIB + 7, 3);
    // Slow every request so the kill lands mid-upload, between chunks.
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(250))); 40]);
    let mut child = env.spawn(&["upload", f.to_str().unwrap()]);
    let reached = wait_until(Duration::from_secs(60), || {
        rows(&env)
            .first()
            .is_some_and(|r| r.bytes_uploaded >= 15 * MIB)
    });
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(reached, "the upload never got past 15 MiB");
    let before = rows(&env).remove(0);
    assert_ne!(
        before.state.as_str(),
        "done",
        "killed too late to test anything"
    );
    assert!(before.bytes_uploaded > 0 && before.bytes_uploaded < before.identity.size);
    env.emulator.clear_faults();

    let out = env.run(&["upload", f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(
        log.contains("reading again the bytes already sent"),
        "the resumed attempt did not hash its prefix again:\n{log}"
    );
    let row = done_row(&env, &f);
    let expected = sha256sum(&f);
    assert_eq!(row["sha256"].as_str(), Some(expected.as_str()), "{row}");
    assert_eq!(
        row["video_id"].as_str(),
        before.video_id.as_deref(),
        "resumed on the same video"
    );
    assert_eq!(env.videos().len(), 1, "{:?}", env.videos());
}

#[test]
fn chunks_sent_again_after_faults_are_hashed_once() {
    let env = Env::new();
    env.write_config("5MiB", "");
    let f = env.file("faulty.mov", 22 * MIB + 5, 4);
    // The second chunk is stored but its reply is lost (sent again, the
    // server says it has it); the third is cut mid-body, then refused
    // with a 503, then sent a third time.
    env.emulator.push_faults(vec![
        None,
        Some(Fault::LostReply),
        None,
        Some(Fault::ResetMidBody),
        Some(Fault::Status503),
    ]);
    let out = env.run(&["upload", f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let row = done_row(&env, &f);
    let expected = sha256sum(&f);
    assert_eq!(row["sha256"].as_str(), Some(expected.as_str()), "{row}");
    assert!(
        env.emulator.stats().upload_requests >= 8,
        "the faults were not all hit: {:?}",
        env.emulator.stats()
    );
}

#[test]
fn with_duplicates_skip_a_copy_is_recorded_with_the_existing_video() {
    let env = Env::new();
    env.write_config(
        "5MiB",
        &watch(&env, "duplicates = \"skip\"\nsidecar = true"),
    );
    let a = env.file("clip.mp4", 7 * MIB + 11, 5);
    run_once(&env);
    let first = done_row(&env, &a);
    let vid = first["video_id"].as_str().unwrap().to_owned();
    let requests = env.emulator.stats().upload_requests;

    let b = env.media.join("clip copy.mp4");
    std::fs::copy(&a, &b).unwrap();
    let log = run_once(&env);
    let second = done_row(&env, &b);
    assert_eq!(
        second["video_id"].as_str(),
        Some(vid.as_str()),
        "{second}\n{log}"
    );
    let expected = sha256sum(&b);
    assert_eq!(
        second["sha256"].as_str(),
        Some(expected.as_str()),
        "{second}"
    );
    assert_eq!(first["sha256"], second["sha256"]);
    let note = second["last_error"].as_str().unwrap_or_default();
    let id = first["id"].as_i64().unwrap();
    assert!(
        note.contains(&format!("duplicate of {} (id {id})", a.display()))
            && note.contains(&format!("recorded with its video {vid}, nothing sent")),
        "{second}"
    );
    assert_eq!(
        env.emulator.stats().upload_requests,
        requests,
        "nothing may be sent for the copy:\n{log}"
    );
    assert_eq!(env.videos().len(), 1, "{:?}", env.videos());
    // Its after-upload action ran as for any done file.
    let side = sidecar(&b);
    assert_eq!(side["videoId"].as_str(), Some(vid.as_str()), "{side}");
    assert_eq!(side["sha256"].as_str(), Some(expected.as_str()), "{side}");
}

#[test]
fn by_default_a_copy_is_uploaded_again() {
    let env = Env::new();
    env.write_config("5MiB", &watch(&env, ""));
    let a = env.file("clip.mp4", 3 * MIB + 11, 6);
    run_once(&env);
    let b = env.media.join("clip copy.mp4");
    std::fs::copy(&a, &b).unwrap();
    run_once(&env);
    let (ra, rb) = (done_row(&env, &a), done_row(&env, &b));
    assert_ne!(ra["video_id"], rb["video_id"]);
    assert_eq!(ra["sha256"], rb["sha256"]);
    assert!(rb["last_error"].is_null(), "{rb}");
    assert_eq!(env.videos().len(), 2, "{:?}", env.videos());
}

#[test]
fn with_duplicates_skip_the_same_sample_but_another_middle_is_uploaded() {
    let env = Env::new();
    env.write_config("5MiB", &watch(&env, "duplicates = \"skip\""));
    let a = env.file("take.mp4", 6 * MIB, 7);
    run_once(&env);
    let first = done_row(&env, &a);
    // Same size, same first and last MiB, one byte of the middle changed.
    let b = env.media.join("take 2.mp4");
    let mut bytes = std::fs::read(&a).unwrap();
    bytes[3 * MIB as usize] ^= 0x5a;
    std::fs::write(&b, &bytes).unwrap();
    let log = run_once(&env);
    let second = done_row(&env, &b);
    let journal = rows(&env);
    let sample = |p: &Path| journal.iter().find(|r| r.path() == p).unwrap().sample;
    assert!(sample(&a).is_some());
    assert_eq!(
        sample(&a),
        sample(&b),
        "the samples must match for this test to test anything"
    );
    assert!(
        log.contains("not the same SHA-256"),
        "the whole file was not compared:\n{log}"
    );
    assert_ne!(first["video_id"], second["video_id"]);
    assert_eq!(
        second["sha256"].as_str(),
        Some(sha256sum(&b).as_str()),
        "{second}"
    );
    assert_ne!(first["sha256"], second["sha256"]);
    assert!(second["last_error"].is_null(), "{second}");
    assert_eq!(env.videos().len(), 2, "{:?}", env.videos());
}

#[test]
fn with_sha256_off_nothing_is_hashed_and_duplicates_skip_is_refused() {
    let env = Env::new();
    env.write_config("5MiB", &format!("sha256 = false\n{}", watch(&env, "")));
    let d = Daemon::ready(&env);
    let before = bytes_read(d.child.id());
    let size = 12 * MIB + 5;
    let f = env.file("unhashed.mov", size, 9);
    assert!(
        wait_until(Duration::from_secs(60), || {
            row_for(&env, &f).is_some_and(|r| r["state"] == "done")
        }),
        "{} was not uploaded:\n{}",
        f.display(),
        d.log()
    );
    let read = bytes_read(d.child.id()) - before;
    stop_ok(d);
    let row = done_row(&env, &f);
    assert!(row["sha256"].is_null(), "no SHA-256 is kept: {row}");
    // Sent whole and right all the same, in three chunks.
    let video = env.video(row["video_id"].as_str().unwrap());
    assert_eq!(video.sha256.as_deref(), Some(sha256sum(&f).as_str()));
    assert_eq!(video.accepted_chunks, 3);
    assert!(
        read < size + 8 * MIB,
        "the daemon read {read} bytes for a {size}-byte file"
    );

    // "skip" compares SHA-256s: refused before anything starts.
    env.write_config(
        "5MiB",
        &format!("sha256 = false\n{}", watch(&env, "duplicates = \"skip\"")),
    );
    for args in [&["check-config"][..], &["run", "--once"]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", text(&out));
        let said = text(&out);
        assert!(
            said.contains("watch[0].duplicates") && said.contains("set upload.sha256 = true"),
            "{args:?}: {said}"
        );
    }
}
