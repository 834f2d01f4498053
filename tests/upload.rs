//! The upload core end to end: the real binary against the emulator.

mod common;

use std::time::Duration;

use common::*;
use ingestd::emulator::Fault;

fn upload(env: &Env, files: &[&std::path::Path]) -> std::process::Output {
    let mut args = vec!["upload"];
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    env.run(&args)
}

fn done_video(env: &Env, path: &std::path::Path) -> String {
    let row = row_for(env, path).expect("journaled");
    assert_eq!(row["state"], "done", "{row}");
    row["video_id"].as_str().unwrap().to_owned()
}

#[test]
fn small_file_goes_in_one_request() {
    let env = Env::new();
    let f = env.file("clip.mp4", MIB + 3, 1);
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &f);
    let v = env.video(&vid);
    assert!(v.complete);
    assert_eq!(v.sha256.as_deref(), Some(sha256(&f).as_str()));
    assert_eq!(v.title, "clip.mp4");
    assert_eq!(env.emulator.stats().upload_requests, 1);
}

#[test]
fn chunked_file_is_reassembled_byte_for_byte() {
    let env = Env::new();
    let f = env.file("big.mov", 40 * MIB, 2);
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &f);
    assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(&f).as_str()));
    // 40 MiB in 8 MiB chunks: five requests, one video.
    assert_eq!(env.emulator.stats().upload_requests, 5);
    assert_eq!(env.videos().len(), 1);
    let row = row_for(&env, &f).unwrap();
    for key in [
        "id",
        "path",
        "state",
        "size",
        "bytes_uploaded",
        "video_id",
        "attempts",
        "last_error",
    ] {
        assert!(row.get(key).is_some(), "status --json lacks {key}: {row}");
    }
    assert_eq!(row["bytes_uploaded"], 40 * MIB);
    // Uploading the same file again does nothing: it is done.
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.emulator.stats().upload_requests, 5);
}

#[test]
fn sigkill_mid_upload_resumes_on_the_same_video() {
    let env = Env::new();
    env.write_config("5MiB", "");
    let size = 40 * MIB;
    let f = env.file("long take.mxf", size, 3);
    // Slow every request so the kill lands mid-upload.
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(250))); 40]);
    let child = env.spawn(&["upload", f.to_str().unwrap()]);
    let mut video_before = None;
    let reached = wait_until(Duration::from_secs(30), || {
        rows(&env).first().is_some_and(|r| {
            video_before = r.video_id.clone();
            r.bytes_uploaded >= 15 * MIB
        })
    });
    let mut child = child;
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(reached, "the upload never got past 15 MiB");
    let video_before = video_before.expect("videoId journaled before the kill");
    let row = rows(&env).remove(0);
    assert_ne!(
        row.state.as_str(),
        "done",
        "killed too late to test anything"
    );

    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &f);
    assert_eq!(
        vid, video_before,
        "the resumed upload must reuse the videoId"
    );
    assert_eq!(env.videos().len(), 1, "no second video: {:?}", env.videos());
    assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(&f).as_str()));
    let sent = env.emulator.stats().body_bytes;
    assert!(
        sent <= size + 5 * MIB,
        "at most one chunk re-sent: the server read {sent} bytes for a {size}-byte file"
    );
}

#[test]
fn lost_reply_is_recovered_through_the_overlap_rule() {
    let env = Env::new();
    let f = env.file("a.mp4", 20 * MIB, 4);
    // The second chunk is stored but its reply never arrives.
    env.emulator.push_faults(vec![None, Some(Fault::LostReply)]);
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &f);
    assert_eq!(env.videos().len(), 1);
    assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(&f).as_str()));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already had this chunk"),
        "{}",
        text(&out)
    );
}

