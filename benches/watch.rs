//! Watch-folder benchmark: the real `ingestd run` against the emulator
//! (unlimited rate) on loopback.
//!
//! 1. 10,000 small files dropped at once into a watched folder: the rate at
//!    which they are journaled, the time until all are uploaded, and a check
//!    that each was uploaded exactly once.
//! 2. Start-up with 100,000 files already journaled `done`: time from start
//!    until the first scan is over (the daemon is ready).
//! 3. Latency from the moment a file stops changing to its first byte sent
//!    (the claim of its upload): `settle` plus what.
//! 4. A share remounted or restored: 10,000 files of 2 MiB (random bytes,
//!    not sparse) journaled `done` with their content samples, then every
//!    device number changed as a remount leaves it. The first scan must read
//!    each file's sample (2 MiB) to re-identify it: its time against the
//!    same scan with the hints unchanged gives the sample's cost per file,
//!    with a warm page cache and, where `/proc/sys/vm/drop_caches` can be
//!    written, a cold one.
//!
//! 5. `run --once` against the daemon: the same N files of 2 KiB (random
//!    bytes) already in a polled share, uploaded once by `ingestd run` (from
//!    its start until the journal has them all `done`) and once by
//!    `ingestd run --once` (from start to exit), each with a fresh journal
//!    and emulator (an `ingestd emulator` process): wall time and CPU (the process's own, from `wait4`) as
//!    ratios, and CPU per file at every N (1,000 to 100,000): a foreground
//!    run's cost per file must not grow with its batch.
//!
//! Each figure is the median of several runs, with min and max.
//!
//! `cargo bench --bench watch` (env: BENCH_BURST, default 10000;
//! BENCH_BURST_RUNS, default 3; BENCH_STARTUP, default 100000, 5 starts;
//! BENCH_REMOUNT, default 10000 files; BENCH_ONCE, default 1000,10000,100000;
//! BENCH_ONLY=latency|startup|burst|remount|once).

mod common;

use common::{env_u64, ingestd_bin, spawn_emulator, stats};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ingestd::emulator::{Emulator, EmulatorOptions};
use ingestd::journal::{FileIdentity, FileState, Journal};

const TOKEN: &str = "to1benchTOKEN";

fn config(dir: &Path, base: &str, watch: &Path, settle: &str, journal: &Path) -> PathBuf {
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\nbase_url = \"{base}\"\ntoken = \"{TOKEN}\"\n[journal]\npath = \"{}\"\n\
             [upload]\nconcurrency = 2\n[[watch]]\npath = \"{}\"\nsettle = \"{settle}\"\nmode = \"events\"\n",
            journal.display(),
            watch.display()
        ),
    )
    .expect("config");
    cfg
}

/// Starts `ingestd run`, its log in `LOG` beside the config (a pipe nobody
/// reads would fill and block the daemon).
fn start(cfg: &Path) -> Child {
    let log = std::fs::File::create(cfg.with_file_name(LOG)).expect("log file");
    Command::new(ingestd_bin())
        .arg("--config")
        .arg(cfg)
        .arg("run")
        .env("INGESTD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn ingestd")
}

const LOG: &str = "ingestd.log";

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

fn rows(journal: &Path) -> Vec<ingestd::journal::FileRow> {
    Journal::open_read_only(journal)
        .and_then(|j| j.list(None))
        .unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

fn emulator(rt: &tokio::runtime::Runtime, dir: &Path) -> Emulator {
    rt.block_on(Emulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        EmulatorOptions {
            data_dir: dir.join("emulator"),
            tokens: vec![TOKEN.to_owned()],
            api_keys: Vec::new(),
            rate_limit: 0,
            rate_window: Duration::from_secs(60),
        },
    ))
    .expect("emulator")
}

