//! Upload benchmark: `ingestd upload` against `curl` sending the same bytes to
//! the same discard server on loopback, side by side in one run.
//!
//! The discard server reads every request body to its last byte before it
//! replies (a server that answers early would flatter the client). Figures
//! are the median of several runs, with min and max. Peak RSS comes from
//! `wait4`, for the process alone.
//!
//! `cargo bench --bench upload` (env: BENCH_SIZE_MIB, default 2048;
//! BENCH_RUNS, default 3; BENCH_RSS_SIZE_MIB, default 8192).
//!
//! `BENCH_BASELINE_BIN=/path/to/another/ingestd` also runs that binary, in
//! turn with the others in every round, and prints this build's figures as
//! a ratio of its: two builds compared on the same machine at the same
//! moment. `BENCH_BANDWIDTH_LIMIT` (e.g. `400MiB`) sets both builds'
//! `upload.bandwidth_limit`, to compare them at a rate a real link gives
//! rather than at loopback speed (curl is never limited).

mod common;

use common::{env_u64, ingestd_bin, stats};

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures_util::StreamExt;

const MIB: u64 = 1024 * 1024;

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

fn start_server(rt: &tokio::runtime::Runtime) -> (SocketAddr, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let app = axum::Router::new()
        .route("/upload", axum::routing::post(discard))
        .with_state(counters.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, counters)
}

/// Wall time, CPU (user + sys) and peak RSS of one child process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
    rss_kib: i64,
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
            use std::io::Read;
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

fn write_config(dir: &Path, addr: SocketAddr, chunk: &str, name: &str) -> PathBuf {
    let limit = std::env::var("BENCH_BANDWIDTH_LIMIT")
        .map(|l| format!("bandwidth_limit = \"{l}\"\n"))
        .unwrap_or_default();
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
             [journal]\npath = \"{}\"\n[upload]\nconcurrency = 1\n{limit}",
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

fn main() {
    let size_mib = env_u64("BENCH_SIZE_MIB", 2048);
    let runs = env_u64("BENCH_RUNS", 3) as usize;
    let rss_mib = env_u64("BENCH_RSS_SIZE_MIB", 8192);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (addr, counters) = start_server(&rt);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bench.mov");
    sparse_file(&file, size_mib * MIB);
    let bin = ingestd_bin();
    let baseline = std::env::var_os("BENCH_BASELINE_BIN").map(PathBuf::from);
    if let Some(b) = &baseline {
        assert!(b.exists(), "BENCH_BASELINE_BIN: no file {}", b.display());
    }
    println!("upload of a {size_mib} MiB file to a discard server on loopback, {runs} runs each, side by side");

    let mut curl = Vec::new();
    let mut ing = Vec::new();
    let mut base = Vec::new();
    for _ in 0..runs {
        let before = counters.bytes.load(Ordering::Relaxed);
        curl.push(measure(curl_upload(addr, &file)));
        let curl_bytes = counters.bytes.load(Ordering::Relaxed) - before;
        assert!(curl_bytes >= size_mib * MIB, "curl sent {curl_bytes}");
        let cfg = write_config(dir.path(), addr, "128MiB", "tput");
        let before = counters.bytes.load(Ordering::Relaxed);
        ing.push(measure(ingestd_upload(&bin, &cfg, &file)));
        let ing_bytes = counters.bytes.load(Ordering::Relaxed) - before;
        assert!(ing_bytes >= size_mib * MIB, "ingestd sent {ing_bytes}");
        if let Some(b) = &baseline {
            let cfg = write_config(dir.path(), addr, "128MiB", "base");
            let before = counters.bytes.load(Ordering::Relaxed);
            base.push(measure(ingestd_upload(b, &cfg, &file)));
            let sent = counters.bytes.load(Ordering::Relaxed) - before;
            assert!(sent >= size_mib * MIB, "the baseline sent {sent}");
        }
    }
    let gib = size_mib as f64 / 1024.0;
    let row = |name: &str, s: &[Sample]| {
        let tput: Vec<f64> = s.iter().map(|x| size_mib as f64 / x.wall).collect();
        let cpu: Vec<f64> = s.iter().map(|x| x.cpu / gib).collect();
        let rss: Vec<f64> = s.iter().map(|x| x.rss_kib as f64 / 1024.0).collect();
        let (t, tmin, tmax) = stats(&tput);
        let (c, cmin, cmax) = stats(&cpu);
        let (r, rmin, rmax) = stats(&rss);
        println!(
            "{name:<8} throughput {t:7.0} MiB/s [{tmin:.0}–{tmax:.0}]   CPU {c:5.2} s/GiB [{cmin:.2}–{cmax:.2}]   peak RSS {r:5.1} MiB [{rmin:.1}–{rmax:.1}]"
        );
        (t, c)
    };
    let (ct, cc) = row("curl", &curl);
    let (it, ic) = row("ingestd", &ing);
    println!(
        "ratio    throughput ingestd/curl = {:.2} (goal ≥ 0.9)   CPU per GiB ingestd/curl = {:.2} (goal ≤ 1.2)",
        it / ct,
        ic / cc
    );
    if let Some(b) = &baseline {
        let (bt, bc) = row("baseline", &base);
        println!(
            "ratio    throughput ingestd/baseline = {:.3}   CPU per GiB ingestd/baseline = {:.3}   (baseline: {})",
            it / bt,
            ic / bc,
            b.display()
        );
    }

    println!(
        "\npeak RSS of `ingestd upload` by file and chunk size (sparse files, goal ≤ 32 MiB):"
    );
    for &fsize in &[1024, rss_mib] {
        let f = dir.path().join(format!("rss-{fsize}.mov"));
        sparse_file(&f, fsize * MIB);
        for chunk in ["8MiB", "128MiB"] {
            let mut rss = Vec::new();
            for _ in 0..runs {
                let cfg = write_config(dir.path(), addr, chunk, "rss");
                rss.push(measure(ingestd_upload(&bin, &cfg, &f)).rss_kib as f64 / 1024.0);
            }
            let (r, rmin, rmax) = stats(&rss);
            println!("  file {fsize:>5} MiB, chunk {chunk:>6}: {r:5.1} MiB [{rmin:.1}–{rmax:.1}]");
        }
        let _ = std::fs::remove_file(&f);
    }
}
