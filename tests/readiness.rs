//! Media-aware readiness: recordings made by a real recorder (ffmpeg), some
//! killed mid-recording, watched by the real binary against the emulator; and
//! `run --once`, which uploads what is ready and never waits on a recording.
//!
//! Needs `ffmpeg`; without it these tests skip loudly, unless
//! `CI_REQUIRE_FFMPEG=1` (set by `.ci/run`), which makes its absence a failure.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ingestd::emulator::Fault;
use ingestd::journal::FileState;

/// How long any single expected outcome may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// Whether ffmpeg is there; without it a test skips, loudly (or fails, when
/// CI requires it).
fn have_ffmpeg() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI_REQUIRE_FFMPEG").is_none(),
            "CI_REQUIRE_FFMPEG is set but ffmpeg cannot be run"
        );
        eprintln!(
            "\n*** SKIPPED: ffmpeg is not installed; the readiness tests record real \
             media with it (apt-get install ffmpeg) ***\n"
        );
    }
    ok
}

/// The ffmpeg command of a 1280x720 test-pattern recording into `out`
/// (`-re` first: in real time, as a camera delivers it).
fn recorder(out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]);
    let extra = match extra.first() {
        Some(&"-re") => {
            c.arg("-re");
            &extra[1..]
        }
        _ => extra,
    };
    c.args(["-f", "lavfi", "-i", "testsrc=size=1280x720:rate=25"])
        .args(extra)
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// A finished recording of `seconds`.
fn record(out: &Path, seconds: &str, extra: &[&str]) {
    let mut args = vec!["-t", seconds];
    args.extend_from_slice(extra);
    let o = recorder(out, &args).output().unwrap();
    assert!(
        o.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A recording killed (SIGKILL) once it has written `bytes`: what a recorder
/// that crashed leaves.
fn record_killed(out: &Path, bytes: u64, extra: &[&str]) {
    let mut child = recorder(out, extra).spawn().unwrap();
    let grown = wait_until(WAIT, || fs::metadata(out).is_ok_and(|m| m.len() >= bytes));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(grown, "the recording never reached {bytes} bytes");
}

/// An H.264 MP4 whose recorder was killed after 256 KiB (`mdat` of size 0,
/// no `moov`), made outside the watch folder: its path.
fn crashed_recording(env: &Env) -> PathBuf {
    let work = env.dir.path().join("recordings");
    fs::create_dir_all(&work).unwrap();
    let crashed = work.join("crashed.mp4");
    record_killed(
        &crashed,
        256 * 1024,
        &["-c:v", "libx264", "-preset", "ultrafast"],
    );
    crashed
}

/// The top-level boxes of an MP4: (kind, offset, size).
fn boxes(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned();
        let size = match size {
            0 => bytes.len() - at,
            1 => u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap()) as usize,
            n => n,
        };
        out.push((kind, at, size));
        at += size;
    }
    out
}

/// `finished` with its `free` + `mdat` headers rewritten as one 64-bit mdat
/// header, as a recorder does for an mdat past 4 GiB: the same media at the
/// same offsets.
fn with_64_bit_mdat(finished: &[u8]) -> Vec<u8> {
    let b = boxes(finished);
    let free = b.iter().position(|(k, _, s)| k == "free" && *s == 8);
    let free = free.expect("ffmpeg reserves an 8-byte free box before mdat");
    let (kind, mdat_at, mdat_size) = &b[free + 1];
    assert_eq!(kind, "mdat", "{b:?}");
    let start = b[free].1;
    assert_eq!(start + 8, *mdat_at);
    let mut out = finished[..start].to_vec();
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(b"mdat");
    out.extend_from_slice(&(*mdat_size as u64 + 8).to_be_bytes());
    out.extend_from_slice(&finished[mdat_at + 8..]);
    assert_eq!(out.len(), finished.len());
    out
}

fn status_of(env: &Env, path: &Path) -> Option<serde_json::Value> {
    env.status()
        .into_iter()
        .find(|r| r["path"].as_str() == path.to_str())
}

fn state_of(env: &Env, path: &Path) -> Option<String> {
    status_of(env, path).and_then(|r| r["state"].as_str().map(str::to_owned))
}

