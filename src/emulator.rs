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
//! API-key endpoints (module `tokens`): `POST /auth/api-key` and
//! `GET|POST /upload-tokens`, `GET|DELETE /upload-tokens/{id}`.
//!
//! Each accepted TCP connection is served by hyper directly (not `axum::serve`)
//! so that a fault can drop one connection without a reply.
//!
//! [`Emulator::set_down`] takes the whole server down (connections refused,
//! open ones dropped) and brings it back on the same address.

pub mod catalogue;
mod range;
mod rate;
mod store;
mod tokens;
mod upload;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::catalogue::{self as cat, Problem};
use self::rate::{RateInfo, RateLimiter};
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
    /// An API key accepted by `POST /auth/api-key` (repeat for several);
    /// without one, the upload-token management endpoints refuse everyone.
    #[arg(long = "api-key")]
    pub api_keys: Vec<String>,
    /// Upload requests allowed per window before 429 (0 = unlimited).
    #[arg(long, default_value_t = 100)]
    pub rate_limit: u32,
    /// Length of the rate-limit window.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub rate_window: Duration,
}

/// A fault to inject into one upload request.
///
/// JSON: `"status503"`, `"reset_mid_body"`, `"lost_reply"`,
/// `{"latency": "250ms"}` (a humantime string, or a number of milliseconds),
/// `{"reject": "<slug>"}`, `"garbage_reply"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Read (and discard) the body, then answer 503.
    Status503,
    /// Read part of the body, then drop the connection.
    ResetMidBody,
    /// Store the chunk, then drop the connection without replying.
    LostReply,
    /// Wait this long before handling the request.
    Latency(#[serde(with = "latency_serde")] Duration),
    /// Read (and discard) the body, then answer with this catalogue error
    /// (its slug, e.g. `"uploaded-file-invalid-file"`): a permanent refusal.
    Reject(String),
    /// Handle the request normally (store the chunk), then answer with its
    /// status but a body that is not JSON (a misbehaving proxy).
    GarbageReply,
}

/// Random faults applied to every upload request the script does not cover.
/// The draws come from an RNG seeded with `seed` (reset by every
/// `set_random_faults`), so a run is reproducible.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RandomFaults {
    pub seed: u64,
    pub p_503: f64,
    pub p_reset: f64,
    pub p_lost_reply: f64,
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

/// Where the server task is, for [`Emulator::set_down`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Up,
    Down,
    /// The address could not be bound again after a down period.
    Failed(String),
}