#[test]
fn lost_reply_on_the_last_chunk_still_finishes() {
    let env = Env::new();
    let f = env.file("a.mp4", 12 * MIB, 5);
    env.emulator.push_faults(vec![None, Some(Fault::LostReply)]);
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &f);
    assert_eq!(env.videos().len(), 1);
    assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(&f).as_str()));
}

#[test]
fn storms_of_503_and_resets_are_survived() {
    let env = Env::new();
    let a = env.file("a.mp4", 17 * MIB, 6);
    let b = env.file("b.mp4", 2 * MIB, 7);
    env.emulator.push_faults(vec![
        Some(Fault::Status503),
        Some(Fault::ResetMidBody),
        None,
        Some(Fault::Status503),
        Some(Fault::ResetMidBody),
        None,
        Some(Fault::ResetMidBody),
        Some(Fault::Status503),
    ]);
    let out = upload(&env, &[&a, &b]);
    assert!(out.status.success(), "{}", text(&out));
    for f in [&a, &b] {
        let vid = done_video(&env, f);
        assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(f).as_str()));
    }
    assert_eq!(env.videos().len(), 2, "{:?}", env.videos());
}

#[test]
fn invalid_token_pauses_without_failing_and_resumes_on_sighup() {
    let env = Env::new();
    let f = env.file("a.mp4", 12 * MIB, 8);
    env.set_token("to1wrongWRONGwrongWRONGx");
    // In the foreground: exit 1 with a clear message; the file keeps its place.
    let out = upload(&env, &[&f]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("token"), "{}", text(&out));
    let row = row_for(&env, &f).unwrap();
    assert_eq!(row["state"], "queued", "{row}");
    assert_eq!(row["attempts"], 0, "{row}");

    // The daemon pauses, then resumes when the token is replaced + SIGHUP.
    let child = env.spawn(&["run"]);
    assert!(wait_until(Duration::from_secs(20), || env
        .emulator
        .stats()
        .upload_requests
        >= 1));
    std::thread::sleep(Duration::from_millis(300));
    assert!(rows(&env).iter().all(|r| r.state.as_str() == "queued"));
    env.set_token(TOKEN);
    signal(&child, 1); // SIGHUP
    let finished = wait_until(Duration::from_secs(30), || {
        rows(&env).iter().all(|r| r.state.as_str() == "done")
    });
    signal(&child, 15); // SIGTERM
    let out = wait_child(child, Duration::from_secs(20));
    assert!(finished, "not resumed after SIGHUP: {}", text(&out));
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UPLOADS PAUSED"), "{err}");
    assert!(
        !text(&out).contains("to1wrongWRONG"),
        "the token leaked: {}",
        text(&out)
    );
    let vid = done_video(&env, &f);
    assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(&f).as_str()));
}

#[test]
fn rate_limit_slows_down_and_finishes_everything() {
    let env = Env::with(|o| {
        o.rate_limit = 3;
        o.rate_window = Duration::from_secs(1);
    });
    let files: Vec<_> = (0..8)
        .map(|i| env.file(&format!("f{i}.mp4"), 100_000 + i, 100 + i))
        .collect();
    let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let out = upload(&env, &refs);
    assert!(out.status.success(), "{}", text(&out));
    for f in &files {
        let vid = done_video(&env, f);
        assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(f).as_str()));
    }
    assert_eq!(env.videos().len(), 8);
    // Pacing from the headers: the window is respected, not hammered.
    let stats = env.emulator.stats();
    let too_many = stats.responses_by_status.get(&429).copied().unwrap_or(0);
    assert!(
        too_many <= 4,
        "{too_many} requests refused with 429: the pacer is not pacing"
    );
}

#[test]
fn empty_files_are_skipped_and_never_sent() {
    let env = Env::new();
    let empty = env.file("empty.mp4", 0, 0);
    let full = env.file("full.mp4", 1000, 9);
    let out = upload(&env, &[&empty, &full]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("empty"), "{}", text(&out));
    assert_eq!(env.emulator.stats().upload_requests, 1);
    assert!(row_for(&env, &empty).is_none());
    done_video(&env, &full);
}