/// One burst: seconds to write the files, to journal them all (from the
/// first write), to upload them all.
fn burst_once(rt: &tokio::runtime::Runtime, n: u64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = emulator(rt, dir.path());
    let watch = dir.path().join("in");
    std::fs::create_dir_all(&watch).expect("mkdir");
    let journal = dir.path().join("j.db");
    let cfg = config(dir.path(), &emu.base_url(), &watch, "1s", &journal);
    let child = start(&cfg);
    wait_for("the journal", Duration::from_secs(30), || journal.exists());
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    for i in 0..n {
        std::fs::write(watch.join(format!("clip-{i:05}.mp4")), format!("clip {i}")).expect("write");
    }
    let dropped = t0.elapsed();
    let journaled = wait_for("every file journaled", Duration::from_secs(300), || {
        rows(&journal).len() as u64 >= n
    }) + dropped;
    let all_done = wait_for("every file uploaded", Duration::from_secs(1800), || {
        Journal::open_read_only(&journal)
            .and_then(|j| j.counts())
            .map(|c| c.get(&FileState::Done).copied().unwrap_or(0) >= n)
            .unwrap_or(false)
    }) + journaled;
    stop(child);
    let rows = rows(&journal);
    let videos = emu.videos();
    let complete = videos.iter().filter(|v| v.complete).count() as u64;
    let mut titles: Vec<&str> = videos.iter().map(|v| v.title.as_str()).collect();
    titles.sort_unstable();
    titles.dedup();
    assert_eq!(rows.len() as u64, n, "every file journaled once");
    assert_eq!(complete, n, "every file uploaded exactly once");
    assert_eq!(titles.len() as u64, n, "no file uploaded twice");
    (
        dropped.as_secs_f64(),
        journaled.as_secs_f64(),
        all_done.as_secs_f64(),
    )
}

fn burst(rt: &tokio::runtime::Runtime, n: u64, runs: usize) {
    let (mut written, mut journaled, mut done) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (w, j, d) = burst_once(rt, n);
        written.push(w);
        journaled.push(j);
        done.push(d);
    }
    let (w, wmin, wmax) = stats(&written);
    let (j, jmin, jmax) = stats(&journaled);
    let (d, dmin, dmax) = stats(&done);
    println!(
        "burst of {n} files, median of {runs} [min–max]: written in {w:.2}s [{wmin:.2}–{wmax:.2}]; \
         all journaled after {j:.2}s [{jmin:.2}–{jmax:.2}] ({:.0} files/s); \
         all uploaded after {d:.1}s [{dmin:.1}–{dmax:.1}]; every run: {n} rows, {n} complete videos, none twice",
        n as f64 / j
    );
}

fn startup(rt: &tokio::runtime::Runtime, n: u64, runs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = emulator(rt, dir.path());
    let watch = dir.path().join("in");
    std::fs::create_dir_all(&watch).expect("mkdir");
    let journal = dir.path().join("j.db");
    let root = ingestd::watch::journal_root(&watch);
    let mut idents = Vec::with_capacity(n as usize);
    for i in 0..n {
        let rel = PathBuf::from(format!("d{:03}/clip-{i:06}.mp4", i % 500));
        let p = root.join(&rel);
        if i < 500 {
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        }
        std::fs::write(&p, b"x").expect("write");
        let meta = std::fs::metadata(&p).expect("stat");
        idents.push(FileIdentity::from_metadata(&root, &rel, &meta));
    }
    {
        let mut j = Journal::open(&journal).expect("journal");
        j.add_files(&idents, FileState::Queued).expect("add");
    }
    // Marking 100,000 rows done one guarded transition at a time would take
    // minutes of fsyncs; the benchmark sets them directly.
    let conn = rusqlite::Connection::open(&journal).expect("sqlite");
    conn.execute(
        "UPDATE files SET state = 'done', video_id = 'vibench', bytes_uploaded = size",
        [],
    )
    .expect("mark done");
    drop(conn);
    let cfg = config(dir.path(), &emu.base_url(), &watch, "1s", &journal);
    let log = cfg.with_file_name(LOG);
    let mut ready = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_file(&log);
        let child = start(&cfg);
        ready.push(
            wait_for("the first scan", Duration::from_secs(600), || {
                std::fs::read_to_string(&log).is_ok_and(|l| l.contains("first scan done"))
            })
            .as_secs_f64(),
        );
        stop(child);
    }
    let (r, rmin, rmax) = stats(&ready);
    println!(
        "start-up with {n} files journaled done, median of {runs} starts [min–max]: ready after {r:.2}s [{rmin:.2}–{rmax:.2}]; {} upload requests (expected 0)",
        emu.stats().upload_requests
    );
    assert_eq!(
        emu.stats().upload_requests,
        0,
        "nothing done is uploaded again"
    );
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn latency(rt: &tokio::runtime::Runtime, files: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = emulator(rt, dir.path());
    let watch = dir.path().join("in");
    std::fs::create_dir_all(&watch).expect("mkdir");
    let journal = dir.path().join("j.db");
    let settle_ms = 1000;
    let cfg = config(dir.path(), &emu.base_url(), &watch, "1s", &journal);
    let child = start(&cfg);
    wait_for("the journal", Duration::from_secs(30), || journal.exists());
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = Vec::new();
    for i in 0..files {
        let p = watch.join(format!("take-{i}.mp4"));
        std::fs::write(&p, vec![7u8; 100_000]).expect("write");
        let stopped = now_ms();
        wait_for("the upload to start", Duration::from_secs(30), || {
            rows(&journal).iter().any(|r| {
                r.identity.rel_path == Path::new(&format!("take-{i}.mp4")) && r.started_at.is_some()
            })
        });
        let started = rows(&journal)
            .into_iter()
            .find(|r| r.identity.rel_path == Path::new(&format!("take-{i}.mp4")))
            .and_then(|r| r.started_at)
            .expect("started");
        extra.push((started - stopped - settle_ms) as f64 / 1000.0);
    }
    stop(child);
    extra.sort_by(|a, b| a.total_cmp(b));
    println!(
        "latency from the last write to the upload's start, over {files} files: settle (1s) + {:.3}s median [{:.3}–{:.3}] (goal: settle + < 0.5s)",
        extra[extra.len() / 2],
        extra[0],
        extra[extra.len() - 1]
    );
}

