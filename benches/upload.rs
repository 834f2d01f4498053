//! Upload benchmark: `ingestd upload` against `curl` sending the same bytes
//! to the same discard server on loopback, alternating in every round.
//!
//! The discard server runs in a process of its own (this binary, started
//! again with `BENCH_DISCARD_SERVER=1`), as a real server would: its work
//! is never counted as the client's, nor does it share the client's
//! runtime. It reads every request body to its last byte before it replies
//! (a server that answers early would flatter the client). The file is 1
//! GiB of random bytes (not sparse), read once before the runs so that
//! every run finds it in the page cache.
//!
//! Two comparisons, each the median of several rounds with min and max:
//! - transport: ingestd with `upload.sha256 = false` against
//!   `curl -H 'Expect:' -F file=@…` (goals: throughput ≥ 0.95×, CPU ≤ 1.1×);
//! - the same result: ingestd as configured by default (the SHA-256
//!   computed while it uploads) against `curl` followed by `sha256sum` of
//!   the same file, wall time and CPU of both added.
//!
//! Wall time, CPU (user + sys) and peak RSS are each client process's own,
//! from `wait4`. A second row repeats the former figure (a sparse file,
//! the discard server inside this process), labelled as such.
//!
//! `cargo bench --bench upload` (env: BENCH_SIZE_MIB, default 1024;
//! BENCH_RUNS, default 5; BENCH_CHUNK, default 50MiB; BENCH_RSS_SIZE_MIB,
//! default 8192; BENCH_ONLY=tput|rss).
//!
//! `BENCH_BASELINE_BIN=/path/to/another/ingestd` also runs that binary (with
//! its default configuration), in turn with the others in every round, and
//! prints this build's figures as a ratio of its: two builds compared on
//! the same machine at the same moment. `BENCH_BANDWIDTH_LIMIT` (e.g.
//! `400MiB`) sets every ingestd's `upload.bandwidth_limit`, to compare them
//! at a rate a real link gives rather than at loopback speed (curl is never
//! limited).

mod common;

use common::{env_u64, ingestd_bin, stats};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures_util::StreamExt;

const MIB: u64 = 1024 * 1024;
/// Set in the environment of this binary started as the discard server.
const SERVER_ENV: &str = "BENCH_DISCARD_SERVER";

#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    requests: AtomicU64,
}

async fn discard(State(c): State<Arc<Counters>>, body: Body) -> impl IntoResponse {
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => n += b.len() as u64,
            Err(_) => return (StatusCode::BAD_REQUEST, "broken body").into_response(),
        }
    }
    c.bytes.fetch_add(n, Ordering::Relaxed);
    c.requests.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::CREATED,
        [("content-type", "application/json")],
        r#"{"videoId":"vi0000000000000000000bench"}"#,
    )
        .into_response()
}

async fn received(State(c): State<Arc<Counters>>) -> String {
    c.bytes.load(Ordering::Relaxed).to_string()
}