impl Emulator {
    /// Binds `listen` (port 0 for any) and starts serving in the background.
    pub async fn start(listen: SocketAddr, opts: EmulatorOptions) -> std::io::Result<Emulator> {
        let data_dir = opts.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(data_dir))
            .await
            .map_err(std::io::Error::other)??;
        let app = Arc::new(App {
            store: Arc::new(store),
            data_dir: opts.data_dir.clone(),
            tokens: TokenBook::new(&opts.tokens, &opts.api_keys),
            faults: Mutex::new(FaultState::default()),
            rate: Mutex::new(RateLimiter::new(
                opts.rate_limit,
                opts.rate_window,
                Instant::now(),
            )),
            counters: Counters::default(),
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

    /// Changes the rate limit (0 = unlimited) and starts a fresh window.
    pub fn set_rate_limit(&self, limit: u32, window: Duration) {
        lock(&self.app.rate).reconfigure(limit, window, Instant::now());
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
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let emulator = Emulator::start(listen, opts).await?;
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
    rate: Mutex<RateLimiter>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    upload_requests: AtomicU64,
    body_bytes: AtomicU64,
    rejected: AtomicU64,
    faults_injected: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

struct FaultState {
    script: VecDeque<Option<Fault>>,
    random: RandomFaults,
    rng: fastrand::Rng,
}

impl Default for FaultState {
    fn default() -> FaultState {
        FaultState {
            script: VecDeque::new(),
            random: RandomFaults::default(),
            rng: fastrand::Rng::with_seed(0),
        }
    }
}

impl FaultState {
    fn set_random(&mut self, random: RandomFaults) {
        self.rng = fastrand::Rng::with_seed(random.seed);
        self.random = random;
    }

    fn next(&mut self) -> Option<Fault> {
        if let Some(entry) = self.script.pop_front() {
            return entry;
        }
        let r = &self.random;
        if r.p_503 <= 0.0 && r.p_reset <= 0.0 && r.p_lost_reply <= 0.0 {
            return None;
        }
        let x = self.rng.f64();
        if x < r.p_503 {
            Some(Fault::Status503)
        } else if x < r.p_503 + r.p_reset {
            Some(Fault::ResetMidBody)
        } else if x < r.p_503 + r.p_reset + r.p_lost_reply {
            Some(Fault::LostReply)
        } else {
            None
        }
    }
}

impl App {
    fn next_fault(&self) -> Option<Fault> {
        lock(&self.faults).next()
    }

    fn rate_acquire(&self) -> RateInfo {
        lock(&self.rate).acquire(Instant::now())
    }

    fn rate_peek(&self) -> RateInfo {
        lock(&self.rate).peek(Instant::now())
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
        }
    }
}

/// Put in every request's extensions: [`ConnKill::kill`] drops the
/// connection; [`ConnKill::begin_store`] tells a server going down that a
/// chunk is being stored, so its reply is not lost.
#[derive(Clone)]
pub(crate) struct ConnKill {
    token: CancellationToken,
    phase: Arc<Mutex<ConnPhase>>,
}

/// What a connection's current request is doing, as far as going down cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnPhase {
    /// Reading a request (or idle): dropping it loses nothing stored.
    Receiving,
    /// Storing a chunk: its reply must go out.
    Storing,
    /// The server went down: nothing more is stored on this connection.
    Down,
}

impl ConnKill {
    fn new() -> ConnKill {
        ConnKill {
            token: CancellationToken::new(),
            phase: Arc::new(Mutex::new(ConnPhase::Receiving)),
        }
    }

    /// Drops the connection (with a reset).
    pub(crate) fn kill(&self) {
        self.token.cancel();
    }

    /// A new request started on this connection.
    pub(crate) fn request_started(&self) {
        let mut phase = lock(&self.phase);
        if *phase != ConnPhase::Down {
            *phase = ConnPhase::Receiving;
        }
    }

    /// The request is about to store its chunk; false if the server went
    /// down first (then nothing may be stored).
    pub(crate) fn begin_store(&self) -> bool {
        let mut phase = lock(&self.phase);
        if *phase == ConnPhase::Down {
            return false;
        }
        *phase = ConnPhase::Storing;
        true
    }

    /// The server is going down: true if the connection may be dropped at
    /// once (nothing more will be stored on it), false if a chunk is being
    /// stored and its reply should go out first.
    fn going_down(&self) -> bool {
        let mut phase = lock(&self.phase);
        if *phase == ConnPhase::Storing {
            return false;
        }
        *phase = ConnPhase::Down;
        true
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/upload", post(upload::upload))
        .route("/auth/api-key", post(tokens::authenticate))
        .route("/upload-tokens", get(tokens::list).post(tokens::create))
        .route(
            "/upload-tokens/{token}",
            get(tokens::show).delete(tokens::delete),
        )
        .route("/_emulator/videos", get(control_videos))
        .route("/_emulator/stats", get(control_stats))
        .route("/_emulator/faults", post(control_faults))
        .route("/_emulator/tokens", put(control_tokens))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            rate_headers,
        ))
        .with_state(app)
}

/// Adds the `X-RateLimit-*` headers to every response that has none yet.
async fn rate_headers(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if !response.headers().contains_key(rate::LIMIT_HEADER) {
        app.rate_peek().apply(response.headers_mut());
    }
    response
}

async fn not_found(req: Request) -> Response {
    upload::drain(&mut req.into_body().into_data_stream()).await;
    Problem::new(cat::UNRECOGNIZED_REQUEST_URL).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    upload::drain(&mut req.into_body().into_data_stream()).await;
    Problem::new(cat::METHOD_NOT_ALLOWED).into_response()
}

async fn control_videos(State(app): State<Arc<App>>) -> Json<Vec<VideoReport>> {
    Json(app.store.reports())
}

async fn control_stats(State(app): State<Arc<App>>) -> Json<Stats> {
    Json(app.stats())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsRequest {
    #[serde(default)]
    clear: bool,
    #[serde(default)]
    script: Vec<Option<Fault>>,
    random: Option<RandomFaults>,
}

async fn control_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let request: FaultsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return Problem::new(cat::INVALID_PAYLOAD)
                .detail(e.to_string())
                .into_response()
        }
    };
    let mut faults = lock(&app.faults);
    if request.clear {
        *faults = FaultState::default();
    }
    faults.script.extend(request.script);
    if let Some(random) = request.random {
        faults.set_random(random);
    }
    let queued = faults.script.len();
    drop(faults);
    Json(serde_json::json!({ "queued": queued })).into_response()
}