/// Drops the page cache, if this process may: then reads come from the disk.
fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn remount(rt: &tokio::runtime::Runtime, n: u64, runs: usize) {
    const SIZE: usize = 2 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = emulator(rt, dir.path());
    let watch = dir.path().join("in");
    let journal = dir.path().join("j.db");
    let root = ingestd::watch::journal_root(&watch);
    let mut base = vec![0u8; SIZE];
    fastrand::fill(&mut base);
    let mut idents = Vec::with_capacity(n as usize);
    let written = Instant::now();
    for i in 0..n {
        let rel = PathBuf::from(format!("d{:02}/clip-{i:05}.mp4", i % 100));
        let p = root.join(&rel);
        if i < 100 {
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        }
        // Each file its own head and tail, so each has its own sample.
        base[..8].copy_from_slice(&i.to_le_bytes());
        base[SIZE - 8..].copy_from_slice(&i.to_le_bytes());
        std::fs::write(&p, &base).expect("write");
        let meta = std::fs::metadata(&p).expect("stat");
        idents.push(FileIdentity::from_metadata(&root, &rel, &meta));
    }
    let written = written.elapsed();
    {
        let mut j = Journal::open(&journal).expect("journal");
        let added = j.add_files(&idents, FileState::Queued).expect("add");
        let conn = rusqlite::Connection::open(&journal).expect("sqlite");
        conn.execute_batch("BEGIN").expect("begin");
        for (ident, a) in idents.iter().zip(added) {
            let f = std::fs::File::open(ident.path()).expect("open");
            let sample = ingestd::sample::Sample::of_file(&f, ident.size).expect("sample");
            conn.execute(
                "UPDATE files SET state = 'done', video_id = 'vibench', bytes_uploaded = size, \
                 sample = ?2 WHERE id = ?1",
                rusqlite::params![a.id, sample.0.to_vec()],
            )
            .expect("mark done");
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    let cfg = config(dir.path(), &emu.base_url(), &watch, "1s", &journal);
    let log = cfg.with_file_name(LOG);
    let scan = |remounted: bool, cold: bool| -> Option<f64> {
        if remounted {
            let conn = rusqlite::Connection::open(&journal).expect("sqlite");
            conn.execute("UPDATE files SET dev = dev + 1", [])
                .expect("hints");
        }
        if cold && !drop_caches() {
            return None;
        }
        let _ = std::fs::remove_file(&log);
        let child = start(&cfg);
        let took = wait_for("the first scan", Duration::from_secs(1800), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("first scan done"))
        });
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        stop(child);
        assert_eq!(
            remounted,
            text.contains(&format!("{n} files re-identified by their content")),
            "{text}"
        );
        Some(took.as_secs_f64())
    };
    let steady: Vec<f64> = (0..runs).filter_map(|_| scan(false, false)).collect();
    let warm: Vec<f64> = (0..runs).filter_map(|_| scan(true, false)).collect();
    let cold: Vec<f64> = (0..runs).filter_map(|_| scan(true, true)).collect();
    let (st, stmin, stmax) = stats(&steady);
    let (w, wmin, wmax) = stats(&warm);
    println!(
        "remount of {n} files of 2 MiB (written in {:.1}s), median of {runs} [min–max]: first scan with the hints unchanged {st:.2}s [{stmin:.2}–{stmax:.2}]; \
         after a remount (every file sampled and re-identified), warm cache {w:.2}s [{wmin:.2}–{wmax:.2}] = {:.3} ms per file for the sample",
        written.as_secs_f64(),
        (w - st) * 1000.0 / n as f64
    );
    if cold.is_empty() {
        println!("  (cold cache not measured: /proc/sys/vm/drop_caches cannot be written here)");
    } else {
        let (c, cmin, cmax) = stats(&cold);
        println!(
            "  cold cache {c:.2}s [{cmin:.2}–{cmax:.2}] = {:.3} ms per file",
            (c - st) * 1000.0 / n as f64
        );
    }
    assert_eq!(emu.stats().upload_requests, 0, "nothing is sent again");
}