fn note_of(env: &Env, path: &Path) -> String {
    status_of(env, path)
        .and_then(|r| r["last_error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn complete_videos(env: &Env) -> Vec<ingestd::emulator::VideoReport> {
    env.videos().into_iter().filter(|v| v.complete).collect()
}

/// The video a done file became, checked byte for byte.
fn assert_uploaded_whole(env: &Env, path: &Path) {
    let row = status_of(env, path).expect("journaled");
    assert_eq!(row["state"], "done", "{row}");
    let video = env.video(row["video_id"].as_str().expect("a videoId"));
    assert!(video.complete, "{video:?}");
    assert_eq!(
        video.sha256.as_deref(),
        Some(sha256(path).as_str()),
        "{video:?}"
    );
}

#[test]
fn containers_are_held_or_sent_by_what_their_boxes_say() {
    if !have_ffmpeg() {
        return;
    }
    let env = Env::new();
    let work = env.dir.path().join("recordings");
    fs::create_dir_all(&work).unwrap();
    // Made outside the watch folder, then moved in whole.
    let finished = work.join("finished.mp4");
    record(&finished, "2", &["-c:v", "libx264", "-preset", "ultrafast"]);
    let fragmented = work.join("fragmented.mp4");
    record(
        &fragmented,
        "2",
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-movflags",
            "frag_keyframe+empty_moov",
        ],
    );
    let closed_mxf = work.join("closed.mxf");
    record(&closed_mxf, "2", &["-c:v", "mpeg2video", "-f", "mxf"]);
    let crashed = work.join("crashed.mp4");
    record_killed(
        &crashed,
        256 * 1024,
        &["-c:v", "libx264", "-preset", "ultrafast"],
    );
    let open_mxf = work.join("open.mxf");
    record_killed(&open_mxf, 512 * 1024, &["-c:v", "mpeg2video", "-f", "mxf"]);
    let whole = fs::read(&finished).unwrap();
    let b = boxes(&whole);
    assert_eq!(b.last().unwrap().0, "moov", "ffmpeg puts moov last: {b:?}");
    let truncated = work.join("truncated.mp4");
    // Cut inside the moov box, the last one.
    fs::write(&truncated, &whole[..whole.len() - 300]).unwrap();
    let large = work.join("large-mdat.mp4");
    fs::write(&large, with_64_bit_mdat(&whole)).unwrap();

    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let d = Daemon::ready(&env);
    let inside = |p: &Path| {
        let to = env.media.join(p.file_name().unwrap());
        fs::rename(p, &to).unwrap();
        to
    };
    let sent: Vec<PathBuf> = [&finished, &fragmented, &closed_mxf, &large]
        .into_iter()
        .map(|p| inside(p))
        .collect();
    let held: Vec<(PathBuf, &str)> = [
        (&crashed, "mdat has size 0 and there is no moov"),
        (&truncated, "the moov box at byte"),
        (&open_mxf, "MXF"),
    ]
    .into_iter()
    .map(|(p, why)| (inside(p), why))
    .collect();

    assert!(
        wait_until(WAIT, || sent
            .iter()
            .all(|p| state_of(&env, p).as_deref() == Some("done"))),
        "finished recordings not uploaded: {:#?}\n{}",
        env.status(),
        d.log()
    );
    for p in &sent {
        assert_uploaded_whole(&env, p);
    }
    assert!(
        wait_until(WAIT, || held
            .iter()
            .all(|(p, _)| note_of(&env, p).starts_with("incomplete: "))),
        "unfinished recordings not shown as incomplete: {:#?}\n{}",
        env.status(),
        d.log()
    );
    for (p, why) in &held {
        let row = status_of(&env, p).unwrap();
        assert_eq!(row["state"], "settling", "{row}");
        let note = row["last_error"].as_str().unwrap();
        assert!(note.contains(why), "{}: {note}", p.display());
        assert_eq!(row["bytes_uploaded"], 0, "{row}");
    }
    assert_eq!(
        complete_videos(&env).len(),
        sent.len(),
        "{:?}",
        env.videos()
    );
    assert_eq!(
        env.videos().len(),
        sent.len(),
        "nothing was started for the held files"
    );
    stop_ok(d);
}

#[test]
fn a_recording_that_pauses_is_held_and_sent_once_whole_when_its_writer_finishes() {
    if !have_ffmpeg() {
        return;
    }
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "500ms", ""));
    let d = Daemon::ready(&env);
    let clip = env.media.join("live.mp4");
    // A real-time recording of 6 s, stopped (SIGSTOP) for a while after it
    // started: a recorder that stalls with its mdat still open.
    let rec: Child = recorder(
        &clip,
        &[
            "-re",
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-flush_packets",
            "1",
        ],
    )
    .spawn()
    .unwrap();
    assert!(
        wait_until(WAIT, || fs::metadata(&clip)
            .is_ok_and(|m| m.len() > 64 * 1024)),
        "the recording did not start"
    );
    signal(&rec, SIGSTOP);
    let held = wait_until(WAIT, || {
        note_of(&env, &clip).contains("mdat has size 0 and there is no moov")
    });
    let during = env.videos().len();
    signal(&rec, SIGCONT);
    assert!(
        held,
        "the stalled recording was not held: {:#?}\n{}",
        env.status(),
        d.log()
    );
    assert_eq!(during, 0, "a video was started for an unfinished recording");
    let out = rec.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_until(WAIT, || state_of(&env, &clip).as_deref() == Some("done")),
        "the finished recording was not uploaded: {:#?}\n{}",
        env.status(),
        d.log()
    );
    assert_uploaded_whole(&env, &clip);
    assert_eq!(env.videos().len(), 1, "sent once: {:?}", env.videos());
    let row = status_of(&env, &clip).unwrap();
    assert_eq!(row["size"], fs::metadata(&clip).unwrap().len(), "{row}");
    stop_ok(d);
}