/// The discard server on a runtime of one worker thread: `POST /upload`
/// discards, `GET /bytes` says how many body bytes it has read in all.
fn start_server(rt: &tokio::runtime::Runtime) -> SocketAddr {
    let counters = Arc::new(Counters::default());
    let app = axum::Router::new()
        .route("/upload", axum::routing::post(discard))
        .route("/bytes", axum::routing::get(received))
        .with_state(counters);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn one_worker() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// This binary as the discard server: prints its address, serves until its
/// stdin closes (the benchmark ended, however it ended).
fn serve() {
    let rt = one_worker();
    let addr = start_server(&rt);
    println!("{addr}");
    std::io::stdout().flush().expect("stdout");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// The discard server in its own process.
struct Server {
    addr: SocketAddr,
    /// Its stdin is held open: dropping it ends the server.
    child: Child,
}

impl Server {
    fn start() -> Server {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .env(SERVER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the discard server");
        let out = child.stdout.take().expect("server stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("server address");
        let addr = line.trim().parse().expect("server address");
        Server { addr, child }
    }

    /// Body bytes the server has read so far.
    fn bytes(&self) -> u64 {
        bytes_at(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn bytes_at(addr: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(addr).expect("connect to the discard server");
    s.write_all(b"GET /bytes HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .expect("ask the discard server");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read its reply");
    let body = reply.split("\r\n\r\n").nth(1).expect("a reply body");
    body.trim().parse().expect("a byte count")
}

/// Wall time, CPU (user + sys) and peak RSS of one child process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
    rss_kib: i64,
}

impl Sample {
    /// Two processes run one after the other.
    fn then(self, other: Sample) -> Sample {
        Sample {
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
            rss_kib: self.rss_kib.max(other.rss_kib),
        }
    }
}

// The child is reaped by `wait4` (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure(mut cmd: Command) -> Sample {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 fills it for
    // our own child `pid`, which has not been waited for yet.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4 failed");
    let exit = std::process::ExitStatus::from_raw(status);
    if !exit.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            let _ = e.read_to_string(&mut err);
        }
        panic!("{cmd:?} failed: {exit}\n{err}");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Sample {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        rss_kib: usage.ru_maxrss,
    }
}

fn sparse_file(path: &Path, size: u64) {
    let f = std::fs::File::create(path).expect("create");
    f.set_len(size).expect("set_len");
    // A few real bytes, so it is not all zeros.
    let mut f = f;
    f.write_all(b"ingestd benchmark").expect("write");
}

/// `size` random bytes, written out (no holes), then read back once so
/// that every run finds them in the page cache.
fn random_file(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut rng = fastrand::Rng::with_seed(12);
    let mut block = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.u64(..).to_ne_bytes());
        }
        let n = left.min(MIB) as usize;
        f.write_all(&block[..n]).expect("write");
        left -= n as u64;
    }
    f.flush().expect("flush");
    let read = std::io::copy(
        &mut std::fs::File::open(path).expect("open"),
        &mut std::io::sink(),
    )
    .expect("read back");
    assert_eq!(read, size);
}

/// How the ingestd of a run is configured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hash {
    /// `upload.sha256 = false`.
    Off,
    /// The key not written: the binary's default (the baseline may not
    /// know the key).
    Default,
}

fn write_config(dir: &Path, addr: SocketAddr, chunk: &str, name: &str, hash: Hash) -> PathBuf {
    let limit = std::env::var("BENCH_BANDWIDTH_LIMIT")
        .map(|l| format!("bandwidth_limit = \"{l}\"\n"))
        .unwrap_or_default();
    let sha = if hash == Hash::Off {
        "sha256 = false\n"
    } else {
        ""
    };
    let cfg = dir.join(format!("{name}.toml"));
    let journal = dir.join(format!("{name}.db"));
    // A fresh journal on purpose: its lock file goes too (a lock file beside
    // a missing journal means "deleted by mistake", which ingestd refuses).
    let _ = std::fs::remove_file(&journal);
    let _ = std::fs::remove_file(dir.join(format!("{name}.db.lock")));
    std::fs::write(
        &cfg,
        format!(
            "[api]\nbase_url = \"http://{addr}\"\ntoken = \"to1bench\"\nchunk_size = \"{chunk}\"\n\
             [journal]\npath = \"{}\"\n[upload]\nconcurrency = 1\n{limit}{sha}",
            journal.display()
        ),
    )
    .expect("config");
    cfg
}

fn ingestd_upload(bin: &Path, cfg: &Path, file: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--config").arg(cfg).arg("upload").arg(file);
    c.env("INGESTD_LOG", "warn");
    c
}

fn curl_upload(addr: SocketAddr, file: &Path) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "-f", "-o", "/dev/null", "-H", "Expect:", "-F"])
        .arg(format!("file=@{}", file.display()))
        .arg(format!("http://{addr}/upload?token=to1bench"));
    c
}

fn sha256sum(file: &Path) -> Command {
    let mut c = Command::new("sha256sum");
    c.arg(file);
    c
}

/// Median [min–max] of throughput, CPU per GiB and peak RSS.
struct Row {
    tput: (f64, f64, f64),
    cpu: (f64, f64, f64),
    rss: (f64, f64, f64),
}

fn row(size_mib: u64, s: &[Sample]) -> Row {
    let gib = size_mib as f64 / 1024.0;
    let tput: Vec<f64> = s.iter().map(|x| size_mib as f64 / x.wall).collect();
    let cpu: Vec<f64> = s.iter().map(|x| x.cpu / gib).collect();
    let rss: Vec<f64> = s.iter().map(|x| x.rss_kib as f64 / 1024.0).collect();
    Row {
        tput: stats(&tput),
        cpu: stats(&cpu),
        rss: stats(&rss),
    }
}