fn main() {
    // The emulator's control API is read with reqwest, which needs a TLS
    // provider chosen even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "latency" {
        latency(&rt, 10);
    }
    if only.is_empty() || only == "startup" {
        startup(&rt, env_u64("BENCH_STARTUP", 100_000), 5);
    }
    if only.is_empty() || only == "remount" {
        remount(&rt, env_u64("BENCH_REMOUNT", 10_000), 3);
    }
    if only.is_empty() || only == "once" {
        let sizes = std::env::var("BENCH_ONCE").unwrap_or_else(|_| "1000,10000,100000".into());
        once_vs_daemon(&rt, &sizes);
    }
    if only.is_empty() || only == "burst" {
        burst(
            &rt,
            env_u64("BENCH_BURST", 10_000),
            env_u64("BENCH_BURST_RUNS", 3) as usize,
        );
    }
}

/// Reaps `child` with `wait4`: its exit status, its own CPU seconds and its
/// peak RSS in MiB.
// The child is reaped by `wait4` (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn reap(child: Child) -> (std::process::ExitStatus, f64, f64) {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 fills it for
    // our own child `pid`, which has not been waited for yet.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        std::process::ExitStatus::from_raw(status),
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as f64 / 1024.0,
    )
}

/// `n` files of 2 KiB of random bytes, 1,000 to a folder.
fn small_files(root: &Path, n: u64) {
    let mut rng = fastrand::Rng::with_seed(n);
    let mut buf = vec![0u8; 2048];
    for i in 0..n {
        let dir = root.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).expect("mkdir");
        }
        rng.fill(&mut buf);
        std::fs::write(dir.join(format!("clip-{i:06}.mp4")), &buf).expect("write");
    }
}

/// A config for `watch` polled every second, with a fresh journal under `dir`.
fn polled_config(dir: &Path, base: &str, watch: &Path) -> (PathBuf, PathBuf) {
    let journal = dir.join("j.db");
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\nbase_url = \"{base}\"\ntoken = \"{TOKEN}\"\n[journal]\npath = \"{}\"\n\
             [upload]\nconcurrency = 2\n[[watch]]\npath = \"{}\"\nsettle = \"1s\"\n\
             mode = \"poll\"\npoll_interval = \"1s\"\n",
            journal.display(),
            watch.display()
        ),
    )
    .expect("config");
    (cfg, journal)
}

fn done_count(journal: &Path) -> u64 {
    Journal::open_read_only(journal)
        .and_then(|j| j.counts())
        .map(|c| c.get(&FileState::Done).copied().unwrap_or(0))
        .unwrap_or(0)
}