#[test]
fn non_utf8_and_newline_names_are_uploaded() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9 \"take\"\n2.mp4");
    let p = env.media.join(name);
    write_random(&p, 4000, 10);
    let out = env.cmd(&["upload"]).arg(&p).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rows = rows(&env);
    assert_eq!(rows[0].state.as_str(), "done");
    assert_eq!(rows[0].path(), p);
    let v = env.video(rows[0].video_id.as_deref().unwrap());
    assert_eq!(v.sha256.as_deref(), Some(sha256(&p).as_str()));
}

#[test]
fn a_file_deleted_during_upload_ends_gone() {
    let env = Env::new();
    env.write_config("5MiB", "");
    let f = env.file("vanishing.mp4", 30 * MIB, 11);
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(300))); 10]);
    let child = env.spawn(&["upload", f.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(20), || {
        rows(&env).first().is_some_and(|r| r.bytes_uploaded > 0)
    }));
    std::fs::remove_file(&f).unwrap();
    let out = wait_child(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = rows(&env).remove(0);
    assert_eq!(r.state.as_str(), "gone");
    assert!(text(&out).contains("deleted or renamed"), "{}", text(&out));
}

#[test]
fn sigterm_stops_cleanly_and_the_upload_resumes() {
    let env = Env::new();
    env.write_config("5MiB", "");
    let f = env.file("a.mp4", 30 * MIB, 12);
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(300))); 6]);
    let child = env.spawn(&["upload", f.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(20), || {
        rows(&env).first().is_some_and(|r| r.bytes_uploaded > 0)
    }));
    signal(&child, 15);
    let out = wait_child(child, Duration::from_secs(40));
    let r = rows(&env).remove(0);
    assert_eq!(
        r.state.as_str(),
        "queued",
        "after SIGTERM the file waits, progress kept: {r:?}\n{}",
        text(&out)
    );
    assert!(r.bytes_uploaded > 0 && r.video_id.is_some(), "{r:?}");
    assert!(
        out.status.code().is_some(),
        "killed by a signal instead of exiting: {}",
        text(&out)
    );
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &f);
    assert_eq!(env.videos().len(), 1);
    assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(&f).as_str()));
    let sent = env.emulator.stats().body_bytes;
    assert!(sent <= 35 * MIB, "at most one chunk sent again: {sent}");
}

#[test]
fn a_second_signal_stops_at_once_and_the_upload_still_resumes() {
    let env = Env::new();
    env.write_config("5MiB", "");
    let f = env.file("a.mp4", 12 * MIB, 14);
    // The second chunk's request hangs: the drain would wait for it.
    env.emulator
        .push_faults(vec![None, Some(Fault::Latency(Duration::from_secs(60)))]);
    let child = env.spawn(&["upload", f.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(20), || {
        env.emulator.stats().upload_requests >= 2
    }));
    signal(&child, 15);
    signal(&child, 2);
    let t0 = std::time::Instant::now();
    let out = wait_child(child, Duration::from_secs(30));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}: {}",
        t0.elapsed(),
        text(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("stopping at once"), "{}", text(&out));
    env.emulator.clear_faults();
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &f);
    assert_eq!(env.videos().len(), 1, "the same video was resumed");
    assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(&f).as_str()));
}

