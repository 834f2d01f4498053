//! The bandwidth timetable (`upload.bandwidth_limit`), as a user meets it:
//! the real binary against the emulator on loopback. A scheduled pause
//! starts no chunk (the server sees no request) and shows in `/metrics`,
//! `status` and the log while `/healthz` stays healthy; a reload lifts it;
//! a pause that begins mid-upload lets the chunk in flight finish and gives
//! the file back to the queue, to resume on its videoId; a bad timetable
//! exits 78 naming the key, the place and the entry.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use ingestd::journal::FileState;

/// How long any single expected outcome may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);
/// How long the server must see nothing while a pause holds.
const QUIET: Duration = Duration::from_secs(3);

/// `ingestd run` in UTC (so the test knows what local time it is), once its
/// first scan is done.
fn daemon(env: &Env) -> Daemon {
    let child = env
        .cmd(&["run"])
        .env("TZ", "UTC")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let d = Daemon::from_child(child);
    assert!(d.wait_log("first scan done", WAIT), "{}", d.log());
    d
}

/// `HH:MM`, `minutes` after midnight (modulo a day).
fn clock(minutes: u64) -> String {
    let m = minutes % (24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// The UTC minute of the day now.
fn minute_now() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    secs / 60 % (24 * 60)
}

/// Whether `cond` holds at every look for the whole of `window` (it is
/// looked at every 20 ms; the first miss ends the watch).
fn holds_for(window: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        if !cond() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn requests(env: &Env) -> u64 {
    env.emulator.stats().upload_requests
}

fn metric(port: u16, name: &str) -> Option<String> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
}

fn write_config(env: &Env, chunk: &str, limit: &str, port: u16) {
    env.write_config(
        chunk,
        &format!(
            "bandwidth_limit = \"{limit}\"\n{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            watch(&env.media, "300ms", "")
        ),
    );
}

#[test]
fn a_scheduled_pause_starts_no_chunk_until_a_reload_lifts_it() {
    let env = Env::new();
    let port = free_port();
    // A pause that began an hour ago and ends in two hours, then unlimited.
    let now = minute_now();
    let (pause, off) = (clock(now + 24 * 60 - 60), clock(now + 120));
    let mut entries = [format!("{pause},pause"), format!("{off},off")];
    entries.sort();
    write_config(&env, "8MiB", &entries.join(" "), port);
    let d = daemon(&env);
    let holding = format!("paused until {off} (timetable), then unlimited");
    assert!(
        d.wait_log(&format!("bandwidth: {holding}"), WAIT),
        "the start says what holds:\n{}",
        d.log()
    );

    let f = env.file("clip.mp4", 3 * MIB, 1);
    assert!(
        wait_until(WAIT, || rows(&env)
            .iter()
            .any(|r| r.state == FileState::Queued)),
        "the file was never queued:\n{}",
        d.log()
    );
    // Queued and due, yet nothing reaches the server while the pause holds.
    assert!(
        holds_for(QUIET, || requests(&env) == 0
            && rows(&env).iter().all(|r| r.state == FileState::Queued)),
        "during the pause, a request went out ({} sent) or the file left the queue:\n{}",
        requests(&env),
        d.log()
    );
    // Planned, not a fault: healthy, and the pause shows.
    assert_eq!(http_get(port, "/healthz").map(|(code, _)| code), Some(200));
    assert_eq!(
        metric(port, "ingestd_bandwidth_paused").as_deref(),
        Some("1")
    );
    assert_eq!(
        metric(port, "ingestd_bandwidth_limit_bytes_per_second").as_deref(),
        Some("0")
    );
    let status = env.cmd(&["status"]).env("TZ", "UTC").output().unwrap();
    assert!(status.status.success(), "{}", text(&status));
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        shown.contains(&format!("bandwidth: {holding} (upload.bandwidth_limit)")),
        "{shown}"
    );
    // `status --json` keeps its shape: an array of files.
    assert!(env.status().iter().all(|r| r.get("id").is_some()));

    // A reload lifts it: the file goes.
    write_config(&env, "8MiB", "8MiB", port);
    signal(&d.child, 1);
    assert!(d.wait_log("configuration reloaded", WAIT), "{}", d.log());
    assert!(
        wait_until(WAIT, || rows(&env)
            .iter()
            .any(|r| r.state == FileState::Done)),
        "the file never went after the reload:\n{}",
        d.log()
    );
    assert!(d.log().contains("bandwidth: 8 MiB/s"), "{}", d.log());
    assert_eq!(
        metric(port, "ingestd_bandwidth_paused").as_deref(),
        Some("0")
    );
    assert_eq!(
        metric(port, "ingestd_bandwidth_limit_bytes_per_second").as_deref(),
        Some(&*(8 * MIB).to_string())
    );
    let videos = env.videos();
    assert_eq!(videos.len(), 1, "{videos:?}");
    assert_eq!(videos[0].sha256.as_deref(), Some(sha256(&f).as_str()));
    stop_ok(d);
}

