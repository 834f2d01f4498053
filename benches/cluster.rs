//! Cluster benchmark: 1, 2 and 3 `ingestd run` nodes on one watch folder
//! and one PostgreSQL journal, uploading into the emulator (an `ingestd
//! emulator` process of its own, unlimited rate), all on this one machine.
//!
//! The workload (BENCH_CLUSTER_FILES files, default 200: one in 20 large,
//! 32–64 MiB, the others 256 KiB–2 MiB, random bytes, not sparse, chunk
//! 16 MiB) is written once, before any node starts, and is already in the
//! watch folder when the nodes start: each run measures from the start of
//! its nodes (spawned back to back) until the journal has every file `done`
//! (`SELECT count(*) FROM files WHERE state = 'done'` every 200 ms over one
//! connection of the benchmark's; the SQLite journal is read the same way),
//! so start-up, the first scan and the settle (300 ms) are in every figure.
//!
//! Each run has a fresh database (or SQLite file), a fresh emulator and a
//! fresh data dir; the runs of a round (SQLite and PostgreSQL with 1 node,
//! then 2 and 3 nodes) are alternated, the order rotated every round. After
//! each run every file must be on the emulator exactly once, complete and
//! byte-exact (its SHA-256), as the very video the journal names: anything
//! else panics. CPU (user + sys) is each process's own from `wait4` after
//! SIGTERM (the nodes, the emulator); PostgreSQL's is the server's (the
//! postmaster, the backends it reaped, its live helpers) from /proc, before
//! and after the run.
//!
//! PostgreSQL is the tests' throwaway server (tests/common/pg.rs), made
//! durable for the benchmark (`fsync`, `synchronous_commit` and
//! `full_page_writes` on, as the SQLite journal's `synchronous = FULL`);
//! BENCH_CLUSTER_PG_FAST=1 keeps the test server's settings (all three off).
//!
//! Everything shares this machine's cores: the nodes, the emulator and
//! PostgreSQL compete for the same CPU, so more nodes show the coordination's
//! cost and its correctness under contention, not scaling across machines.
//!
//! `cargo bench --bench cluster` (env: BENCH_CLUSTER_FILES, default 200;
//! BENCH_CLUSTER_RUNS, default 3; BENCH_CLUSTER_NODES, default 1,2,3;
//! BENCH_CLUSTER_PG_FAST).

mod common;
#[path = "../tests/common/pg.rs"]
mod pg;

use common::{env_u64, ingestd_bin, spawn_emulator, stats};

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const TOKEN: &str = "to1benchTOKEN";
const MIB: u64 = 1024 * 1024;
const CHUNK: &str = "16MiB";
const SETTLE: &str = "300ms";
const POLL: Duration = Duration::from_millis(200);
const DEADLINE: Duration = Duration::from_secs(900);

/// One file of the workload.
struct Clip {
    name: String,
    size: u64,
    sha256: String,
}

/// Writes the workload into `dir`: random bytes, one file in 20 large.
fn workload(dir: &Path, n: u64) -> Vec<Clip> {
    let mut rng = fastrand::Rng::with_seed(20_240_601);
    let mut block = vec![0u8; 1 << 20];
    (0..n)
        .map(|i| {
            let size = if i % 20 == 10 {
                rng.u64(32 * MIB..=64 * MIB)
            } else {
                rng.u64(256 * 1024..=2 * MIB)
            };
            let name = format!("clip-{i:04}.mp4");
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(dir.join(&name)).expect("create a clip"),
            );
            let mut h = Sha256::new();
            let mut left = size;
            while left > 0 {
                let k = left.min(block.len() as u64) as usize;
                rng.fill(&mut block[..k]);
                f.write_all(&block[..k]).expect("write a clip");
                h.update(&block[..k]);
                left -= k as u64;
            }
            f.flush().expect("flush a clip");
            Clip {
                name,
                size,
                sha256: format!("{:x}", h.finalize()),
            }
        })
        .collect()
}