#[test]
fn the_token_never_appears_in_output_even_at_trace_level() {
    let env = Env::new();
    let f = env.file("a.mp4", 6 * MIB, 13);
    env.emulator
        .push_faults(vec![Some(Fault::Status503), Some(Fault::ResetMidBody)]);
    let out = env
        .cmd(&["upload", f.to_str().unwrap()])
        .env("INGESTD_LOG", "trace")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Through the error paths too: a refused token, at trace level.
    let g = env.file("b.mp4", 1000, 24);
    let bad = "to1refusedREFUSEDrefused";
    env.set_token(bad);
    let refused = env
        .cmd(&["upload", g.to_str().unwrap()])
        .env("INGESTD_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        !text(&refused).contains(bad),
        "the token leaked: {}",
        text(&refused)
    );
    env.set_token(TOKEN);
    for args in [&["status"][..], &["status", "--json"], &["check-config"]] {
        let o = env.run(args);
        assert!(
            !text(&o).contains(TOKEN),
            "{args:?} leaked the token: {}",
            text(&o)
        );
    }
    assert!(
        !text(&out).contains(TOKEN),
        "the token leaked: {}",
        text(&out)
    );
}

#[test]
fn journal_in_an_unusable_place_is_a_clear_error() {
    let env = Env::new();
    let f = env.file("a.mp4", 1000, 14);
    // A regular file where the journal's directory should be.
    let blocker = env.dir.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    env.write_config("8MiB", "");
    let cfg = std::fs::read_to_string(&env.config).unwrap().replace(
        &env.journal.display().to_string(),
        &blocker.join("journal.db").display().to_string(),
    );
    std::fs::write(&env.config, cfg).unwrap();
    let out = upload(&env, &[&f]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("journal"), "{}", text(&out));
    assert_eq!(env.emulator.stats().upload_requests, 0);

    // Not a SQLite file: refused, left untouched.
    let garbage = env.dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
    let cfg = std::fs::read_to_string(&env.config).unwrap().replace(
        &blocker.join("journal.db").display().to_string(),
        &garbage.display().to_string(),
    );
    std::fs::write(&env.config, cfg).unwrap();
    let out = upload(&env, &[&f]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not an ingestd journal"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&garbage).unwrap(), vec![7u8; 4096]);
}

#[test]
fn retry_refuses_files_that_are_not_failed_and_never_creates_a_journal() {
    let env = Env::new();
    // No journal yet: a clear error, and no empty journal left behind.
    let out = env.run(&["retry", "--failed"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no journal"), "{}", text(&out));
    assert!(!env.journal.exists());
    let f = env.file("a.mp4", 1000, 15);
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    let id = rows(&env)[0].id.to_string();
    let out = env.run(&["retry", &id]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a done file cannot be retried: {}",
        text(&out)
    );
    assert!(text(&out).contains("is done, not failed"), "{}", text(&out));
    let out = env.run(&["retry", "--failed"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no failed files"), "{}", text(&out));
}

#[test]
fn a_permanent_rejection_fails_only_that_file() {
    let env = Env::new();
    let a = env.file("a.mp4", 1000, 16);
    let b = env.file("b.mp4", 2000, 17);
    env.emulator.push_faults(vec![Some(Fault::Reject(
        "uploaded-file-invalid-file".into(),
    ))]);
    // One worker, so the first request is a's.
    let out = env
        .cmd(&["upload", a.to_str().unwrap(), b.to_str().unwrap()])
        .env("INGESTD_UPLOAD__CONCURRENCY", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ra = row_for(&env, &a).unwrap();
    assert_eq!(ra["state"], "failed", "{ra}");
    let err = ra["last_error"].as_str().unwrap();
    assert!(err.contains("uploaded-file-invalid-file"), "{err}");
    assert!(err.contains("The uploaded file is invalid."), "{err}");
    done_video(&env, &b);
    // `retry` puts it back, and it then goes through.
    let id = ra["id"].to_string();
    let out = env.run(&["retry", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let out = env.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &a);
    assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(&a).as_str()));
}

#[test]
fn garbage_replies_do_not_lose_or_duplicate_files() {
    let env = Env::new();
    // A chunked file whose second reply is not JSON: the chunk was accepted
    // (2xx) and the videoId is already known, so the upload goes on.
    let a = env.file("a.mp4", 20 * MIB, 18);
    env.emulator
        .push_faults(vec![None, Some(Fault::GarbageReply)]);
    let out = env
        .cmd(&["upload", a.to_str().unwrap()])
        .env("INGESTD_UPLOAD__CONCURRENCY", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &a);
    assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(&a).as_str()));
    // A whole file answered 2xx with an unreadable reply may or may not be
    // stored: it is failed "in doubt", never sent again behind one's back.
    let b = env.file("b.mp4", 3000, 19);
    env.emulator.push_faults(vec![Some(Fault::GarbageReply)]);
    let out = env.run(&["upload", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rb = row_for(&env, &b).unwrap();
    assert_eq!(rb["state"], "failed", "{rb}");
    let err = rb["last_error"].as_str().unwrap();
    assert!(
        err.contains("in doubt") && err.contains("ingestd retry"),
        "{rb}"
    );
    assert_eq!(env.videos().len(), 2, "sent once: {:?}", env.videos());
}

#[test]
fn a_file_that_grows_during_upload_is_abandoned_not_sent_half() {
    let env = Env::new();
    env.write_config("5MiB", "");
    let f = env.file("growing.mp4", 20 * MIB, 21);
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(300))); 10]);
    let child = env.spawn(&["upload", f.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(20), || {
        rows(&env).first().is_some_and(|r| r.bytes_uploaded > 0)
    }));
    {
        use std::io::Write;
        let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        h.write_all(&[1u8; 4096]).unwrap();
    }
    let out = wait_child(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = rows(&env).remove(0);
    assert_eq!(r.state.as_str(), "gone", "{r:?}");
    assert!(
        text(&out).contains("changed since it was journaled"),
        "{}",
        text(&out)
    );
    assert!(
        env.videos().iter().all(|v| !v.complete),
        "nothing completed: {:?}",
        env.videos()
    );
}

#[test]
fn an_unreadable_file_fails_with_a_clear_reason_and_others_go_on() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let locked = env.file("locked.mp4", 1000, 22);
    let fine = env.file("fine.mp4", 1000, 23);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything; drop the capabilities that let it, when running as root.
    let mut cmd = env.cmd(&["upload", locked.to_str().unwrap(), fine.to_str().unwrap()]);
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        if std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: running as root without setpriv to drop CAP_DAC_OVERRIDE");
            return;
        }
        let inner = cmd;
        cmd = std::process::Command::new("setpriv");
        cmd.args([
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
        ]);
        cmd.arg(inner.get_program()).args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = row_for(&env, &locked).unwrap();
    assert_eq!(r["state"], "failed", "{r}");
    let err = r["last_error"].as_str().unwrap();
    assert!(
        err.contains("cannot read the file") && err.contains("ingestd retry"),
        "{err}"
    );
    done_video(&env, &fine);
}