const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

#[test]
fn an_unfinished_recording_fails_after_incomplete_timeout_and_retry_sends_it() {
    if !have_ffmpeg() {
        return;
    }
    let env = Env::new();
    let crashed = crashed_recording(&env);
    env.write_config(
        "8MiB",
        &watch(&env.media, "300ms", "incomplete_timeout = \"2s\""),
    );
    let d = Daemon::ready(&env);
    let clip = env.media.join("crashed.mp4");
    fs::rename(&crashed, &clip).unwrap();
    let started = Instant::now();
    assert!(
        wait_until(WAIT, || state_of(&env, &clip).as_deref() == Some("failed")),
        "never failed: {:#?}\n{}",
        env.status(),
        d.log()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "failed before its incomplete_timeout"
    );
    let row = status_of(&env, &clip).unwrap();
    let note = row["last_error"].as_str().unwrap();
    for part in [
        "mdat has size 0 and there is no moov",
        "incomplete_timeout (2s)",
        "ingestd retry",
    ] {
        assert!(note.contains(part), "{part:?} not in {note}");
    }
    assert!(env.videos().is_empty());
    assert!(
        d.line_with(&["ERROR", "crashed.mp4", "incomplete_timeout"])
            .is_some(),
        "the failure is not logged as an error:\n{}",
        d.log()
    );
    // An operator who knows better sends it as it is.
    let id = row["id"].as_i64().unwrap().to_string();
    let out = env.run(&["retry", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(WAIT, || state_of(&env, &clip).as_deref() == Some("done")),
        "retry did not upload it: {:#?}\n{}",
        env.status(),
        d.log()
    );
    assert_uploaded_whole(&env, &clip);
    stop_ok(d);
}

#[test]
fn readiness_settle_sends_an_unfinished_recording_once_it_settles() {
    if !have_ffmpeg() {
        return;
    }
    let env = Env::new();
    let crashed = crashed_recording(&env);
    let clip = env.media.join("crashed.mp4");
    fs::rename(&crashed, &clip).unwrap();
    env.write_config(
        "8MiB",
        &watch(&env.media, "300ms", "readiness = \"settle\""),
    );
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_uploaded_whole(&env, &clip);

    // The default judges the same bytes unfinished, and says so.
    let other = env.dir.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let copy = other.join("crashed-copy.mp4");
    fs::copy(&clip, &copy).unwrap();
    env.write_config("8MiB", &watch(&other, "300ms", ""));
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("not ready")
            && l.contains("crashed-copy.mp4")
            && l.contains("mdat has size 0")),
        "{}",
        text(&out)
    );
    assert_eq!(env.videos().len(), 1, "{:?}", env.videos());
}

