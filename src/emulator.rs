//! A local api.video-compatible upload endpoint: `POST /upload?token=…` with the
//! multipart, Content-Range and problem-JSON rules of the real service, plus
//! rate-limit headers and fault injection for tests.
//!
//! Control endpoints (for scripts driving `ingestd emulator`):
//! - `GET /_emulator/videos`: JSON array of [`VideoReport`];
//! - `GET /_emulator/stats`: [`Stats`];
//! - `POST /_emulator/faults`: `{"script": [null, "status503", "reset_mid_body",
//!   "lost_reply", {"latency": "250ms"}], "random": {"seed": 1, "p_503": 0.1, …},
//!   "clear": false}` (every key optional; `script` entries are appended);
//! - `PUT /_emulator/tokens`: JSON array of the valid upload tokens (they
//!   never expire; tokens created with `POST /upload-tokens` stay).
//!
//! Public assets (module `vod`): a completed Video's `assets` point at the
//! emulator, and `GET|HEAD /vod/{videoId}/hls/manifest.m3u8` answers 202
//! while the video is "encoding" ([`PlaybackOptions::encoding_time`] after
//! its last chunk), then 200 with an HLS playlist; no token, no rate limit.
//!
//! API-key endpoints (modules `auth` and `tokens`): `POST /auth/api-key`,
//! `POST /auth/refresh` and `GET|POST /upload-tokens`,
//! `GET|DELETE /upload-tokens/{id}`, authorised by HTTP Basic (the API key
//! as user name) or a bearer access token. Uploads, reads and writes have
//! their own rate-limit buckets ([`RateBucket`]).
//!
//! [`Emulator::set_down`] takes the whole server down (connections refused,
//! open ones dropped) and brings it back on the same address.
//!
//! Layout: `serve` (router, connections, down/up), `conn` (one connection's kill switch), `upload` (`POST /upload`),
//! `auth` (`/auth/*`, the `Authorization` check), `tokens` (the credentials'
//! book, `/upload-tokens*`), `control` (`/_emulator/*`), `vod` (the public
//! assets), `faults`,
//! `rate`, `range` (`Content-Range`), `store` (videos and their files),
//! `catalogue` (errors). This file holds the public surface and the state the
//! handlers share.
//!
//! The emulator is an island: it imports nothing from the rest of the product
//! (only `crate::emulator::…` and external crates), so that tests check the
//! client against the service's rules and not against the client's own code;
//! `tests/emulator_island.rs` checks this.

mod auth;
mod catalogue;
mod conn;
mod control;
mod faults;
mod range;
mod rate;
mod serve;
mod store;
mod tokens;
mod upload;
mod vod;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::faults::{Fault, RandomFaults};
pub use self::rate::{RateBucket, PRODUCTION_READS_PER_MINUTE, PRODUCTION_WRITES_PER_MINUTE};

use self::faults::FaultState;
use self::rate::{Buckets, RateInfo};
use self::serve::{router, serve, Phase};
use self::store::{lock, Store};
use self::tokens::TokenBook;

/// Options of the emulator; also the flags of `ingestd emulator`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorOptions {
    /// Directory where received videos are stored.
    #[arg(long = "data")]
    pub data_dir: PathBuf,
    /// A valid upload token (repeat for several).
    #[arg(long = "token", required = true)]
    pub tokens: Vec<String>,
    /// An API key of the token API, through HTTP Basic or `POST /auth/api-key`
    /// (repeat for several); without one, the upload-token management
    /// endpoints refuse everyone.
    #[arg(long = "api-key")]
    pub api_keys: Vec<String>,
    /// Upload requests allowed per window before 429 (0 = unlimited).
    #[arg(long, default_value_t = 100)]
    pub rate_limit: u32,
    /// Length of the rate-limit window (of every bucket).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub rate_window: Duration,
}

