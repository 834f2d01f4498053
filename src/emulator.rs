//! A local api.video-compatible upload endpoint: `POST /upload?token=…` with the
//! multipart, Content-Range and problem-JSON rules of the real service, plus
//! rate-limit headers and fault injection for tests. (Stub: being written.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Options of the emulator; also the flags of `ingestd emulator`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorOptions {
    /// Directory where received videos are stored.
    #[arg(long = "data")]
    pub data_dir: PathBuf,
    /// A valid upload token (repeat for several).
    #[arg(long = "token", required = true)]
    pub tokens: Vec<String>,
    /// Upload requests allowed per window before 429 (0 = unlimited).
    #[arg(long, default_value_t = 100)]
    pub rate_limit: u32,
    /// Length of the rate-limit window.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub rate_window: Duration,
}

/// A fault to inject into one upload request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answer 503 without reading the body.
    Status503,
    /// Read part of the body, then drop the connection.
    ResetMidBody,
    /// Store the chunk, then drop the connection without replying.
    LostReply,
    /// Wait this long before handling the request.
    Latency(Duration),
}

/// Random faults applied to every upload request the script does not cover.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RandomFaults {
    pub seed: u64,
    pub p_503: f64,
    pub p_reset: f64,
    pub p_lost_reply: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VideoReport {
    pub video_id: String,
    pub title: String,
    pub total: Option<u64>,
    pub received_bytes: u64,
    pub complete: bool,
    pub sha256: Option<String>,
    pub accepted_chunks: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub upload_requests: u64,
    pub body_bytes: u64,
    pub videos_created: u64,
}

pub struct Emulator {
    addr: SocketAddr,
}

impl Emulator {
    pub async fn start(_listen: SocketAddr, _opts: EmulatorOptions) -> std::io::Result<Emulator> {
        Err(std::io::Error::other("emulator not written yet"))
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn set_tokens(&self, _tokens: Vec<String>) {}
    pub fn push_faults(&self, _faults: Vec<Option<Fault>>) {}
    pub fn set_random_faults(&self, _faults: RandomFaults) {}
    pub fn videos(&self) -> Vec<VideoReport> {
        Vec::new()
    }
    pub fn stats(&self) -> Stats {
        Stats::default()
    }
    pub async fn shutdown(self) {}
}

pub async fn run_standalone(
    _listen: SocketAddr,
    _opts: EmulatorOptions,
    _shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    Err(std::io::Error::other("emulator not written yet"))
}
