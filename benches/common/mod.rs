//! What the benchmarks need.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `ingestd` binary of the profile the benchmark was built with.
pub fn ingestd_bin() -> PathBuf {
    // cargo bench builds the binary in the same profile directory.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("ingestd");
    assert!(
        bin.exists(),
        "build it first: cargo build --release ({})",
        bin.display()
    );
    bin
}

/// Median, min and max (the upper median for an even count).
pub fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// `ingestd emulator` in a process of its own (unlimited rate, `token`,
/// data under `dir/emulator`), started by `cmd` (an `ingestd` command):
/// the child and its base URL. (Not every benchmark starts one.)
#[allow(dead_code)]
pub fn spawn_emulator(mut cmd: Command, dir: &Path, token: &str) -> (Child, String) {
    let mut child = cmd
        .args(["emulator", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
        .arg("--data")
        .arg(dir.join("emulator"))
        .args(["--token", token])
        .env("INGESTD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the emulator");
    let out = child.stdout.take().expect("emulator stdout");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("emulator address");
    let base = line
        .trim()
        .strip_prefix("emulator listening on ")
        .unwrap_or_else(|| panic!("unexpected emulator output: {line:?}"))
        .to_owned();
    (child, base)
}