/// The rate limits of the API-key endpoints, counted apart from uploads
/// (also flags of `ingestd emulator`). The defaults are api.video's
/// production limits; its sandbox allows 100 reads and 40 writes a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct ApiRateLimits {
    /// Reads (GET /upload-tokens…) allowed per window before 429 (0 = unlimited)
    #[arg(long = "rate-limit-reads", default_value_t = PRODUCTION_READS_PER_MINUTE)]
    pub reads: u32,
    /// Writes (POST /upload-tokens, DELETE /upload-tokens/…) allowed per window before 429 (0 = unlimited)
    #[arg(long = "rate-limit-writes", default_value_t = PRODUCTION_WRITES_PER_MINUTE)]
    pub writes: u32,
}

impl Default for ApiRateLimits {
    fn default() -> ApiRateLimits {
        ApiRateLimits {
            reads: PRODUCTION_READS_PER_MINUTE,
            writes: PRODUCTION_WRITES_PER_MINUTE,
        }
    }
}

/// How uploaded videos become playable (also a flag of `ingestd emulator`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct PlaybackOptions {
    /// How long a video stays "encoding" after its last chunk is stored: its
    /// HLS manifest (`assets.hls`) answers 202 until then, 200 after (e.g. 3s;
    /// 0s = playable at once; a huge value = never)
    #[arg(long = "encoding-time", default_value = "0s", value_parser = humantime::parse_duration)]
    pub encoding_time: Duration,
}

/// How a video is being uploaded (fixed by its first accepted request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadMode {
    /// One request without `Content-Range`.
    Whole,
    /// `Content-Range: bytes FROM-TO/TOTAL`.
    Bytes,
    /// `Content-Range: part N/TOTAL`.
    Part,
}

/// What the emulator holds for one video.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VideoReport {
    pub video_id: String,
    pub title: String,
    /// Total size in bytes: the declared `total_bytes` in bytes mode, the
    /// final size once a whole-file or part-mode upload is complete.
    pub total: Option<u64>,
    /// Bytes of all accepted chunks.
    pub received_bytes: u64,
    pub complete: bool,
    /// SHA-256 (lowercase hex) of the reassembled file, once complete.
    pub sha256: Option<String>,
    pub accepted_chunks: u32,
    pub mode: UploadMode,
    /// Part mode: the declared `total_parts`.
    pub total_parts: Option<u64>,
    /// Bytes mode: accepted ranges `[from, to]` (inclusive), sorted.
    pub ranges: Vec<[u64; 2]>,
    /// Part mode: accepted part numbers, sorted.
    pub parts: Vec<u64>,
    /// ATOM date of creation.
    pub created_at: String,
    /// ATOM date the last chunk was stored (encoding starts then).
    #[serde(default)]
    pub completed_at: Option<String>,
    /// Requests of its HLS manifest (`GET` and `HEAD`), whatever their reply.
    #[serde(default)]
    pub manifest_requests: u64,
    /// Where the (reassembled) file is stored.
    pub path: PathBuf,
}

/// Counters since start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// `POST /upload` requests, whatever their outcome.
    pub upload_requests: u64,
    /// File-part bytes read from multipart bodies, accepted or not.
    pub body_bytes: u64,
    pub videos_created: u64,
    /// Chunks (whole files, byte ranges, parts) accepted and stored.
    pub accepted_chunks: u64,
    pub accepted_bytes: u64,
    /// Upload responses with a status ≥ 400.
    pub rejected_requests: u64,
    /// Faults applied (scripted or random, latency included).
    pub faults_injected: u64,
    /// Upload responses by HTTP status (killed connections are counted by
    /// the status they would have had).
    pub responses_by_status: BTreeMap<u16, u64>,
    /// Requests of HLS manifests, unknown videos included.
    #[serde(default)]
    pub manifest_requests: u64,
}

/// The running emulator. Dropping it stops the server too.
pub struct Emulator {
    addr: SocketAddr,
    app: Arc<App>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Whether the server should be down ([`Emulator::set_down`]).
    want_down: watch::Sender<bool>,
    /// Whether it is, as the server task reports it.
    phase: watch::Receiver<Phase>,
}