#[test]
fn a_pause_that_begins_mid_upload_lets_the_chunk_finish_and_resumes_on_its_video() {
    let env = Env::new();
    let port = free_port();
    // 16 MiB in 5 MiB chunks at 2 MiB/s: a chunk takes 2.5 s.
    write_config(&env, "5MiB", "2MiB", port);
    let d = daemon(&env);
    let f = env.file("long.mp4", 16 * MIB, 2);
    assert!(
        wait_until(WAIT, || rows(&env)
            .iter()
            .any(|r| r.bytes_uploaded >= 5 * MIB)),
        "the first chunk never went:\n{}",
        d.log()
    );
    write_config(&env, "5MiB", "pause", port);
    signal(&d.child, 1);
    assert!(d.wait_log("configuration reloaded", WAIT), "{}", d.log());
    // The chunk in flight finishes; the file goes back to the queue, its
    // progress kept, saying why.
    let mut paused_at = None;
    assert!(
        wait_until(WAIT, || {
            let rows = rows(&env);
            let row = rows.first();
            let note = row.and_then(|r| r.last_error.clone()).unwrap_or_default();
            if row.is_some_and(|r| r.state == FileState::Queued)
                && note.contains("upload.bandwidth_limit")
            {
                paused_at = row.map(|r| (r.bytes_uploaded, r.video_id.clone()));
                true
            } else {
                false
            }
        }),
        "the file was not given back:\n{}",
        d.log()
    );
    let (offset, video_id) = paused_at.unwrap();
    assert!((5 * MIB..16 * MIB).contains(&offset), "{offset}");
    assert!(video_id.is_some());
    let sent = requests(&env);
    assert!(
        holds_for(QUIET, || requests(&env) == sent),
        "a chunk started during the pause:\n{}",
        d.log()
    );
    assert_eq!(
        metric(port, "ingestd_bandwidth_paused").as_deref(),
        Some("1")
    );
    assert!(
        !d.log().contains("will retry"),
        "not a failure:\n{}",
        d.log()
    );

    write_config(&env, "5MiB", "0", port);
    signal(&d.child, 1);
    assert!(
        wait_until(WAIT, || rows(&env)
            .iter()
            .any(|r| r.state == FileState::Done)),
        "the file never resumed:\n{}",
        d.log()
    );
    let row = rows(&env).into_iter().next().unwrap();
    assert_eq!(row.video_id, video_id, "resumed on the same video");
    assert_eq!(row.attempts, 0);
    let videos = env.videos();
    assert_eq!(videos.len(), 1, "{videos:?}");
    assert_eq!(videos[0].sha256.as_deref(), Some(sha256(&f).as_str()));
    stop_ok(d);
}

#[test]
fn a_bad_timetable_exits_78_naming_the_key_the_place_and_the_entry() {
    let env = Env::new();
    let config = env.config.display().to_string();
    for (table, said) in [
        ("08:00,10MiB 25:00,off", "bad time \"25:00\""),
        ("Mon-08:00,10MiB Sut-00:00,off", "bad weekday \"Sut\""),
        ("08:00,10MiB 18:00,fast", "entry \"18:00,fast\": bad rate"),
        ("18:00,off 08:00,10MiB", "\"08:00,10MiB\" is unordered"),
        ("08:00,10MiB 08:00,off", "overlapping"),
        ("", "empty"),
    ] {
        // Line 11: the first line after `[upload]` and `concurrency`.
        env.write_config("8MiB", &format!("bandwidth_limit = \"{table}\""));
        for args in [&["check-config"][..], &["run"]] {
            let out = env.run(args);
            assert_eq!(
                out.status.code(),
                Some(78),
                "{table:?} {args:?}: {}",
                text(&out)
            );
            let err = String::from_utf8_lossy(&out.stderr);
            for part in ["invalid `upload.bandwidth_limit`", &config, "line 11", said] {
                assert!(err.contains(part), "{table:?}: no {part:?} in: {err}");
            }
        }
    }
    assert!(
        !env.journal.exists(),
        "a refused config created the journal"
    );
    // From the environment, the variable is named.
    env.write_config("8MiB", "");
    let out = env
        .cmd(&["check-config"])
        .env("INGESTD_UPLOAD__BANDWIDTH_LIMIT", "08:00,10MiB 07:00,off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INGESTD_UPLOAD__BANDWIDTH_LIMIT"), "{err}");
    assert!(err.contains("\"07:00,off\" is unordered"), "{err}");
    // A good one is rendered back by check-config.
    env.write_config(
        "8MiB",
        "bandwidth_limit = \"Mon-08:00,10MiB Sat-00:00,off\"",
    );
    let out = env.run(&["check-config"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("bandwidth_limit = \"Mon-08:00,10MiB Sat-00:00,off\"  # timetable"),
        "{}",
        text(&out)
    );
}