/// `ingestd emulator` in a process of its own (so that neither its work nor
/// the benchmark's polling shares a process with what is measured), killed
/// when dropped.
struct EmulatorProcess {
    child: Child,
    base: String,
}

impl EmulatorProcess {
    fn start(dir: &Path) -> Self {
        let (child, base) = spawn_emulator(Command::new(ingestd_bin()), dir, TOKEN);
        Self { child, base }
    }

    fn get(&self, rt: &tokio::runtime::Runtime, what: &str) -> serde_json::Value {
        let body = rt.block_on(async {
            reqwest::get(format!("{}/_emulator/{what}", self.base))
                .await
                .expect("emulator request")
                .bytes()
                .await
                .expect("emulator reply")
        });
        serde_json::from_slice(&body).expect("emulator JSON")
    }

    fn accepted_chunks(&self, rt: &tokio::runtime::Runtime) -> u64 {
        self.get(rt, "stats")["accepted_chunks"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Checks that every file was uploaded exactly once.
    fn exactly_once(&self, rt: &tokio::runtime::Runtime, journal: &Path, n: u64) {
        let videos = self.get(rt, "videos");
        let complete = videos
            .as_array()
            .expect("a list of videos")
            .iter()
            .filter(|v| v["complete"] == serde_json::Value::Bool(true))
            .count() as u64;
        assert_eq!(done_count(journal), n, "every file done");
        assert_eq!(complete, n, "every file uploaded exactly once");
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon over the files in `watch`: seconds until all are done, CPU,
/// peak RSS.
/// Each file is one chunk: the emulator's count of them says when to look
/// at the journal, so the journal is not read while the daemon works.
fn daemon_pass(rt: &tokio::runtime::Runtime, watch: &Path, n: u64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = EmulatorProcess::start(dir.path());
    let (cfg, journal) = polled_config(dir.path(), &emu.base, watch);
    let t0 = Instant::now();
    let child = start(&cfg);
    wait_for("every file uploaded", Duration::from_secs(3600), || {
        emu.accepted_chunks(rt) >= n
    });
    wait_for("every file done", Duration::from_secs(60), || {
        done_count(&journal) >= n
    });
    let wall = t0.elapsed().as_secs_f64();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let (_, cpu, rss) = reap(child);
    emu.exactly_once(rt, &journal, n);
    (wall, cpu, rss)
}

/// `run --once` over the files in `watch`: seconds to exit, CPU, peak RSS.
fn once_pass(rt: &tokio::runtime::Runtime, watch: &Path, n: u64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = EmulatorProcess::start(dir.path());
    let (cfg, journal) = polled_config(dir.path(), &emu.base, watch);
    let t0 = Instant::now();
    let child = Command::new(ingestd_bin())
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--once"])
        .env("INGESTD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ingestd");
    let (status, cpu, rss) = reap(child);
    let wall = t0.elapsed().as_secs_f64();
    assert!(status.success(), "run --once failed: {status}");
    emu.exactly_once(rt, &journal, n);
    (wall, cpu, rss)
}

fn once_vs_daemon(rt: &tokio::runtime::Runtime, sizes: &str) {
    println!("run --once against the daemon, N files of 2 KiB in a polled share (settle 1 s):");
    let mut first_per_file = None;
    for n in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<u64>().ok())
    {
        let share = tempfile::tempdir().expect("tempdir");
        small_files(share.path(), n);
        let (dw, dc, dr) = daemon_pass(rt, share.path(), n);
        let (ow, oc, or) = once_pass(rt, share.path(), n);
        let per_file = oc * 1000.0 / n as f64;
        let growth = *first_per_file.get_or_insert(per_file);
        println!(
            "  {n:>6} files: daemon {dw:.1}s wall {dc:.1}s CPU; run --once {ow:.1}s wall {oc:.1}s CPU \
             = {:.2}x wall, {:.2}x CPU; {per_file:.3} ms CPU per file ({:.2}x the smallest batch's); \
             peak RSS daemon {dr:.1} MiB, run --once {or:.1} MiB",
            ow / dw,
            oc / dc,
            per_file / growth
        );
    }
}