fn print_row(name: &str, r: &Row) {
    let ((t, tmin, tmax), (c, cmin, cmax), (m, mmin, mmax)) = (r.tput, r.cpu, r.rss);
    println!(
        "  {name:<24} throughput {t:6.0} MiB/s [{tmin:.0}–{tmax:.0}]   CPU {c:5.2} s/GiB [{cmin:.2}–{cmax:.2}]   peak RSS {m:5.1} MiB [{mmin:.1}–{mmax:.1}]"
    );
}

/// `a` against `b`: the ratio of the medians, and the median [min–max] of
/// the ratios of each round (the two ran side by side).
fn print_ratio(name: &str, a: &[Sample], b: &[Sample], goals: &str) {
    let ratios = |f: fn(&Sample) -> f64| -> (f64, f64, f64) {
        let v: Vec<f64> = a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect();
        stats(&v)
    };
    // Throughput is the inverse of wall time.
    let (tw, twmin, twmax) = ratios(|s| s.wall);
    let (c, cmin, cmax) = ratios(|s| s.cpu);
    let wall = |s: &[Sample]| stats(&s.iter().map(|x| x.wall).collect::<Vec<_>>()).0;
    let cpu = |s: &[Sample]| stats(&s.iter().map(|x| x.cpu).collect::<Vec<_>>()).0;
    println!(
        "  {name:<24} throughput {:.2} (per round {:.2} [{:.2}–{:.2}])   CPU {:.2} (per round {c:.2} [{cmin:.2}–{cmax:.2}]){goals}",
        wall(b) / wall(a),
        1.0 / tw,
        1.0 / twmax,
        1.0 / twmin,
        cpu(a) / cpu(b),
    );
}

/// A client of the comparison: its name, one run of it, its samples.
type Client<'a> = (&'a str, &'a mut dyn FnMut() -> Sample, Vec<Sample>);