#[test]
fn a_redirect_is_never_followed_and_pauses_with_a_clear_reason() {
    use std::io::{Read, Write};
    let env = Env::new();
    // A "captive portal": every request is redirected to a page that says 200.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten().take(20) {
            let mut conn = conn;
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = vec![0u8; 64 * 1024];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            log.lock().unwrap().push(head.clone());
            let reply = if head.starts_with("GET /portal") {
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_owned()
            } else {
                format!("HTTP/1.1 302 Found\r\nLocation: http://{addr}/portal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    let cfg = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(&env.emulator.base_url(), &format!("http://{addr}"));
    std::fs::write(&env.config, cfg).unwrap();
    let f = env.file("a.mp4", 2000, 25);
    let out = upload(&env, &[&f]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("api.base_url"), "{}", text(&out));
    let requests = seen.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| !r.starts_with("GET /portal")),
        "the redirect was followed: {requests:?}"
    );
    assert!(
        requests.iter().all(|r| !r.contains("referer")),
        "{requests:?}"
    );
    let r = row_for(&env, &f).unwrap();
    assert_eq!(
        r["state"], "queued",
        "nothing failed, nothing marked done: {r}"
    );
}

#[test]
fn a_foreground_run_gives_up_after_a_few_attempts_and_leaves_the_file_retrying() {
    let env = Env::new();
    env.emulator
        .set_random_faults(ingestd::emulator::RandomFaults {
            seed: 1,
            p_503: 1.0,
            ..Default::default()
        });
    let f = env.file("a.mp4", 2000, 26);
    let child = env.spawn(&["upload", f.to_str().unwrap()]);
    let out = wait_child(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = row_for(&env, &f).unwrap();
    assert_eq!(r["state"], "retrying", "{r}");
    assert_eq!(r["attempts"], ingestd::upload::FOREGROUND_ATTEMPTS, "{r}");
    assert_eq!(
        env.emulator.stats().upload_requests,
        u64::from(ingestd::upload::FOREGROUND_ATTEMPTS)
    );
    // The next run picks it up again and, the server healed, finishes it.
    env.emulator
        .set_random_faults(ingestd::emulator::RandomFaults::default());
    let out = env.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    done_video(&env, &f);
}

#[test]
fn sigterm_stops_the_daemon_even_when_its_stderr_is_gone() {
    use std::io::{BufRead, BufReader};
    // journald restarting, or a closed pipe: every log write fails from then on.
    let env = Env::new();
    let mut child = env.spawn(&["run"]);
    let stderr = child.stderr.take().unwrap();
    let mut first = String::new();
    BufReader::new(stderr).read_line(&mut first).unwrap();
    assert!(first.contains("ingestd running"), "{first}");
    // The reader was dropped: stderr is now a broken pipe.
    signal(&child, 15);
    let out = wait_child(child, Duration::from_secs(15));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn check_config_checks_the_machine_and_online_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let folder = env.dir.path().join("capture");
    std::fs::create_dir_all(&folder).unwrap();
    let extra = format!(
        "\n[[watch]]\npath = \"{}\"\n\n[[watch]]\npath = \"{}\"\n",
        folder.display(),
        env.dir.path().join("missing").display()
    );
    env.write_config("8MiB", &extra);
    std::fs::set_permissions(&env.token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&["check-config", "--online"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("# ok    watch folder") && all.contains("is readable"),
        "{all}"
    );
    assert!(
        all.contains("# error watch folder") && all.contains("missing"),
        "{all}"
    );
    assert!(
        all.contains("can be read by others") && all.contains("chmod 600"),
        "{all}"
    );
    assert!(all.contains("accepts the upload token"), "{all}");
    assert!(!all.contains(TOKEN), "the token leaked: {all}");
    // A refused token, and a machine that fits: exit 1 only for the token.
    env.write_config(
        "8MiB",
        &format!("\n[[watch]]\npath = \"{}\"\n", folder.display()),
    );
    std::fs::set_permissions(&env.token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.run(&["check-config"]);
    assert!(out.status.success(), "{}", text(&out));
    env.set_token("to1revokedREVOKEDrevoked");
    let out = env.run(&["check-config", "--online"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("refuses the upload token"),
        "{}",
        text(&out)
    );
    assert_eq!(env.videos().len(), 0, "a check creates nothing");
}

#[test]
fn the_bandwidth_limit_is_respected() {
    let env = Env::new();
    // 6 MiB at 2 MiB/s: about 3 s (a quarter second of burst allowed).
    env.write_config("8MiB", "bandwidth_limit = \"2MiB\"");
    let f = env.file("a.mp4", 6 * MIB, 28);
    let start = std::time::Instant::now();
    let out = upload(&env, &[&f]);
    let took = start.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    done_video(&env, &f);
    assert!(
        took >= Duration::from_millis(2500) && took <= Duration::from_secs(20),
        "6 MiB at 2 MiB/s took {took:?}"
    );
}

#[test]
fn a_lost_first_reply_never_duplicates_a_file_over_5_mib() {
    // 6 MiB, under one 8 MiB chunk: sent as 5 MiB + 1 MiB, so the request
    // whose reply is lost cannot have completed a video.
    let env = Env::new();
    let f = env.file("a.mp4", 6 * MIB, 29);
    env.emulator.push_faults(vec![Some(Fault::LostReply)]);
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &f);
    assert_eq!(env.video(&vid).sha256.as_deref(), Some(sha256(&f).as_str()));
    let complete = env.videos().iter().filter(|v| v.complete).count();
    assert_eq!(complete, 1, "no duplicate: {:?}", env.videos());
    assert!(
        env.videos().len() <= 2,
        "at most one partial video left: {:?}",
        env.videos()
    );
    // The row counts the request in doubt and says what may be left over.
    let row = rows(&env).into_iter().next().unwrap();
    assert_eq!(row.sends_in_doubt, 1);
    let note = row.last_error.unwrap_or_default();
    assert!(note.contains("unfinished video"), "{note}");
}

#[test]
fn a_lost_reply_to_a_one_request_file_is_counted_and_said() {
    // Sent again (nothing can ask the server), so api.video holds it twice;
    // the journal counts the request in doubt, and the row and log say so.
    let env = Env::new();
    let f = env.file("a.mp4", 300_000, 31);
    env.emulator.push_faults(vec![Some(Fault::LostReply)]);
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    let row = rows(&env).into_iter().next().unwrap();
    assert_eq!(row.state.as_str(), "done");
    assert_eq!(row.sends_in_doubt, 1);
    let note = row.last_error.clone().unwrap_or_default();
    assert!(note.contains("duplicate video"), "{note}");
    assert!(
        text(&out).contains("may also hold a duplicate"),
        "{}",
        text(&out)
    );
    let table = env.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("may also hold a duplicate"),
        "{}",
        text(&table)
    );
    assert_eq!(env.videos().iter().filter(|v| v.complete).count(), 2);

    // A reply that never comes because the request was refused outright
    // (a 503 after reading the body) is not in doubt: nothing is said.
    let g = env.file("b.mp4", 300_000, 32);
    env.emulator.push_faults(vec![Some(Fault::Status503)]);
    let out = upload(&env, &[&g]);
    assert!(out.status.success(), "{}", text(&out));
    let row = rows(&env).into_iter().find(|r| r.path() == g).unwrap();
    assert_eq!(row.sends_in_doubt, 0);
    assert_eq!(row.last_error, None);
}

#[test]
fn with_in_doubt_fail_a_one_request_file_is_never_sent_twice() {
    let env = Env::new();
    env.write_config("8MiB", "in_doubt = \"fail\"\n");
    let small = env.file("small.mp4", 300_000, 33);
    env.emulator.push_faults(vec![Some(Fault::LostReply)]);
    let out = upload(&env, &[&small]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let row = rows(&env).into_iter().next().unwrap();
    assert_eq!(row.state.as_str(), "failed");
    assert_eq!(row.sends_in_doubt, 1);
    let why = row.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("may already hold it") && why.contains(&format!("ingestd retry {}", row.id)),
        "{why}"
    );
    assert_eq!(env.emulator.stats().upload_requests, 1, "not sent again");
    assert_eq!(env.videos().len(), 1);
    // Someone looked and wants it sent again anyway.
    let out = env.run(&["retry", &row.id.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = upload(&env, &[&small]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.videos().iter().filter(|v| v.complete).count(), 2);

    // A chunked file is still sent again: at worst it leaves an unfinished
    // video, never a duplicate.
    let big = env.file("big.mp4", 6 * MIB, 34);
    env.emulator.push_faults(vec![Some(Fault::LostReply)]);
    let out = upload(&env, &[&big]);
    assert!(out.status.success(), "{}", text(&out));
    let vid = done_video(&env, &big);
    assert_eq!(
        env.video(&vid).sha256.as_deref(),
        Some(sha256(&big).as_str())
    );
}

#[test]
fn with_in_doubt_fail_a_one_request_file_cut_off_by_a_crash_waits_for_a_person() {
    let env = Env::new();
    let watch = std::fs::canonicalize(&env.media).unwrap();
    env.write_config(
        "8MiB",
        &format!(
            "in_doubt = \"fail\"\n\n[[watch]]\npath = \"{}\"\nsettle = \"100ms\"\n",
            watch.display()
        ),
    );
    let small = env.file("small.mp4", 300_000, 35);
    let other = env.file("other.mp4", 300_000, 36);
    // As a process killed while sending small.mp4 leaves the journal: the
    // row claimed, its one request about to go (or gone).
    {
        let mut j = ingestd::journal::Journal::open(&env.journal).unwrap();
        let meta = std::fs::metadata(&small).unwrap();
        let ident = ingestd::journal::FileIdentity::from_metadata(
            &watch,
            std::path::Path::new("small.mp4"),
            &meta,
        );
        let added = j
            .add_file(&ident, ingestd::journal::FileState::Queued)
            .unwrap();
        j.claim_next(ingestd::journal::now_ms(), Duration::from_secs(300), None)
            .unwrap()
            .unwrap();
        j.set_chunk_size(added.id, 8 * MIB).unwrap();
    }
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = rows(&env);
    let s = rows.iter().find(|r| r.path() == small).unwrap();
    assert_eq!(s.state.as_str(), "failed", "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("ingestd stopped while"),
        "{s:?}"
    );
    let o = rows.iter().find(|r| r.path() == other).unwrap();
    assert_eq!(o.state.as_str(), "done");
    assert_eq!(env.videos().len(), 1, "small.mp4 was not sent");
}

#[test]
fn a_journal_deleted_while_stopped_is_an_error_not_a_fresh_start() {
    let env = Env::new();
    let f = env.file("a.mp4", 1000, 30);
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_file(&env.journal).unwrap();
    let out = upload(&env, &[&f]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("was deleted, moved or truncated"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.emulator.stats().upload_requests,
        1,
        "nothing uploaded again"
    );
    assert!(!env.journal.exists(), "no new journal was made");
    // Starting afresh on purpose: remove the lock file.
    let mut lock = env.journal.clone().into_os_string();
    lock.push(".lock");
    std::fs::remove_file(lock).unwrap();
    let out = upload(&env, &[&f]);
    assert!(out.status.success(), "{}", text(&out));
}

/// `ingestd upload … | head -0`: the reader of stdout is gone before the
/// report is printed. The files are still uploaded, nothing panics, and the
/// exit status is the run's (0: all done); `status | head -0` likewise.
#[test]
fn a_closed_stdout_loses_the_report_not_the_uploads() {
    use std::process::Stdio;
    let env = Env::new();
    let a = env.file("a.mp4", MIB, 41);
    let b = env.file("b.mp4", 2 * MIB, 42);
    for args in [
        vec![
            "upload".to_owned(),
            a.display().to_string(),
            b.display().to_string(),
        ],
        vec!["status".to_owned()],
        vec!["status".to_owned(), "--json".to_owned()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = env
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end at once: every write to stdout fails (EPIPE).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
    done_video(&env, &a);
    done_video(&env, &b);
}

/// `check-config --online` against a server that is not there says why, with
/// the whole cause (the connection refused), as `upload` does.
#[test]
fn check_config_online_names_the_whole_cause_of_an_unreachable_server() {
    let env = Env::new();
    env.write_config("8MiB", "");
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    let cfg = cfg.replace(&env.emulator.base_url(), "http://127.0.0.1:1");
    std::fs::write(&env.config, cfg).unwrap();
    let out = env.run(&["check-config", "--online"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("cannot reach http://127.0.0.1:1") && all.contains("Connection refused"),
        "{all}"
    );
    assert!(!all.contains(TOKEN), "the token leaked: {all}");
}