/// Reaps `child` with `wait4`: its exit status and its own CPU seconds.
// The child is reaped by `wait4` (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn reap(child: Child) -> (ExitStatus, f64) {
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
        ExitStatus::from_raw(status),
        tv(usage.ru_utime) + tv(usage.ru_stime),
    )
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// `ingestd` with nothing of the outside's INGESTD_* (nor systemd's
/// variables), logging at info.
fn ingestd() -> Command {
    let mut c = Command::new(ingestd_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("INGESTD_")
            || k == "RUST_LOG"
            || k == "CREDENTIALS_DIRECTORY"
            || k == "STATE_DIRECTORY"
            || k == "JOURNAL_STREAM"
        {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// `ingestd emulator` in a process of its own.
struct EmulatorProcess {
    child: Option<Child>,
    base: String,
    rt: tokio::runtime::Runtime,
}

impl EmulatorProcess {
    fn start(dir: &Path) -> Self {
        let (child, base) = spawn_emulator(ingestd(), dir, TOKEN);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            child: Some(child),
            base,
            rt,
        }
    }

    fn get(&self, what: &str) -> serde_json::Value {
        let body = self.rt.block_on(async {
            reqwest::get(format!("{}/_emulator/{what}", self.base))
                .await
                .expect("emulator request")
                .bytes()
                .await
                .expect("emulator reply")
        });
        serde_json::from_slice(&body).expect("emulator JSON")
    }

    /// SIGTERM, then its CPU seconds.
    fn stop(mut self) -> f64 {
        let child = self.child.take().expect("running");
        sigterm(&child);
        reap(child).1
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// CPU seconds PostgreSQL has used so far: the postmaster, the children
/// it has reaped (backends that ended) and the children still alive.
fn pg_cpu(server: &pg::PgServer) -> f64 {
    let pidfile =
        std::fs::read_to_string(server.data_dir().join("postmaster.pid")).expect("postmaster.pid");
    let pm: u32 = pidfile
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // (ppid, utime + stime + cutime + cstime) of a process.
    let stat = |pid: u32| -> Option<(u32, u64)> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Some((n(1) as u32, n(11) + n(12) + n(13) + n(14)))
    };
    let mut ticks = stat(pm).expect("the postmaster's stat").1;
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            if let Some((ppid, t)) = stat(pid) {
                if ppid == pm {
                    ticks += t;
                }
            }
        }
    }
    ticks as f64 / hz
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Journal {
    Sqlite,
    Postgres,
}

/// One run's figures.
struct Run {
    secs: f64,
    node_cpu: f64,
    emulator_cpu: f64,
    /// PostgreSQL's CPU seconds (0 for SQLite).
    pg_cpu: f64,
    /// `upload done` lines of each node.
    per_node: Vec<usize>,
    /// Bytes the emulator accepted beyond the files' own.
    extra_bytes: u64,
    upload_requests: u64,
    rejected: u64,
    /// Lines of note in the nodes' logs (takeovers, lost leases, errors).
    notes: Vec<String>,
}

struct Bench {
    server: &'static pg::PgServer,
    share: PathBuf,
    clips: Vec<Clip>,
    total: u64,
}

impl Bench {
    fn config(&self, dir: &Path, base: &str, journal: &str) -> PathBuf {
        let cfg = dir.join("bench.toml");
        std::fs::write(
            &cfg,
            format!(
                "[api]\nbase_url = \"{base}\"\ntoken = \"{TOKEN}\"\nchunk_size = \"{CHUNK}\"\n\
                 [journal]\n{journal}\n[upload]\nconcurrency = 2\n\
                 [[watch]]\npath = \"{}\"\nsettle = \"{SETTLE}\"\npoll_interval = \"1s\"\n",
                self.share.display()
            ),
        )
        .expect("config");
        cfg
    }

    fn run(&self, kind: Journal, nodes: usize) -> Run {
        let n = self.clips.len() as u64;
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = EmulatorProcess::start(dir.path());
        let (cfg, db) = match kind {
            Journal::Sqlite => {
                let path = dir.path().join("journal.db");
                let journal = format!("path = \"{}\"", path.display());
                (self.config(dir.path(), &emu.base, &journal), None)
            }
            Journal::Postgres => {
                let db = self.server.fresh_database("cluster_bench");
                let pw = dir.path().join("journal-password");
                std::fs::write(&pw, format!("{}\n", db.password)).expect("password file");
                let journal = format!(
                    "url = \"{}\"\npassword_file = \"{}\"\nlease = \"3s\"",
                    db.url,
                    pw.display()
                );
                (self.config(dir.path(), &emu.base, &journal), Some(db))
            }
        };
        let mut poll: Box<dyn FnMut() -> (u64, u64)> = match &db {
            Some(db) => {
                let mut client = postgres::Config::new()
                    .host("127.0.0.1")
                    .port(self.server.port())
                    .user(pg::ROLE)
                    .password(&db.password)
                    .dbname(&db.name)
                    .connect(postgres::NoTls)
                    .expect("connect to the bench database");
                Box::new(move || {
                    // Before the first node made the schema: no table yet.
                    client
                        .query_one(
                            "SELECT count(*) FILTER (WHERE state = 'done'), \
                             count(*) FILTER (WHERE state = 'failed') FROM files",
                            &[],
                        )
                        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
                        .unwrap_or((0, 0))
                })
            }
            None => {
                let path = dir.path().join("journal.db");
                Box::new(move || {
                    ingestd::journal::Journal::open_read_only(&path)
                        .and_then(|j| j.counts())
                        .map(|c| {
                            let get = |s| c.get(&s).copied().unwrap_or(0);
                            (
                                get(ingestd::journal::FileState::Done),
                                get(ingestd::journal::FileState::Failed),
                            )
                        })
                        .unwrap_or((0, 0))
                })
            }
        };
        let pg_before = pg_cpu(self.server);
        let logs: Vec<PathBuf> = (0..nodes)
            .map(|i| dir.path().join(format!("node-{}.log", i + 1)))
            .collect();
        let t0 = Instant::now();
        let children: Vec<Child> = logs
            .iter()
            .enumerate()
            .map(|(i, log)| {
                let mut c = ingestd();
                c.arg("--config")
                    .arg(&cfg)
                    .arg("run")
                    .env("INGESTD_LOG", "info")
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(std::fs::File::create(log).expect("log")));
                if kind == Journal::Postgres {
                    c.env("INGESTD_JOURNAL__NODE", format!("node-{}", i + 1));
                }
                c.spawn().expect("spawn ingestd run")
            })
            .collect();
        let read_logs = || -> Vec<String> {
            logs.iter()
                .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                .collect()
        };
        loop {
            let (done, failed) = poll();
            if done >= n {
                break;
            }
            if failed > 0 || t0.elapsed() > DEADLINE {
                let text = read_logs().join("\n----\n");
                panic!(
                    "{kind:?} with {nodes} node(s): {done} of {n} done, {failed} failed after {:.1}s\n{text}",
                    t0.elapsed().as_secs_f64()
                );
            }
            std::thread::sleep(POLL);
        }
        let secs = t0.elapsed().as_secs_f64();
        drop(poll);
        for c in &children {
            sigterm(c);
        }
        let mut node_cpu = 0.0;
        for c in children {
            let (status, cpu) = reap(c);
            assert!(
                status.success(),
                "a node exited {status}:\n{}",
                read_logs().join("\n----\n")
            );
            node_cpu += cpu;
        }
        let texts = read_logs();
        self.check_exactly_once(kind, &emu, dir.path(), db.as_ref(), &texts);
        let st = emu.get("stats");
        let accepted = st["accepted_bytes"].as_u64().unwrap_or(0);
        let upload_requests = st["upload_requests"].as_u64().unwrap_or(0);
        let rejected = st["rejected_requests"].as_u64().unwrap_or(0);
        let emulator_cpu = emu.stop();
        // The backends of the nodes (and of the poll) end as they go: let
        // the postmaster reap them.
        std::thread::sleep(Duration::from_millis(300));
        let pg_cpu = match kind {
            Journal::Postgres => pg_cpu(self.server) - pg_before,
            Journal::Sqlite => 0.0,
        };
        let per_node = texts
            .iter()
            .map(|t| t.matches("upload done").count())
            .collect();
        let notes = texts
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                t.lines()
                    .filter(|l| {
                        l.contains("took over")
                            || l.contains("lease on it was lost")
                            || l.contains("ERROR")
                            || l.contains(" WARN ")
                    })
                    .map(move |l| format!("node-{}: {l}", i + 1))
            })
            .collect();
        Run {
            secs,
            node_cpu,
            emulator_cpu,
            pg_cpu,
            per_node,
            extra_bytes: accepted.saturating_sub(self.total),
            upload_requests,
            rejected,
            notes,
        }
    }

    /// Every file on the emulator exactly once, complete, byte-exact, as
    /// the video its journal row names; nothing else there.
    fn check_exactly_once(
        &self,
        kind: Journal,
        emu: &EmulatorProcess,
        dir: &Path,
        db: Option<&pg::PgDb>,
        logs: &[String],
    ) {
        let fail = |what: String| -> ! {
            panic!("{kind:?}: {what}\n--- node logs\n{}", logs.join("\n----\n"))
        };
        // The journal: file name -> (state, video id).
        let rows: BTreeMap<String, (String, String)> = match db {
            Some(db) => self
                .server
                .psql(
                    &db.name,
                    "SELECT convert_from(rel_path, 'UTF8'), state, coalesce(video_id, '') FROM files",
                )
                .lines()
                .filter_map(|l| {
                    let mut p = l.split('|');
                    let (path, state, vid) = (p.next()?, p.next()?, p.next()?);
                    Some((path.to_owned(), (state.to_owned(), vid.to_owned())))
                })
                .collect(),
            None => ingestd::journal::Journal::open_read_only(&dir.join("journal.db"))
                .and_then(|j| j.list(None))
                .expect("read the SQLite journal")
                .into_iter()
                .map(|r| {
                    (
                        r.identity.rel_path.to_string_lossy().into_owned(),
                        (r.state.to_string(), r.video_id.unwrap_or_default()),
                    )
                })
                .collect(),
        };
        if rows.len() != self.clips.len() {
            fail(format!(
                "{} journal rows for {} files",
                rows.len(),
                self.clips.len()
            ));
        }
        let videos = emu.get("videos");
        let videos = videos.as_array().expect("a list of videos");
        let mut by_id = BTreeMap::new();
        let mut titles = BTreeMap::<&str, usize>::new();
        for v in videos {
            by_id.insert(v["video_id"].as_str().unwrap_or(""), v);
            *titles.entry(v["title"].as_str().unwrap_or("")).or_default() += 1;
        }
        let twice: Vec<_> = titles.iter().filter(|(_, &k)| k > 1).collect();
        if videos.len() != self.clips.len() || !twice.is_empty() {
            fail(format!(
                "{} videos at the emulator for {} files; more than once: {twice:?}",
                videos.len(),
                self.clips.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for c in &self.clips {
            let Some((state, vid)) = rows.get(&c.name) else {
                fail(format!("{} not journaled", c.name));
            };
            let Some(v) = by_id.get(vid.as_str()) else {
                fail(format!(
                    "{}: {state}, its video {vid:?} not at the emulator",
                    c.name
                ));
            };
            if state != "done"
                || v["complete"] != serde_json::Value::Bool(true)
                || v["total"].as_u64() != Some(c.size)
                || v["sha256"].as_str() != Some(c.sha256.as_str())
                || v["title"].as_str() != Some(c.name.as_str())
                || !seen.insert(vid.clone())
            {
                fail(format!(
                    "{}: {state}, {} bytes, sha256 {}; the emulator's {vid}: {v}",
                    c.name, c.size, c.sha256
                ));
            }
        }
    }
}

/// `x` / `base`, as `1.23×`.
fn ratio(x: f64, base: f64) -> String {
    format!("{:.2}×", x / base)
}

fn main() {
    // The emulator's control API is read with reqwest, which needs a TLS
    // provider chosen even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::env::set_var(pg::REQUIRE_ENV, "1");
    let n = env_u64("BENCH_CLUSTER_FILES", 200).max(1);
    let runs = env_u64("BENCH_CLUSTER_RUNS", 3).max(1) as usize;
    let counts: Vec<usize> = std::env::var("BENCH_CLUSTER_NODES")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&k| k >= 1)
        .collect();
    let fast = std::env::var("BENCH_CLUSTER_PG_FAST").is_ok_and(|v| v == "1");
    let server = pg::shared().expect("PostgreSQL");
    if !fast {
        server.psql(
            "postgres",
            "ALTER SYSTEM SET fsync = on;\nALTER SYSTEM SET synchronous_commit = on;\n\
             ALTER SYSTEM SET full_page_writes = on;\nSELECT pg_reload_conf();",
        );
        // The reload reaches the postmaster (and so new backends) soon after.
        std::thread::sleep(Duration::from_millis(500));
    }
    let settings = server.psql(
        "postgres",
        "SELECT current_setting('server_version') || ', fsync=' || current_setting('fsync') || \
         ', synchronous_commit=' || current_setting('synchronous_commit') || \
         ', full_page_writes=' || current_setting('full_page_writes')",
    );

    let share = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let clips = workload(share.path(), n);
    let total: u64 = clips.iter().map(|c| c.size).sum();
    let large = clips.iter().filter(|c| c.size >= 32 * MIB).count();
    let mib = total as f64 / MIB as f64;
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    println!(
        "cluster: {n} files ({} of 256 KiB–2 MiB, {large} of 32–64 MiB; {mib:.0} MiB of random bytes, \
         written in {:.1}s before the nodes start), chunk {CHUNK}, concurrency 2 per node, settle {SETTLE}, lease 3s; \
         PostgreSQL {}; median of {runs} runs [min–max], from the nodes' start until every file is done",
        n as usize - large,
        t.elapsed().as_secs_f64(),
        settings.trim()
    );
    println!(
        "  all on this one machine ({cores} cores): the nodes, the emulator and PostgreSQL share its CPU, \
         so more nodes show the coordination's cost and that it is correct under contention, not scaling across machines"
    );
    let bench = Bench {
        server,
        share: share.path().to_owned(),
        clips,
        total,
    };

    let mut configs: Vec<(Journal, usize)> = vec![(Journal::Postgres, 1), (Journal::Sqlite, 1)];
    configs.extend(
        counts
            .iter()
            .filter(|&&k| k != 1)
            .map(|&k| (Journal::Postgres, k)),
    );
    let mut results: BTreeMap<(usize, bool), Vec<Run>> = BTreeMap::new();
    for round in 0..runs {
        let mut order = configs.clone();
        let k = round % order.len();
        order.rotate_left(k);
        for &(kind, nodes) in &order {
            let r = bench.run(kind, nodes);
            println!(
                "  round {}: {kind:?} × {nodes}: {:.2}s, nodes {:.2}s CPU, emulator {:.2}s, PostgreSQL {:.2}s; \
                 files done per node {:?}; {} upload requests ({} refused), {:.1} MiB accepted beyond the files",
                round + 1,
                r.secs,
                r.node_cpu,
                r.emulator_cpu,
                r.pg_cpu,
                r.per_node,
                r.upload_requests,
                r.rejected,
                r.extra_bytes as f64 / MIB as f64
            );
            for note in r.notes.iter().take(10) {
                println!("    {note}");
            }
            results
                .entry((nodes, kind == Journal::Sqlite))
                .or_default()
                .push(r);
        }
    }

    struct Summary {
        secs: f64,
        fps: f64,
        mibps: f64,
        node_ms: f64,
        emu_ms: f64,
        pg_ms: f64,
    }
    let summarize = |rs: &[Run]| -> Summary {
        let pick = |f: &dyn Fn(&Run) -> f64| rs.iter().map(f).collect::<Vec<f64>>();
        let line = |name: &str, xs: Vec<f64>, unit: &str, prec: usize| -> f64 {
            let (m, lo, hi) = stats(&xs);
            print!(" {name} {m:.prec$}{unit} [{lo:.prec$}–{hi:.prec$}];");
            m
        };
        let secs = line("done after", pick(&|r| r.secs), "s", 2);
        let fps = line("", pick(&|r| n as f64 / r.secs), " files/s", 1);
        let mibps = line("", pick(&|r| mib / r.secs), " MiB/s", 1);
        let node_ms = line(
            "CPU per MiB: nodes",
            pick(&|r| r.node_cpu * 1000.0 / mib),
            " ms",
            2,
        );
        let emu_ms = line(
            "emulator",
            pick(&|r| r.emulator_cpu * 1000.0 / mib),
            " ms",
            2,
        );
        let pg_ms = line("PostgreSQL", pick(&|r| r.pg_cpu * 1000.0 / mib), " ms", 2);
        println!();
        Summary {
            secs,
            fps,
            mibps,
            node_ms,
            emu_ms,
            pg_ms,
        }
    };
    println!("summary, median [min–max] of {runs}:");
    print!("  SQLite, 1 node:");
    let lite = summarize(&results[&(1, true)]);
    let mut by_nodes = Vec::new();
    for &k in std::iter::once(&1).chain(counts.iter().filter(|&&k| k != 1)) {
        print!("  PostgreSQL, {k} node(s):");
        by_nodes.push((k, summarize(&results[&(k, false)])));
    }
    let one = &by_nodes[0].1;
    for (k, s) in &by_nodes[1..] {
        println!(
            "  {k} nodes against 1: throughput {}, node CPU per MiB {}, emulator {}, PostgreSQL {}",
            ratio(s.mibps, one.mibps),
            ratio(s.node_ms, one.node_ms),
            ratio(s.emu_ms, one.emu_ms),
            ratio(s.pg_ms, one.pg_ms)
        );
    }
    println!(
        "  shared journal against SQLite, 1 node: wall {} ({:+.1} ms per file), files/s {}, \
         node CPU {} ({:+.2} ms per file), plus PostgreSQL's own {:.2} ms per file; emulator CPU {}",
        ratio(one.secs, lite.secs),
        (one.secs - lite.secs) * 1000.0 / n as f64,
        ratio(one.fps, lite.fps),
        ratio(one.node_ms, lite.node_ms),
        (one.node_ms - lite.node_ms) * mib / n as f64,
        one.pg_ms * mib / n as f64,
        ratio(one.emu_ms, lite.emu_ms),
    );
}