/// Every client of a round, run one after the other; the order turns each
/// round, so that none always runs first (or right after the same one).
fn rounds(runs: usize, clients: &mut [Client<'_>]) {
    let n = clients.len();
    for round in 0..runs {
        for i in 0..n {
            let (_, run, samples) = &mut clients[(round + i) % n];
            samples.push(run());
        }
    }
}

fn throughput(dir: &Path, size_mib: u64, runs: usize, chunk: &str) {
    let bin = ingestd_bin();
    let baseline = std::env::var_os("BENCH_BASELINE_BIN").map(PathBuf::from);
    if let Some(b) = &baseline {
        assert!(b.exists(), "BENCH_BASELINE_BIN: no file {}", b.display());
    }
    let size = size_mib * MIB;
    let file = dir.join("bench.mov");
    random_file(&file, size);
    let server = Server::start();
    let addr = server.addr;
    println!(
        "upload of {size_mib} MiB of random bytes (page-cached) to a discard server in another \
         process on loopback; ingestd chunk_size {chunk}; {runs} rounds, clients alternating"
    );
    // Each run checks the server read the whole file (and more, for the
    // multipart framing).
    let sent = |what: &str, s: Sample, before: u64| {
        let got = server.bytes() - before;
        assert!(got >= size, "{what} sent {got} bytes of {size}");
        s
    };
    let mut curl = || {
        let before = server.bytes();
        sent("curl", measure(curl_upload(addr, &file)), before)
    };
    let mut curl_sum = || {
        let before = server.bytes();
        let up = sent("curl", measure(curl_upload(addr, &file)), before);
        up.then(measure(sha256sum(&file)))
    };
    let mut ing_off = || {
        let cfg = write_config(dir, addr, chunk, "off", Hash::Off);
        let before = server.bytes();
        sent(
            "ingestd",
            measure(ingestd_upload(&bin, &cfg, &file)),
            before,
        )
    };
    let mut ing_on = || {
        let cfg = write_config(dir, addr, chunk, "on", Hash::Default);
        let before = server.bytes();
        sent(
            "ingestd",
            measure(ingestd_upload(&bin, &cfg, &file)),
            before,
        )
    };
    let base_bin = baseline.clone().unwrap_or_default();
    let mut base = || {
        let cfg = write_config(dir, addr, chunk, "base", Hash::Default);
        let before = server.bytes();
        let s = measure(ingestd_upload(&base_bin, &cfg, &file));
        sent("the baseline", s, before)
    };
    let mut clients: Vec<Client<'_>> = vec![
        ("curl", &mut curl, Vec::new()),
        ("ingestd sha256 = false", &mut ing_off, Vec::new()),
        ("curl, then sha256sum", &mut curl_sum, Vec::new()),
        ("ingestd (default)", &mut ing_on, Vec::new()),
    ];
    if baseline.is_some() {
        clients.push(("baseline (default)", &mut base, Vec::new()));
    }
    rounds(runs, &mut clients);
    for (name, _, samples) in &clients {
        print_row(name, &row(size_mib, samples));
    }
    let s = |i: usize| clients[i].2.as_slice();
    println!("ratios, ingestd / the other (throughput: higher is better; CPU: lower is better):");
    print_ratio(
        "sha256 = false / curl",
        s(1),
        s(0),
        "   goals: throughput ≥ 0.95, CPU ≤ 1.1",
    );
    print_ratio("default / curl+sha256sum", s(3), s(2), "");
    if let Some(b) = &baseline {
        print_ratio("default / baseline", s(3), s(4), "");
        println!("  (baseline: {})", b.display());
    }
    drop(server);
    let _ = std::fs::remove_file(&file);

    // The former figure: a sparse file (its pages are not read from
    // anywhere) and the discard server on this process's own runtime.
    let rt = one_worker();
    let addr = start_server(&rt);
    let sparse = dir.join("sparse.mov");
    sparse_file(&sparse, size);
    let mut curl = Vec::new();
    let mut ing = Vec::new();
    for _ in 0..runs {
        let before = bytes_at(addr);
        curl.push(measure(curl_upload(addr, &sparse)));
        assert!(bytes_at(addr) - before >= size);
        let cfg = write_config(dir, addr, chunk, "sparse", Hash::Off);
        let before = bytes_at(addr);
        ing.push(measure(ingestd_upload(&bin, &cfg, &sparse)));
        assert!(bytes_at(addr) - before >= size);
    }
    println!(
        "\nformer figure, for comparison only: a sparse file, the discard server inside the \
         benchmark's own process:"
    );
    print_row("curl", &row(size_mib, &curl));
    print_row("ingestd sha256 = false", &row(size_mib, &ing));
    print_ratio("sha256 = false / curl", &ing, &curl, "");
    let _ = std::fs::remove_file(&sparse);
}

fn peak_rss(dir: &Path, runs: usize, rss_mib: u64) {
    let bin = ingestd_bin();
    let server = Server::start();
    println!(
        "\npeak RSS of `ingestd upload` (default configuration: with the SHA-256) by file and \
         chunk size (sparse files, goal ≤ 32 MiB):"
    );
    for &fsize in &[1024, rss_mib] {
        let f = dir.join(format!("rss-{fsize}.mov"));
        sparse_file(&f, fsize * MIB);
        for chunk in ["8MiB", "128MiB"] {
            let mut rss = Vec::new();
            for _ in 0..runs {
                let cfg = write_config(dir, server.addr, chunk, "rss", Hash::Default);
                rss.push(measure(ingestd_upload(&bin, &cfg, &f)).rss_kib as f64 / 1024.0);
            }
            let (r, rmin, rmax) = stats(&rss);
            println!("  file {fsize:>5} MiB, chunk {chunk:>6}: {r:5.1} MiB [{rmin:.1}–{rmax:.1}]");
        }
        let _ = std::fs::remove_file(&f);
    }
}

fn main() {
    if std::env::var_os(SERVER_ENV).is_some() {
        return serve();
    }
    let size_mib = env_u64("BENCH_SIZE_MIB", 1024);
    let runs = env_u64("BENCH_RUNS", 5) as usize;
    let rss_mib = env_u64("BENCH_RSS_SIZE_MIB", 8192);
    let chunk = std::env::var("BENCH_CHUNK").unwrap_or_else(|_| "50MiB".to_owned());
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let dir = tempfile::tempdir().expect("tempdir");
    if only.is_empty() || only == "tput" {
        throughput(dir.path(), size_mib, runs, &chunk);
    }
    if only.is_empty() || only == "rss" {
        peak_rss(dir.path(), runs.min(3), rss_mib);
    }
}
