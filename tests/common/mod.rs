//! Shared test harness: the real `ingestd` binary against the project's
//! emulator on 127.0.0.1:0, with a real temp dir, config file and journal.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ingestd::emulator::{Emulator, EmulatorOptions, VideoReport};
use sha2::{Digest, Sha256};

/// A TOML basic string holding `p` (JSON string escapes are valid TOML).
pub fn toml_path(p: &Path) -> String {
    serde_json::to_string(p.to_str().expect("test paths are UTF-8")).unwrap()
}

/// A `[[watch]]` table for `path` with a short settle and poll interval;
/// `extra` holds more `key = value` lines.
pub fn watch(path: &Path, settle: &str, extra: &str) -> String {
    format!(
        "\n[[watch]]\npath = {}\nsettle = \"{settle}\"\npoll_interval = \"1s\"\n{extra}\n",
        toml_path(path)
    )
}

mod daemon;
#[allow(unused_imports)]
pub use daemon::{stop_ok, strip_ansi, Daemon};
pub mod cluster;
mod mounts;
pub mod pg;
#[allow(unused_imports)]
pub use mounts::{sh_quote, Ns};

pub const MIB: u64 = 1024 * 1024;
pub const TOKEN: &str = "to1testTOKENabcdefghijkl";

/// One test's world: a temp dir, an emulator on its own runtime, a config.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub emulator: Emulator,
    pub config: PathBuf,
    pub journal: PathBuf,
    pub token_file: PathBuf,
    pub media: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        Env::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut EmulatorOptions)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = EmulatorOptions {
            data_dir: dir.path().join("emulator"),
            tokens: vec![TOKEN.to_owned()],
            api_keys: Vec::new(),
            rate_limit: 0,
            rate_window: Duration::from_secs(60),
        };
        tweak(&mut opts);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = rt
            .block_on(Emulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), opts))
            .unwrap();
        let media = dir.path().join("media");
        std::fs::create_dir_all(&media).unwrap();
        let env = Env {
            config: dir.path().join("config.toml"),
            journal: dir.path().join("state/journal.db"),
            token_file: dir.path().join("upload-token"),
            media,
            emulator,
            rt,
            dir,
        };
        env.set_token(TOKEN);
        env.write_config("8MiB", "");
        env
    }

    /// Writes the token file; created private (0600), as the README
    /// installs it, since ingestd warns about a token file others can read.
    pub fn set_token(&self, token: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.token_file)
            .unwrap();
        f.write_all(format!("{token}\n").as_bytes()).unwrap();
    }

    /// (Re)writes the config file; `extra` is appended verbatim.
    pub fn write_config(&self, chunk_size: &str, extra: &str) {
        let text = format!(
            "[api]\nbase_url = \"{}\"\ntoken_file = \"{}\"\nchunk_size = \"{chunk_size}\"\n\n\
             [journal]\npath = \"{}\"\n\n[upload]\nconcurrency = 2\n{extra}\n",
            self.emulator.base_url(),
            self.token_file.display(),
            self.journal.display(),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// `ingestd --config CONFIG ARGS…`, with no INGESTD_* (nor systemd's
    /// variables) from the outside.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ingestd"));
        for (k, _) in std::env::vars() {
            // JOURNAL_STREAM: the log format stays text, whatever runs the tests.
            if k.starts_with("INGESTD_")
                || k == "RUST_LOG"
                || k == "CREDENTIALS_DIRECTORY"
                || k == "STATE_DIRECTORY"
                || k == "JOURNAL_STREAM"
            {
                c.env_remove(k);
            }
        }
        c.arg("--config").arg(&self.config).args(args);
        c.env("INGESTD_LOG", "info");
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `ingestd status --json`, parsed.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Writes a file of pseudo-random bytes.
    pub fn file(&self, name: &str, size: u64, seed: u64) -> PathBuf {
        let p = self.media.join(name);
        write_random(&p, size, seed);
        p
    }

    pub fn videos(&self) -> Vec<VideoReport> {
        self.emulator.videos()
    }

    pub fn video(&self, id: &str) -> VideoReport {
        self.videos()
            .into_iter()
            .find(|v| v.video_id == id)
            .unwrap_or_else(|| panic!("no video {id} at the emulator"))
    }
}

pub fn write_random(p: &Path, size: u64, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
    let mut block = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        rng.fill(&mut block);
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

pub fn sha256(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// stdout + stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child with a deadline; kills it if it overstays.
pub fn wait_child(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("ingestd did not finish in {timeout:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(child: &Child, sig: i32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Reads the journal row of the file at `path`, if journaled.
pub fn row_for(env: &Env, path: &Path) -> Option<serde_json::Value> {
    env.status()
        .into_iter()
        .find(|r| r["path"].as_str() == Some(path.to_str().unwrap()))
}

/// The journal rows, read directly (cheap enough to poll).
pub fn rows(env: &Env) -> Vec<ingestd::journal::FileRow> {
    match ingestd::journal::Journal::open_read_only(&env.journal) {
        Ok(j) => j.list(None).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// A TCP port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port` (the metrics endpoint): status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((code, body))
}