impl Emulator {
    /// Binds `listen` (port 0 for any) and starts serving in the background,
    /// with api.video's production limits of reads and writes.
    pub async fn start(listen: SocketAddr, opts: EmulatorOptions) -> std::io::Result<Emulator> {
        Emulator::start_with_limits(listen, opts, ApiRateLimits::default()).await
    }

    /// [`Emulator::start`] with the given limits of reads and writes.
    pub async fn start_with_limits(
        listen: SocketAddr,
        opts: EmulatorOptions,
        limits: ApiRateLimits,
    ) -> std::io::Result<Emulator> {
        let data_dir = opts.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(data_dir))
            .await
            .map_err(std::io::Error::other)??;
        let app = Arc::new(App {
            store: Arc::new(store),
            data_dir: opts.data_dir.clone(),
            tokens: TokenBook::new(&opts.tokens, &opts.api_keys),
            faults: Mutex::new(FaultState::default()),
            rates: Buckets::new(
                opts.rate_limit,
                limits.reads,
                limits.writes,
                opts.rate_window,
                Instant::now(),
            ),
            counters: Counters::default(),
            encoding_time: Mutex::new(Duration::ZERO),
        });
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let (want_down, want_rx) = watch::channel(false);
        let (phase_tx, phase) = watch::channel(Phase::Up);
        let task = tokio::spawn(serve(
            listener,
            addr,
            router(Arc::clone(&app)),
            shutdown.clone(),
            want_rx,
            phase_tx,
        ));
        tracing::info!(%addr, data = %opts.data_dir.display(), "emulator started");
        Ok(Emulator {
            addr,
            app,
            shutdown,
            task: Some(task),
            want_down,
            phase,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.app.data_dir
    }

    /// Replaces the set of valid upload tokens given from outside (they
    /// never expire); tokens created with `POST /upload-tokens` stay.
    pub fn set_tokens(&self, tokens: Vec<String>) {
        self.app.tokens.set_presets(tokens);
    }

    /// Replaces the API keys `POST /auth/api-key` accepts; access tokens
    /// obtained with a removed key stop working.
    pub fn set_api_keys(&self, keys: Vec<String>) {
        self.app.tokens.set_api_keys(keys);
    }

    /// Appends to the fault script: one entry per upload request, `None` =
    /// no fault. Requests beyond the script get the random faults.
    pub fn push_faults(&self, faults: Vec<Option<Fault>>) {
        lock(&self.app.faults).script.extend(faults);
    }

    /// Empties the fault script and turns random faults off.
    pub fn clear_faults(&self) {
        *lock(&self.app.faults) = FaultState::default();
    }

    /// Sets the random faults and reseeds their RNG.
    pub fn set_random_faults(&self, faults: RandomFaults) {
        lock(&self.app.faults).set_random(faults);
    }

    /// Sets how long videos stay "encoding" after their last chunk (their
    /// manifest answers 202 until then). It applies to every video, those
    /// already complete included, from the next manifest request on.
    pub fn set_encoding_time(&self, encoding_time: Duration) {
        *lock(&self.app.encoding_time) = encoding_time;
    }

    pub fn encoding_time(&self) -> Duration {
        self.app.encoding_time()
    }

    /// Changes the rate limit of uploads (0 = unlimited) and starts a fresh window.
    pub fn set_rate_limit(&self, limit: u32, window: Duration) {
        self.set_bucket_rate_limit(RateBucket::Uploads, limit, window);
    }

    /// Changes the rate limit of one bucket (0 = unlimited) and starts a
    /// fresh window for it.
    pub fn set_bucket_rate_limit(&self, bucket: RateBucket, limit: u32, window: Duration) {
        self.app
            .rates
            .reconfigure(bucket, limit, window, Instant::now());
    }

    /// Every video, oldest first.
    pub fn videos(&self) -> Vec<VideoReport> {
        self.app.store.reports()
    }

    pub fn stats(&self) -> Stats {
        self.app.stats()
    }

    /// Takes the server down (`true`) or brings it back (`false`), and
    /// returns once it is so. Down: the listening socket is closed, so new
    /// connections are refused, and every open connection is dropped with a
    /// reset, unless its request is already storing its chunk: that one gets
    /// its reply first (a reply lost after storing is the `LostReply` fault,
    /// not this). Up: the same address is bound again. The videos, the rate
    /// limit, the tokens and the counters are kept across.
    pub async fn set_down(&self, down: bool) -> std::io::Result<()> {
        self.want_down.send_replace(down);
        let mut phase = self.phase.clone();
        let reached = phase
            .wait_for(|p| match p {
                Phase::Up => !down,
                Phase::Down => down,
                Phase::Failed(_) => true,
            })
            .await
            .map_err(|_| std::io::Error::other("the emulator has stopped"))?
            .clone();
        match reached {
            Phase::Failed(e) => Err(std::io::Error::other(e)),
            Phase::Up | Phase::Down => Ok(()),
        }
    }

    /// Down for `duration`, then up again on the same address.
    pub async fn down_for(&self, duration: Duration) -> std::io::Result<()> {
        self.set_down(true).await?;
        tokio::time::sleep(duration).await;
        self.set_down(false).await
    }

    /// Whether the server is down (or could not come back).
    pub fn is_down(&self) -> bool {
        *self.phase.borrow() != Phase::Up
    }

    /// Stops accepting connections, closes the open ones (in-flight requests
    /// get up to 2 s) and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs the emulator until `shutdown` is cancelled (the `ingestd emulator`
/// command). Prints `emulator listening on http://ADDR` once bound.
pub async fn run_standalone(
    listen: SocketAddr,
    opts: EmulatorOptions,
    limits: ApiRateLimits,
    playback: PlaybackOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let emulator = Emulator::start_with_limits(listen, opts, limits).await?;
    emulator.set_encoding_time(playback.encoding_time);
    println!("emulator listening on {}", emulator.base_url());
    shutdown.cancelled().await;
    emulator.shutdown().await;
    Ok(())
}

/// Shared state of the handlers.
pub(crate) struct App {
    store: Arc<Store>,
    data_dir: PathBuf,
    tokens: TokenBook,
    faults: Mutex<FaultState>,
    rates: Buckets,
    counters: Counters,
    encoding_time: Mutex<Duration>,
}

#[derive(Default)]
struct Counters {
    upload_requests: AtomicU64,
    manifest_requests: AtomicU64,
    body_bytes: AtomicU64,
    rejected: AtomicU64,
    faults_injected: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

impl App {
    fn next_fault(&self) -> Option<Fault> {
        lock(&self.faults).next()
    }

    fn rate_acquire(&self, bucket: RateBucket) -> RateInfo {
        self.rates.acquire(bucket, Instant::now())
    }

    /// The upload bucket's values, for responses no other bucket counts.
    fn rate_peek(&self) -> RateInfo {
        self.rates.peek(RateBucket::Uploads, Instant::now())
    }

    fn encoding_time(&self) -> Duration {
        *lock(&self.encoding_time)
    }

    fn token_is_valid(&self, token: &str) -> bool {
        self.tokens.upload_token_is_valid(token)
    }

    fn record_status(&self, status: StatusCode) {
        if status.as_u16() >= 400 {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.counters.by_status)
            .entry(status.as_u16())
            .or_default() += 1;
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            upload_requests: c.upload_requests.load(Ordering::Relaxed),
            body_bytes: c.body_bytes.load(Ordering::Relaxed),
            videos_created: self.store.videos_created(),
            accepted_chunks: self.store.accepted_chunks(),
            accepted_bytes: self.store.accepted_bytes(),
            rejected_requests: c.rejected.load(Ordering::Relaxed),
            faults_injected: c.faults_injected.load(Ordering::Relaxed),
            responses_by_status: lock(&c.by_status).clone(),
            manifest_requests: c.manifest_requests.load(Ordering::Relaxed),
        }
    }
}