// run --once ───────────────────────────────────────────────────────────────

#[test]
fn run_once_uploads_the_finished_files_and_names_the_one_still_being_written() {
    if !have_ffmpeg() {
        return;
    }
    let env = Env::new();
    let work = env.dir.path().join("recordings");
    fs::create_dir_all(&work).unwrap();
    let mut finished = Vec::new();
    for name in ["a.mp4", "b.mp4", "c.mxf"] {
        let p = work.join(name);
        let codec: &[&str] = if name.ends_with("mxf") {
            &["-c:v", "mpeg2video", "-f", "mxf"]
        } else {
            &["-c:v", "libx264", "-preset", "ultrafast"]
        };
        record(&p, "1", codec);
        let to = env.media.join(name);
        fs::rename(&p, &to).unwrap();
        finished.push(to);
    }
    let settle = Duration::from_secs(2);
    env.write_config("8MiB", &watch(&env.media, "2s", ""));
    // A writer that appends every 0.5 s for 30 s.
    let growing = env.media.join("growing.mp4");
    let path = growing.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_writer = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut f = fs::File::create(&path).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut block = vec![0u8; 64 * 1024];
        for _ in 0..60 {
            if stop_writer.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            rng.fill(&mut block);
            f.write_all(&block).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    assert!(wait_until(WAIT, || growing.exists()));
    let started = Instant::now();
    let out = env.cmd(&["run", "--once"]).output().unwrap();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        took < settle + Duration::from_secs(8),
        "took {took:?}: it waited on the file being written\n{}",
        text(&out)
    );
    for p in &finished {
        assert_uploaded_whole(&env, p);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("not ready") && l.contains("growing.mp4")),
        "the file left for the next run is not named:\n{}",
        text(&out)
    );
    assert!(stdout.contains("1 file not ready yet"), "{}", text(&out));
    assert_eq!(env.videos().len(), 3, "{:?}", env.videos());
    assert_eq!(state_of(&env, &growing).as_deref(), Some("settling"));
}

#[test]
fn run_once_uploads_what_it_scanned_and_leaves_a_later_batch_for_the_next_run() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, "300ms", ""));
    let first: Vec<PathBuf> = (0..20)
        .map(|i| env.file(&format!("first-{i:03}.mov"), 64 * 1024, i))
        .collect();
    // Each upload request of the first batch takes 300 ms: the run lasts
    // long enough for the second batch to land during it.
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(300))); 20]);
    let mut run = Daemon::spawn(&env, &["run", "--once"]);
    // The second batch lands once the first is being uploaded.
    assert!(
        wait_until(WAIT, || !env.videos().is_empty()),
        "nothing was uploaded:\n{}",
        run.log()
    );
    let second: Vec<PathBuf> = (0..40)
        .map(|i| env.file(&format!("second-{i:03}.mov"), 64 * 1024, 100 + i))
        .collect();
    assert!(
        run.running(),
        "the run ended before the second batch landed:\n{}",
        run.log()
    );
    let (code, log) = run.wait(WAIT);
    assert_eq!(code, Some(0), "{log}");
    let all = rows(&env);
    for p in &first {
        let row = all.iter().find(|r| &r.path() == p).expect("journaled");
        assert_eq!(row.state, FileState::Done, "{row:?}");
    }
    for p in &second {
        let row = all.iter().find(|r| &r.path() == p);
        assert!(
            row.is_none_or(|r| r.state == FileState::Settling),
            "a file that arrived after the scan was taken: {row:?}"
        );
    }
    assert_eq!(env.videos().len(), first.len());
    // The next run takes them, once.
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = rows(&env);
    for p in first.iter().chain(&second) {
        let row = all.iter().find(|r| &r.path() == p).expect("journaled");
        assert_eq!(row.state, FileState::Done, "{row:?}");
    }
    assert_eq!(env.videos().len(), first.len() + second.len());
}