async fn control_tokens(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<String>>(&body) {
        Ok(tokens) => {
            app.tokens.set_presets(tokens);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => Problem::new(cat::INVALID_PAYLOAD)
            .detail(e.to_string())
            .into_response(),
    }
}

/// How long open connections get to finish when the emulator shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a connection storing a chunk gets to send its reply when the
/// server goes down (it may be assembling a large file).
const DOWN_GRACE: Duration = Duration::from_secs(10);
/// How long to keep trying to bind the address again after a down period.
const REBIND_FOR: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown`; goes down and comes back up as
/// `want_down` says, reporting each change on `phase`.
async fn serve(
    mut listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
    mut want_down: watch::Receiver<bool>,
    phase: watch::Sender<Phase>,
) {
    loop {
        // Up: the connections of this period end when it does.
        let tracker = TaskTracker::new();
        let period = CancellationToken::new();
        let stop = loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break true,
                r = want_down.wait_for(|d| *d) => break r.is_err(),
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    tracker.spawn(serve_connection(
                        stream,
                        router.clone(),
                        shutdown.clone(),
                        period.clone(),
                    ));
                }
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "emulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        drop(listener);
        if stop {
            shutdown.cancel();
        } else {
            period.cancel();
        }
        tracker.close();
        tracker.wait().await;
        if stop {
            break;
        }
        tracing::info!(%addr, "emulator down");
        phase.send_replace(Phase::Down);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = want_down.wait_for(|d| !*d) => if r.is_err() { break },
        }
        listener = match rebind(addr, &shutdown).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "emulator: cannot bind the address again");
                phase.send_replace(Phase::Failed(format!("cannot bind {addr} again: {e}")));
                return;
            }
        };
        tracing::info!(%addr, "emulator up again");
        phase.send_replace(Phase::Up);
    }
    tracing::info!("emulator stopped");
}

/// Binds `addr` again, retrying for a while (a connection may hold the port
/// for a moment).
async fn rebind(addr: SocketAddr, shutdown: &CancellationToken) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + REBIND_FOR;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline || shutdown.is_cancelled() => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "emulator: bind failed; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    shutdown: CancellationToken,
    down: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let resetter = Resetter::new(&stream);
    let conn_kill = ConnKill::new();
    let kill = conn_kill.token.clone();
    let request_kill = conn_kill.clone();
    let tower = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(request_kill.clone());
        tower.call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "emulator: connection ended with an error");
            }
        }
        _ = kill.cancelled() => {
            tracing::debug!("emulator: dropping a connection (fault)");
            resetter.reset();
        }
        _ = down.cancelled() => {
            if conn_kill.going_down() {
                resetter.reset();
            } else {
                // A chunk is being stored: its reply goes out, then the
                // connection closes.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = kill.cancelled() => resetter.reset(),
                    _ = tokio::time::sleep(DOWN_GRACE) => resetter.reset(),
                }
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = kill.cancelled() => resetter.reset(),
                _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
            }
        }
    }
    // `conn` (and with it the socket) is dropped here.
}

/// Sets `SO_LINGER 0` on a connection about to be dropped so the peer sees a
/// reset. It keeps a duplicate of the socket's descriptor because hyper owns
/// the stream itself.
struct Resetter {
    #[cfg(unix)]
    fd: Option<std::os::fd::OwnedFd>,
}

impl Resetter {
    fn new(stream: &TcpStream) -> Resetter {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            Resetter {
                fd: stream.as_fd().try_clone_to_owned().ok(),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = stream;
            Resetter {}
        }
    }

    fn reset(self) {
        #[cfg(unix)]
        if let Some(fd) = self.fd {
            // The duplicate shares the socket (and its non-blocking mode);
            // dropping it only closes the duplicate descriptor.
            match TcpStream::from_std(std::net::TcpStream::from(fd)) {
                Ok(dup) => {
                    if let Err(e) = dup.set_zero_linger() {
                        tracing::debug!(error = %e, "emulator: cannot set SO_LINGER");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "emulator: cannot set SO_LINGER"),
            }
        }
    }
}

/// `Fault::Latency` as a humantime string (`"250ms"`); also reads a number
/// of milliseconds.
mod latency_serde {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(LatencyVisitor)
    }

    struct LatencyVisitor;

    impl Visitor<'_> for LatencyVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"250ms\" or a number of milliseconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_millis)
                .map_err(|_| E::custom("negative latency"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json() {
        let script: Vec<Option<Fault>> = serde_json::from_str(
            r#"[null, "status503", "reset_mid_body", "lost_reply", {"latency": "250ms"}, {"latency": 40}]"#,
        )
        .unwrap();
        assert_eq!(
            script,
            vec![
                None,
                Some(Fault::Status503),
                Some(Fault::ResetMidBody),
                Some(Fault::LostReply),
                Some(Fault::Latency(Duration::from_millis(250))),
                Some(Fault::Latency(Duration::from_millis(40))),
            ]
        );
        assert_eq!(
            serde_json::to_string(&Fault::Latency(Duration::from_millis(250))).unwrap(),
            r#"{"latency":"250ms"}"#
        );
        assert_eq!(
            serde_json::to_string(&Fault::Status503).unwrap(),
            r#""status503""#
        );
    }

    #[test]
    fn script_then_seeded_random() {
        let mut f = FaultState::default();
        f.script.extend([Some(Fault::LostReply), None]);
        assert_eq!(f.next(), Some(Fault::LostReply));
        assert_eq!(f.next(), None);
        assert_eq!(f.next(), None);
        let random = RandomFaults {
            seed: 7,
            p_503: 0.3,
            p_reset: 0.3,
            p_lost_reply: 0.3,
        };
        f.set_random(random.clone());
        let a: Vec<_> = (0..50).map(|_| f.next()).collect();
        f.set_random(random);
        let b: Vec<_> = (0..50).map(|_| f.next()).collect();
        assert_eq!(a, b);
        assert!(a.contains(&Some(Fault::Status503)));
        assert!(a.contains(&Some(Fault::ResetMidBody)));
        assert!(a.contains(&Some(Fault::LostReply)));
        assert!(a.contains(&None));
    }
}
