//! Upload workers: claim a file from the journal, send it chunk by chunk
//! (streamed from disk), commit each acknowledged chunk before the next, and
//! turn every failure into a journal state: retrying (persisted backoff),
//! failed (permanent), gone (the source changed), or back to the queue (token
//! trouble, shutdown).
//!
//! Shared by all workers: the [`Pacer`] (api.video's rate limit is per
//! account, not per file), the [`TokenGate`] (a refused token pauses every
//! upload), the [`Throttle`] (`upload.bandwidth_limit`) and the [`Outage`]
//! (files waiting because the server could not be reached).

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{watch, Notify};
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::apivideo::{ApiError, ByteRange, Client, ErrorClass, RateInfo, Reply, MAX_TOTAL_BYTES};
use crate::config::{InDoubt, WatchSettings, MIN_CHUNK_SIZE};
use crate::journal::{now_ms, show_path, FileRow, JournalError, JournalHandle};

mod source;

/// What a done file's row says when earlier requests that would have
/// created its video ended in doubt.
fn doubt_note(in_doubt: u32, ranged: bool) -> Option<String> {
    (in_doubt > 0).then(|| {
        let what = if ranged {
            "an unfinished video (it never plays, and api.video may clean it up)"
        } else {
            "a duplicate video"
        };
        format!(
            "uploaded; {in_doubt} earlier request(s) ended without a reply (a lost connection or a \
             crash), so api.video may also hold {what} with this file's name"
        )
    })
}

/// Backoff: full jitter over `BASE · 2^(attempt-1)`, capped.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// While the server cannot be reached, one waiting file retries at least
/// this often (see [`Outage`]).
pub const OUTAGE_PROBE: Duration = Duration::from_secs(5);
/// In the foreground (`upload`, `run --once`), a file that failed this many
/// times in a row is left `retrying` for the next run instead of blocking the
/// command's exit.
pub const FOREGROUND_ATTEMPTS: u32 = 5;
/// Bytes read from disk per body frame: large enough that per-frame costs
/// vanish, small enough that memory stays flat whatever the chunk size.
const READ_BUF: usize = 256 * 1024;
/// No byte of a chunk body taken by the connection for this long: a stall.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// After the last byte is sent, how long the server may take to answer
/// (it may assemble the whole file before answering the last chunk).
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// On shutdown, how long a chunk in flight may take to finish before it is abandoned.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// On shutdown, how much longer to wait for the reply to a chunk whose body
/// was sent in full (abandoning it would leave its fate unknown).
const SHUTDOWN_REPLY_WAIT: Duration = Duration::from_secs(20);
/// On shutdown, the longest the workers may take in all: past it, a worker
/// stuck in I/O (a dead network mount) is dropped. Its row stays `uploading`
/// and is resumed at the next start, as after a crash.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(35);

/// The chunks of a file of `size` bytes: every chunk `chunk_size` long but
/// the last, which holds the rest (never empty). A file larger than
/// [`MIN_CHUNK_SIZE`] but no larger than one chunk goes in two requests, the
/// first exactly `MIN_CHUNK_SIZE` long: a first request that cannot complete
/// the video makes a lost reply harmless (at worst a partial video is left
/// behind), where one request holding the whole file could, sent again after
/// its reply was lost, make a duplicate.
pub fn chunk_plan(size: u64, chunk_size: u64) -> impl Iterator<Item = ByteRange> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        (offset < size).then(|| {
            let range = chunk_at(offset, size, chunk_size);
            offset += range.len;
            range
        })
    })
}

/// The chunk that starts at `offset` (see [`chunk_plan`]).
pub fn chunk_at(offset: u64, size: u64, chunk_size: u64) -> ByteRange {
    let chunk_size = chunk_size.max(1);
    let len = if offset == 0 && size > MIN_CHUNK_SIZE && size <= chunk_size {
        MIN_CHUNK_SIZE
    } else {
        chunk_size.min(size - offset)
    };
    ByteRange {
        offset,
        len,
        total: size,
    }
}

/// Whether a file goes in more than one request (with `Content-Range`).
pub fn is_chunked(size: u64, chunk_size: u64) -> bool {
    size > chunk_size.min(MIN_CHUNK_SIZE)
}

/// Full-jitter exponential backoff for the `attempt`-th failure (1-based).
pub fn backoff_delay(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(BACKOFF_CAP);
    // At least 100 ms, so a storm of failures never spins.
    let ms = fastrand::u64(100..=u64::try_from(ceiling.as_millis()).unwrap_or(100).max(100));
    Duration::from_millis(ms)
}

/// Global pacing from the rate-limit headers: when the server says no request
/// is left in the window, nobody sends until it resets.
///
/// A reply's `remaining` was counted when the server took that request in;
/// requests started after it (still in flight, or answered first) may not be
/// in it yet, so they are taken off (each [`Turn`] carries its place in the
/// order). A reply to a request started before the window was seen to reset
/// says nothing about the new window and is ignored (a 429 excepted).
#[derive(Debug, Default)]
pub struct Pacer {
    state: Mutex<PacerState>,
}

#[derive(Debug, Default)]
struct PacerState {
    /// Requests left in the current window, as last reported, minus those
    /// started after the reported one.
    remaining: Option<u64>,
    /// When the current window ends.
    reset_at: Option<Instant>,
    /// Requests started so far (each turn's sequence number).
    started: u64,
    /// Windows seen to end so far.
    window: u64,
}

/// One request's place in the pacing, for [`Pacer::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    seq: u64,
    window: u64,
}

impl Pacer {
    /// Waits until a request may be sent, and counts it. When `cancel` ends
    /// the wait, the turn is counted all the same (at worst the window's
    /// estimate is one request low).
    pub async fn wait_turn(&self, cancel: &CancellationToken) -> Turn {
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                if s.reset_at.is_some_and(|reset| reset <= now) {
                    s.remaining = None;
                    s.reset_at = None;
                    s.window += 1;
                }
                match (s.remaining, s.reset_at) {
                    (Some(0), Some(reset)) if !cancel.is_cancelled() => reset - now,
                    // No request left and no word on when: try again in a second.
                    (Some(0), None) if !cancel.is_cancelled() => {
                        s.reset_at = Some(now + Duration::from_secs(1));
                        Duration::from_secs(1)
                    }
                    (remaining, _) => {
                        s.remaining = remaining.map(|n| n.saturating_sub(1));
                        s.started += 1;
                        return Turn {
                            seq: s.started,
                            window: s.window,
                        };
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }

    /// Takes in the rate-limit headers of the reply to `turn`'s request.
    pub fn observe(&self, turn: Turn, rate: &RateInfo, limited: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if turn.window != s.window && !limited {
            return;
        }
        let now = Instant::now();
        if let Some(secs) = rate.retry_after {
            s.reset_at = Some(now + Duration::from_secs(secs.max(u64::from(limited))));
        }
        if limited {
            s.remaining = Some(0);
            if s.reset_at.is_none() {
                s.reset_at = Some(now + Duration::from_secs(1));
            }
        } else if let Some(r) = rate.remaining {
            let later = s.started.saturating_sub(turn.seq);
            s.remaining = Some(r.saturating_sub(later));
        }
    }
}

/// Whether the token works. A 401 closes the gate for every worker until the
/// token is replaced; a stale 401 (sent with the old token) cannot close it again.
#[derive(Debug, Clone)]
pub struct TokenGate {
    tx: Arc<watch::Sender<GateState>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateState {
    /// Bumped every time the token is replaced.
    pub generation: u64,
    /// Why the gate is closed, when it is.
    pub refused: Option<String>,
}

impl Default for TokenGate {
    fn default() -> Self {
        TokenGate {
            tx: Arc::new(
                watch::channel(GateState {
                    generation: 0,
                    refused: None,
                })
                .0,
            ),
        }
    }
}

impl TokenGate {
    pub fn state(&self) -> GateState {
        self.tx.borrow().clone()
    }

    /// Closes the gate, if `generation` is still the current token.
    pub fn refuse(&self, generation: u64, why: String) -> bool {
        self.tx.send_if_modified(|s| {
            if s.generation == generation && s.refused.is_none() {
                s.refused = Some(why);
                true
            } else {
                false
            }
        })
    }

    /// A new token is in place: open the gate.
    pub fn replaced(&self) {
        self.tx.send_modify(|s| {
            s.generation += 1;
            s.refused = None;
        });
    }

    /// Waits until the gate is open; false if cancelled first.
    pub async fn wait_open(&self, cancel: &CancellationToken) -> bool {
        let mut rx = self.tx.subscribe();
        tokio::select! {
            r = rx.wait_for(|s| s.refused.is_none()) => r.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }
}

/// Files waiting only because the server could not be reached (nothing got
/// through: connection refused, no route). Their backoff grows while the
/// server is away; without more, once it is back each would still sit out
/// its delay, up to [`BACKOFF_CAP`], for nothing. So:
/// - one of them, the probe, retries at most [`OUTAGE_PROBE`] apart (one
///   connection attempt every few seconds; the others back off as usual);
/// - the first request that gets through, the probe's or any other, makes
///   every file waiting here due at once (a journal update).
///
/// A server still unreachable gets only the probe; one that answers with
/// errors (5xx, resets) is not unreachable, and keeps the usual backoff.
#[derive(Debug, Default)]
pub struct Outage {
    state: Mutex<OutageState>,
}

#[derive(Debug, Default)]
struct OutageState {
    /// Rows whose last attempt could not connect.
    waiting: HashSet<i64>,
    /// When the probe is due. Past (or none), the next file that cannot
    /// connect becomes the probe, so a probe whose file went away (deleted,
    /// say) is replaced.
    probe_at: Option<Instant>,
}

impl Outage {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutageState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// File `id` could not connect and would wait `delay`: the delay it
    /// waits (shorter if it is the probe).
    fn unreachable(&self, id: i64, delay: Duration) -> Duration {
        let mut s = self.lock();
        s.waiting.insert(id);
        let now = Instant::now();
        if s.probe_at.is_some_and(|at| at > now) {
            return delay;
        }
        let delay = delay.min(OUTAGE_PROBE);
        s.probe_at = Some(now + delay);
        delay
    }

    /// File `id` failed some other way, or is no longer waiting.
    fn forget(&self, id: i64) {
        self.lock().waiting.remove(&id);
    }

    /// A request of file `id` got through: the other files to make due now.
    fn reached(&self, id: i64) -> Vec<i64> {
        let mut s = self.lock();
        if s.waiting.is_empty() {
            return Vec::new();
        }
        s.probe_at = None;
        s.waiting.drain().filter(|x| *x != id).collect()
    }
}

/// A token bucket shared by all uploads (`upload.bandwidth_limit`).
#[derive(Debug)]
pub struct Throttle {
    /// Bytes per second; 0 = unlimited.
    rate: AtomicU64,
    bucket: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(rate: u64) -> Throttle {
        Throttle {
            rate: AtomicU64::new(rate),
            bucket: Mutex::new((0.0, Instant::now())),
        }
    }

    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// Waits until `n` bytes may be sent.
    pub async fn take(&self, n: usize) {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return;
        }
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let rate = rate as f64;
            // Allow a burst of at most a quarter second of traffic.
            let burst = rate / 4.0;
            b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(burst);
            b.1 = now;
            b.0 -= n as f64;
            if b.0 < 0.0 {
                Duration::from_secs_f64(-b.0 / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The current watch folders; a reload sends a new list.
pub type Folders = Arc<watch::Sender<Arc<Vec<WatchSettings>>>>;

/// Everything a worker needs, shared by all of them.
#[derive(Debug, Clone)]
pub struct Uploader {
    pub journal: JournalHandle,
    pub client: Client,
    pub chunk_size: u64,
    pub pacer: Arc<Pacer>,
    pub gate: TokenGate,
    pub throttle: Arc<Throttle>,
    /// Signalled when new work may be in the journal.
    pub work: Arc<Notify>,
    /// The watch folders (replaced on reload), for the after-upload action
    /// of their files.
    pub watches: Folders,
    /// How many workers should run (changed on reload).
    pub slots: Arc<watch::Sender<usize>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::service::Metrics>,
    /// Files waiting because the server could not be reached.
    pub outage: Arc<Outage>,
    /// `upload.in_doubt`: resend, or fail, a one-request file in doubt.
    pub in_doubt: InDoubt,
    /// Watch roots that are unavailable: their files wait.
    pub shares: Arc<crate::roots::Shares>,
}

/// How one attempt at a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done {
        video_id: String,
    },
    /// With the journal's count of failures since the last progress.
    Retrying {
        attempts: u32,
    },
    Failed,
    Gone,
    /// Given back to the queue: the token was refused.
    Paused,
    /// Given back to the queue: shutting down.
    Released,
    /// Given back to the queue: its watch folder is unavailable.
    Waiting,
}

/// Errors that stop a worker: the journal cannot record what happened, so
/// continuing could lose track of what the server holds.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Progress of the body being sent, watched for stalls.
#[derive(Debug)]
struct BodyProgress {
    sent: AtomicU64,
    /// Milliseconds since `start` of the last byte taken (or of the end of a
    /// bandwidth-limit wait, which is not a stall).
    last_ms: AtomicU64,
    start: Instant,
    /// This upload is sleeping on the bandwidth limit (not a stall).
    throttled: std::sync::atomic::AtomicBool,
}

impl BodyProgress {
    fn touch(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        self.alive();
    }
    fn alive(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// The multipart filename: the file's name, made valid UTF-8 (reqwest
/// percent-encodes what a header cannot carry).
fn display_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
        .unwrap_or_else(|| "upload".to_owned());
    name.replace(['\r', '\n'], " ")
}

enum ChunkResult {
    /// A 2xx reply (not yet proof of storage: see its videoId).
    Stored(Reply),
    Failed(ApiError),
    /// No progress for too long; the reason says which wait ran out.
    Stalled(&'static str),
    Abandoned,
}

impl Uploader {
    /// Uploads one claimed file as far as it goes.
    pub async fn upload(
        &self,
        row: FileRow,
        cancel: &CancellationToken,
    ) -> Result<Outcome, WorkerError> {
        let id = row.id;
        let path = row.path();
        let shown = show_path(&path);
        let size = row.identity.size;

        let mut file = match source::open(&self.shares, &row).await {
            Ok(f) => f,
            Err(stop) => return self.stop(&row, stop).await,
        };
        if let Err(stop) = source::verify_start(&self.shares, &self.journal, &row, &file).await {
            return self.stop(&row, stop).await;
        }
        if size == 0 {
            let why = "the file is empty: nothing to upload";
            self.journal.call(move |j| j.mark_failed(id, why)).await?;
            return Ok(Outcome::Failed);
        }
        if size > MAX_TOTAL_BYTES {
            let why = format!(
                "the file is {size} bytes, over api.video's limit of {MAX_TOTAL_BYTES} bytes"
            );
            error!(id, path = %shown, "{why}");
            self.journal.call(move |j| j.mark_failed(id, &why)).await?;
            return Ok(Outcome::Failed);
        }

        // The chunk plan, fixed in the journal just before the first request
        // of this attempt (see below).
        let mut plan: Option<(u64, bool)> = None;
        let name = display_name(&path);
        let mut offset = row.bytes_uploaded;
        let mut video_id = row.video_id.clone();
        // A resumed upload may have had its chunk at `offset` stored just
        // before the process died, so an overlap reply means "stored".
        let mut maybe_stored = video_id.is_some();
        let mut last_log = Instant::now();
        if offset > 0 {
            info!(id, path = %shown, video_id = video_id.as_deref().unwrap_or(""), offset, size, "resuming upload");
        }

        while offset < size {
            if cancel.is_cancelled() {
                self.journal.call(move |j| j.release(id, None)).await?;
                return Ok(Outcome::Released);
            }
            if let Err(stop) = source::check_chunk(&self.shares, &row, &file).await {
                return self.stop(&row, stop).await;
            }
            let turn = self.pacer.wait_turn(cancel).await;
            if cancel.is_cancelled() {
                self.journal.call(move |j| j.release(id, None)).await?;
                return Ok(Outcome::Released);
            }
            let generation = self.gate.state().generation;
            if self.gate.state().refused.is_some() {
                self.journal
                    .call(move |j| j.release(id, Some("paused: the upload token was refused")))
                    .await?;
                return Ok(Outcome::Paused);
            }
            // Fixing the plan also notes, when there is no videoId yet, that
            // a request that may create one is about to go: as late as this,
            // so a crash while waiting for a turn puts nothing in doubt.
            let (chunk_size, ranged) = match plan {
                Some(p) if video_id.is_some() => p,
                _ => {
                    let wanted = self.chunk_size;
                    let chunk_size = self
                        .journal
                        .call(move |j| j.set_chunk_size(id, wanted))
                        .await?;
                    *plan.insert((chunk_size, is_chunked(size, chunk_size)))
                }
            };
            let range = chunk_at(offset, size, chunk_size);
            let (result, body_out) = self
                .send_chunk(&mut file, &name, range, ranged, video_id.as_deref(), cancel)
                .await;
            // Stored: once that is recorded, the files waiting for the server
            // may go (see `server_reached`).
            let mut reached = false;
            // A request that would create the video, fully sent, without a
            // known outcome: the server may hold it.
            let doubtful = body_out && video_id.is_none();
            let reply = match result {
                ChunkResult::Stored(reply) => {
                    reached = true;
                    Some(reply)
                }
                ChunkResult::Failed(e)
                    if maybe_stored && (e.is_already_stored() || e.is_already_complete()) =>
                {
                    info!(id, path = %shown, video_id = video_id.as_deref().unwrap_or(""), range = %range.content_range(), "the server already had this chunk (sent before an interruption); moving on");
                    None
                }
                ChunkResult::Failed(ApiError::RateLimited { retry_after }) => {
                    let rate = RateInfo {
                        retry_after: Some(retry_after.as_secs()),
                        ..RateInfo::default()
                    };
                    self.pacer.observe(turn, &rate, true);
                    self.metrics.error(ErrorClass::Retry);
                    if video_id.is_none() {
                        // Refused, so not stored: nothing in flight while
                        // this waits for its turn.
                        self.journal.call(move |j| j.not_creating(id)).await?;
                    }
                    info!(
                        id,
                        path = %shown,
                        video_id = video_id.as_deref().unwrap_or(""),
                        retry_after_s = retry_after.as_secs(),
                        "rate limited; waiting"
                    );
                    continue;
                }
                ChunkResult::Failed(e) => {
                    if e.is_ambiguous() && doubtful {
                        if let Some(o) = self.in_doubt(id, &shown, ranged, &e.to_string()).await? {
                            return Ok(o);
                        }
                    }
                    return self.failed(&row, e, generation, video_id.is_some()).await;
                }
                ChunkResult::Stalled(why) => {
                    self.metrics.error(ErrorClass::Retry);
                    if doubtful {
                        if let Some(o) = self.in_doubt(id, &shown, ranged, why).await? {
                            return Ok(o);
                        }
                    }
                    return self.retry_later(&row, why).await;
                }
                ChunkResult::Abandoned => {
                    info!(id, path = %shown, "shutting down: chunk in flight abandoned; it will resume");
                    if doubtful {
                        let why = "no reply before shutdown";
                        if let Some(o) = self.in_doubt(id, &shown, ranged, why).await? {
                            return Ok(o);
                        }
                    }
                    self.journal.call(move |j| j.release(id, None)).await?;
                    return Ok(Outcome::Released);
                }
            };
            if reply.is_some() {
                self.metrics.chunk_acked(range.len);
            }
            maybe_stored = false;
            if let Some(rate) = reply.as_ref().map(|r| r.rate) {
                self.pacer.observe(turn, &rate, false);
            }
            let got_id = reply.as_ref().and_then(|r| r.video_id.clone());
            let vid = match (video_id.clone(), got_id, reply.is_some()) {
                (Some(known), Some(got), _) if known != got => {
                    warn!(id, known = %known, got = %got, "the server answered with another videoId; keeping ours");
                    known
                }
                (Some(known), Some(_), _) | (Some(known), None, false) => known,
                (Some(_), None, true) => {
                    // A 2xx we cannot read (a proxy page?): not proof that
                    // the chunk was stored. Send it again; if it was, the
                    // overlap reply says so.
                    let e = ApiError::Ambiguous {
                        base: self.client.base_url().to_string(),
                        message: "a 2xx reply without a readable videoId".to_owned(),
                    };
                    return self.failed(&row, e, generation, true).await;
                }
                (None, Some(got), _) => got,
                (None, None, _) => {
                    // Accepted, maybe, by something that is not api.video
                    // answering properly. Sending again could duplicate the
                    // file or leave partial videos behind, without end.
                    let why = format!(
                        "in doubt: the server answered 2xx without a readable videoId; it may or may not hold this file. \
                         Check api.base_url and any proxy; check api.video for a video named {name:?}, then `ingestd retry {id}` if it is not there"
                    );
                    error!(id, path = %shown, "{why}");
                    self.journal.call(move |j| j.mark_failed(id, &why)).await?;
                    return Ok(Outcome::Failed);
                }
            };
            match source::check_chunk(&self.shares, &row, &file).await {
                Ok(()) => {}
                // What the server holds is no longer this file.
                Err(source::Stop::Gone(why)) => {
                    let why = format!("{why}; the upload to video {vid} was abandoned");
                    // The videoId first, so the abandoned video is counted
                    // as an orphan with its id.
                    let (v, at) = (vid.clone(), range.offset);
                    self.journal
                        .call(move |j| j.record_progress(id, &v, at))
                        .await?;
                    return self.gone(&row, &why).await;
                }
                // The server holds the whole file: finish it below.
                Err(_) if range.offset + range.len == size => {}
                Err(stop) => {
                    // The chunk was stored: record it before waiting.
                    let (v, done) = (vid.clone(), range.offset + range.len);
                    self.journal
                        .call(move |j| j.record_progress(id, &v, done))
                        .await?;
                    return self.stop(&row, stop).await;
                }
            }
            offset = range.offset + range.len;
            video_id = Some(vid.clone());
            if offset == size {
                let json = reply.and_then(|r| r.video).map(|v| v.to_string());
                let v = vid.clone();
                let note = doubt_note(row.sends_in_doubt, ranged);
                if let Some(note) = &note {
                    warn!(id, path = %shown, video_id = %vid, "{note}");
                }
                self.journal
                    .call(move |j| j.mark_done(id, Some(&v), json.as_deref(), note.as_deref()))
                    .await?;
                if reached {
                    self.server_reached(id).await?;
                }
                info!(id, path = %shown, video_id = %vid, size, "upload done");
                self.after_upload(id).await;
                return Ok(Outcome::Done { video_id: vid });
            }
            let v = vid.clone();
            self.journal
                .call(move |j| j.record_progress(id, &v, offset))
                .await?;
            if reached {
                self.server_reached(id).await?;
            }
            if last_log.elapsed() >= Duration::from_secs(5) || offset == range.len {
                last_log = Instant::now();
                info!(
                    id,
                    path = %shown,
                    video_id = %vid,
                    "uploaded {} of {} ({}%)",
                    bytesize::ByteSize(offset),
                    bytesize::ByteSize(size),
                    offset * 100 / size
                );
            }
        }
        // Reached only if the journal already counts every byte as
        // acknowledged (progress is never recorded at the full size, but a
        // journal edited by hand could say so): finish the row.
        let v = video_id.clone();
        self.journal
            .call(move |j| j.mark_done(id, v.as_deref(), None, None))
            .await?;
        Ok(Outcome::Done {
            video_id: video_id.unwrap_or_default(),
        })
    }

    /// Keeps, deletes or moves a file whose upload is done, as its watch
    /// folder says. A failure here loses nothing (the file stays where it
    /// is, done): it is logged, and the next reconcile scan tries again.
    async fn after_upload(&self, id: i64) {
        let row = match self.journal.call(move |j| j.get(id)).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                warn!(id, "after upload: cannot read the journal: {e}");
                return;
            }
        };
        let folders = self.watches.borrow().clone();
        let Some(watch) = crate::watch::folder_of(&folders, &row).cloned() else {
            return;
        };
        let json = match self.journal.call(move |j| j.video_json(id)).await {
            Ok(j) => j,
            Err(e) => {
                warn!(id, "after upload: cannot read the journal: {e}");
                None
            }
        };
        let path = show_path(&row.path());
        let done = tokio::task::spawn_blocking(move || {
            crate::watch::after_upload(&watch, &row, json.as_deref(), watch.sidecar)
        })
        .await;
        match done {
            Ok(Ok(outcome)) => info!(id, path = %path, "after upload: {outcome:?}"),
            Ok(Err(e)) => warn!(id, path = %path, "after upload: {e}; the next scan tries again"),
            Err(e) => warn!(id, path = %path, "after upload failed: {e}"),
        }
    }

    /// Ends the attempt as `stop` says.
    async fn stop(&self, row: &FileRow, stop: source::Stop) -> Result<Outcome, WorkerError> {
        let id = row.id;
        let shown = show_path(&row.path());
        match stop {
            source::Stop::Gone(why) => self.gone(row, &why).await,
            source::Stop::Away(why) => {
                warn!(id, path = %shown, offset = row.bytes_uploaded,
                    video_id = row.video_id.as_deref().unwrap_or(""),
                    "upload paused: {why}; it resumes where it stopped when the folder is back");
                let note = format!("waiting: {why}");
                self.journal
                    .call(move |j| j.release(id, Some(&note)))
                    .await?;
                Ok(Outcome::Waiting)
            }
            source::Stop::Retry(why) => self.retry_later(row, &why).await,
            source::Stop::Failed(why) => {
                error!(id, path = %shown, "{why}");
                self.journal.call(move |j| j.mark_failed(id, &why)).await?;
                Ok(Outcome::Failed)
            }
        }
    }

    async fn gone(&self, row: &FileRow, why: &str) -> Result<Outcome, WorkerError> {
        let id = row.id;
        warn!(id, path = %show_path(&row.path()), video_id = row.video_id.as_deref().unwrap_or(""), "abandoning the upload: {why}");
        let why = why.to_owned();
        self.journal.call(move |j| j.mark_gone(id, &why)).await?;
        Ok(Outcome::Gone)
    }

    /// A request that would have created the video ended without a known
    /// outcome: the server may have stored it, and nothing can ask it (a
    /// token cannot list videos). The journal counts it. A chunked file is
    /// sent again (at worst an unfinished video is left); a file sent in one
    /// request is sent again too, or, with `upload.in_doubt = "fail"`, marked
    /// failed for a person to check: the outcome then returned.
    async fn in_doubt(
        &self,
        id: i64,
        shown: &str,
        ranged: bool,
        why: &str,
    ) -> Result<Option<Outcome>, WorkerError> {
        if !ranged && self.in_doubt == InDoubt::Fail {
            let why = format!(
                "in doubt: the request that uploads this file in one piece ended without a reply \
                 ({why}), so api.video may already hold it (upload.in_doubt = \"fail\"). Check \
                 api.video for a video with this file's name; if it is not there, `ingestd retry {id}`"
            );
            error!(id, path = %shown, "{why}");
            self.journal
                .call(move |j| j.fail_in_doubt(id, &why))
                .await?;
            return Ok(Some(Outcome::Failed));
        }
        self.journal
            .call(move |j| j.count_send_in_doubt(id))
            .await?;
        warn!(id, path = %shown, ranged, "the request failed after it may have been stored ({why}); it will be sent again, which can leave a {} video on api.video", if ranged { "partial" } else { "duplicate" });
        Ok(None)
    }

    async fn retry_later(&self, row: &FileRow, why: &str) -> Result<Outcome, WorkerError> {
        self.outage.forget(row.id);
        self.schedule_retry(row, why, false).await
    }

    /// Schedules the next attempt after a retryable failure; `unreachable`:
    /// nothing got through to the server (see [`Outage`]).
    async fn schedule_retry(
        &self,
        row: &FileRow,
        why: &str,
        unreachable: bool,
    ) -> Result<Outcome, WorkerError> {
        let id = row.id;
        // `row` is as claimed; progress in this call resets the attempts and
        // may have brought a videoId, so read it back.
        let now_row = self.journal.call(move |j| j.get(id)).await?;
        let attempts = now_row
            .as_ref()
            .map_or(row.attempts, |r| r.attempts)
            .saturating_add(1);
        let video_id = now_row
            .and_then(|r| r.video_id)
            .or_else(|| row.video_id.clone())
            .unwrap_or_default();
        let mut delay = backoff_delay(attempts);
        if unreachable {
            delay = self.outage.unreachable(id, delay);
        }
        let at = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        warn!(id, path = %show_path(&row.path()), video_id, attempts, retry_in_ms = delay.as_millis() as u64, "upload attempt failed, will retry: {why}");
        let why = why.to_owned();
        self.journal
            .call(move |j| j.mark_retrying(id, attempts, at, &why))
            .await?;
        self.work.notify_waiters();
        Ok(Outcome::Retrying { attempts })
    }

    /// A request of file `id` got through: files waiting only because the
    /// server could not be reached are due now.
    async fn server_reached(&self, id: i64) -> Result<(), WorkerError> {
        let waiting = self.outage.reached(id);
        if waiting.is_empty() {
            return Ok(());
        }
        let moved = self
            .journal
            .call(move |j| j.make_due(&waiting, now_ms()))
            .await?;
        if moved > 0 {
            info!(
                files = moved,
                "the server can be reached again: the files waiting for it are due now"
            );
            self.work.notify_waiters();
        }
        Ok(())
    }

    async fn failed(
        &self,
        row: &FileRow,
        e: ApiError,
        generation: u64,
        has_video: bool,
    ) -> Result<Outcome, WorkerError> {
        let id = row.id;
        self.metrics.error(e.class());
        match e.class() {
            ErrorClass::Retry if matches!(e, ApiError::Connect { .. }) => {
                self.schedule_retry(row, &e.to_string(), true).await
            }
            ErrorClass::Retry => self.retry_later(row, &e.to_string()).await,
            ErrorClass::Token => {
                if self.gate.refuse(generation, e.to_string()) {
                    error!(
                        "UPLOADS PAUSED: {e}. Every file keeps its place. Fix it (a valid token in \
                         api.token, api.token_file or $CREDENTIALS_DIRECTORY/upload-token; the right \
                         api.base_url), then send SIGHUP or restart ingestd."
                    );
                }
                self.journal
                    .call(move |j| j.release(id, Some("paused: the upload token was refused")))
                    .await?;
                Ok(Outcome::Paused)
            }
            ErrorClass::Permanent if e.is_unknown_video() && has_video => {
                let why = format!(
                    "{e}: the partly uploaded video no longer exists on the server (deleted, or \
                     expired in the sandbox); `ingestd retry {id}` starts the upload over"
                );
                error!(id, path = %show_path(&row.path()), video_id = row.video_id.as_deref().unwrap_or(""), "upload failed permanently: {why}");
                self.journal
                    .call(move |j| j.mark_failed_restart(id, &why))
                    .await?;
                Ok(Outcome::Failed)
            }
            ErrorClass::Permanent => {
                let why = e.to_string();
                error!(id, path = %show_path(&row.path()), video_id = row.video_id.as_deref().unwrap_or(""), "upload failed permanently: {why}");
                self.journal.call(move |j| j.mark_failed(id, &why)).await?;
                Ok(Outcome::Failed)
            }
        }
    }

    /// Sends one chunk, streamed from the file, watching for stalls and shutdown.
    async fn send_chunk(
        &self,
        file: &mut tokio::fs::File,
        name: &str,
        range: ByteRange,
        ranged: bool,
        video_id: Option<&str>,
        cancel: &CancellationToken,
    ) -> (ChunkResult, bool) {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(range.offset)).await {
            let e = ApiError::Local(format!("cannot seek in the file: {e}"));
            return (ChunkResult::Failed(e), false);
        }
        let reader = match file.try_clone().await {
            Ok(f) => f.take(range.len),
            Err(e) => {
                let e = ApiError::Local(format!("cannot read the file: {e}"));
                return (ChunkResult::Failed(e), false);
            }
        };
        let progress = Arc::new(BodyProgress {
            sent: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            start: Instant::now(),
            throttled: std::sync::atomic::AtomicBool::new(false),
        });
        let throttle = self.throttle.clone();
        let p = progress.clone();
        let stream = ReaderStream::with_capacity(reader, READ_BUF).then(move |item| {
            let throttle = throttle.clone();
            let p = p.clone();
            async move {
                if let Ok(b) = &item {
                    p.throttled.store(true, Ordering::Relaxed);
                    throttle.take(b.len()).await;
                    p.throttled.store(false, Ordering::Relaxed);
                    p.touch(b.len());
                }
                item.map(|b: Bytes| b)
            }
        });
        let body = reqwest::Body::wrap_stream(stream);
        let send = self.client.send(name, range, ranged, video_id, body);
        tokio::pin!(send);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let shutdown = async {
            cancel.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::pin!(shutdown);
        let mut abandon_checked = false;
        let mut reply_deadline: Option<Instant> = None;
        let result = loop {
            tokio::select! {
                r = &mut send => {
                    break match r {
                        Ok(reply) => ChunkResult::Stored(reply),
                        Err(e) => ChunkResult::Failed(e),
                    };
                }
                _ = tick.tick() => {
                    let body_done = progress.sent.load(Ordering::Relaxed) >= range.len;
                    if body_done && progress.idle() > REPLY_TIMEOUT {
                        break ChunkResult::Stalled("no reply within 5 min of the last byte sent");
                    }
                    // A bandwidth-limit wait is not a stall.
                    if !body_done && !progress.throttled.load(Ordering::Relaxed) && progress.idle() > STALL_TIMEOUT {
                        break ChunkResult::Stalled("the connection stalled: no byte taken for 60 s");
                    }
                }
                _ = &mut shutdown, if !abandon_checked => {
                    // Abandoning mid-body is safe (the server stores only
                    // whole requests); once the body is out, the reply
                    // decides what the server holds: wait for it a while.
                    if progress.sent.load(Ordering::Relaxed) < range.len {
                        break ChunkResult::Abandoned;
                    }
                    abandon_checked = true;
                    reply_deadline = Some(Instant::now() + SHUTDOWN_REPLY_WAIT);
                }
                _ = async {
                    match reply_deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                } => break ChunkResult::Abandoned,
            }
        };
        // Until the last byte of the body was handed over, the server cannot
        // have stored the request (it stores whole requests only).
        (result, progress.sent.load(Ordering::Relaxed) >= range.len)
    }

    /// A worker: claims files and uploads them until cancelled, or, in the
    /// foreground (`batch`), until every file of the batch is finished or has
    /// failed [`FOREGROUND_ATTEMPTS`] times in this run.
    pub async fn worker(
        &self,
        batch: Option<Arc<Batch>>,
        slot: usize,
        cancel: CancellationToken,
    ) -> Result<(), WorkerError> {
        loop {
            // Retire when the concurrency was lowered below this slot.
            if cancel.is_cancelled() || slot >= *self.slots.borrow() {
                return Ok(());
            }
            if self.gate.state().refused.is_some() {
                if batch.is_some() {
                    // In the foreground there is nobody to replace the token.
                    return Ok(());
                }
                if !self.gate.wait_open(&cancel).await {
                    return Ok(());
                }
            }
            // Register interest before looking, so a notify between the
            // claim and the wait is not lost.
            let notified = self.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ids = batch.as_ref().map(|b| b.ids());
            let only = ids.clone();
            // In the foreground, a file of an unavailable folder is claimed
            // and leaves the batch; the daemon leaves it queued meanwhile.
            let away = match batch {
                Some(_) => Vec::new(),
                None => self.shares.away_roots(),
            };
            let claimed = self
                .journal
                .call(move |j| j.claim_next_skipping(now_ms(), BACKOFF_CAP, only.as_deref(), &away))
                .await?;
            if let Some(row) = claimed {
                let id = row.id;
                let outcome = match self.upload(row, &cancel).await {
                    Ok(o) => o,
                    // Someone else moved this row (the watch stage saw the
                    // file vanish, say): this file is no longer ours.
                    Err(WorkerError::Journal(e @ JournalError::WrongState { .. })) => {
                        warn!(id, "dropping this upload: {e}");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                self.metrics.outcome(&outcome);
                if let (Some(b), Outcome::Retrying { attempts }) = (&batch, &outcome) {
                    b.failed_once(id, *attempts);
                }
                if let (Some(b), Outcome::Waiting) = (&batch, &outcome) {
                    b.leave(id);
                }
                if matches!(
                    outcome,
                    Outcome::Done { .. } | Outcome::Failed | Outcome::Gone
                ) {
                    // A slot freed: another worker waiting on an idle journal may go.
                    self.work.notify_waiters();
                }
                continue;
            }
            let only = ids.clone();
            let (unfinished, next_retry) = self
                .journal
                .call(move |j| {
                    Ok((
                        j.unfinished(only.as_deref())?,
                        j.next_retry_at(only.as_deref())?,
                    ))
                })
                .await?;
            if batch.is_some() && unfinished == 0 {
                return Ok(());
            }
            // Nothing to claim now: sleep until a retry is due, new work is
            // signalled, or a while passes (another process may add work).
            let until_retry = next_retry
                .map(|at| Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)))
                .unwrap_or(Duration::from_secs(2));
            let nap = until_retry
                .min(Duration::from_secs(2))
                .max(Duration::from_millis(20));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(nap) => {}
                _ = cancel.cancelled() => return Ok(()),
            }
        }
    }
}

/// The files of a foreground run (`upload`, `run --once`). A file that fails
/// [`FOREGROUND_ATTEMPTS`] times in a row in this run leaves the batch, staying
/// `retrying` in the journal for the next run, so the command always ends.
#[derive(Debug)]
pub struct Batch {
    ids: Mutex<Vec<i64>>,
    failures: Mutex<std::collections::HashMap<i64, u32>>,
}

impl Batch {
    pub fn new(ids: Vec<i64>) -> Batch {
        Batch {
            ids: Mutex::new(ids),
            failures: Mutex::new(Default::default()),
        }
    }

    fn ids(&self) -> Vec<i64> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `id` waits for its folder: it stays queued for the next run.
    fn leave(&self, id: i64) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| *x != id);
    }

    /// Counts a failure of `id` in this run. `journal_attempts` (failures
    /// since the file's last progress, across runs) caps the count, so
    /// progress starts it over: only consecutive failures end a file's run.
    fn failed_once(&self, id: i64, journal_attempts: u32) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(id).or_default();
        *n = (*n + 1).min(journal_attempts);
        if *n >= FOREGROUND_ATTEMPTS {
            warn!(
                id,
                attempts = *n,
                "giving up on this file for this run; it stays queued for the next"
            );
            self.ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|x| *x != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn plan(size: u64, chunk: u64) -> Vec<String> {
        chunk_plan(size, chunk).map(|r| r.content_range()).collect()
    }

    #[test]
    fn plan_with_exact_multiple_has_no_empty_chunk() {
        assert_eq!(
            plan(10 * MIB, 5 * MIB),
            vec![
                "bytes 0-5242879/10485760",
                "bytes 5242880-10485759/10485760"
            ]
        );
    }

    #[test]
    fn plan_last_chunk_of_one_byte() {
        let p: Vec<ByteRange> = chunk_plan(5 * MIB + 1, 5 * MIB).collect();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].content_range(), "bytes 5242880-5242880/5242881");
        assert_eq!(p[1].len, 1);
    }

    #[test]
    fn plan_file_of_exactly_one_chunk_goes_in_two_requests() {
        // The first request never completes the video, so a lost reply
        // cannot turn into a duplicate.
        let p: Vec<ByteRange> = chunk_plan(8 * MIB, 8 * MIB).collect();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].len, p[1].len), (5 * MIB, 3 * MIB));
        assert!(p[1].is_last());
        assert!(is_chunked(8 * MIB, 8 * MIB));
    }

    #[test]
    fn plan_small_files_go_in_one_request() {
        for size in [1, 5 * MIB - 1, 5 * MIB] {
            let p: Vec<ByteRange> = chunk_plan(size, 8 * MIB).collect();
            assert_eq!(p.len(), 1, "{size}");
            assert!(!is_chunked(size, 8 * MIB), "{size}");
        }
        let p: Vec<ByteRange> = chunk_plan(5 * MIB + 1, 8 * MIB).collect();
        assert_eq!((p[0].len, p[1].len), (5 * MIB, 1));
    }

    #[test]
    fn plan_covers_every_byte_once() {
        for (size, chunk) in [
            (1, 5),
            (99, 10),
            (100, 10),
            (101, 10),
            (40 * MIB, 8 * MIB),
            (6 * MIB, 8 * MIB),
            (8 * MIB, 8 * MIB),
        ] {
            let p: Vec<ByteRange> = chunk_plan(size, chunk).collect();
            let mut next = 0;
            for r in &p {
                assert_eq!(r.offset, next);
                assert!(r.len > 0 && r.len <= chunk.max(5 * MIB));
                next += r.len;
            }
            assert_eq!(next, size);
            assert_eq!(
                chunk_at(p.last().unwrap().offset, size, chunk),
                *p.last().unwrap()
            );
        }
        assert_eq!(chunk_plan(0, 10).count(), 0);
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        for attempt in 1..40 {
            let d = backoff_delay(attempt);
            assert!(d >= Duration::from_millis(100));
            assert!(d <= BACKOFF_CAP);
        }
        let early_max = (0..200).map(|_| backoff_delay(1)).max().unwrap();
        assert!(early_max <= Duration::from_secs(1));
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| backoff_delay(10)).collect();
        assert!(distinct.len() > 10, "full jitter spreads the delays");
    }

    #[tokio::test]
    async fn pacer_blocks_until_the_window_resets() {
        let p = Pacer::default();
        let cancel = CancellationToken::new();
        let first = p.wait_turn(&cancel).await;
        p.observe(
            first,
            &RateInfo {
                limit: Some(2),
                remaining: Some(1),
                retry_after: Some(1),
            },
            false,
        );
        let t = Instant::now();
        p.wait_turn(&cancel).await; // the one remaining request
        assert!(t.elapsed() < Duration::from_millis(200));
        p.wait_turn(&cancel).await; // none left: waits for the reset
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }

    fn rate(remaining: u64, retry_after: u64) -> RateInfo {
        RateInfo {
            limit: Some(40),
            remaining: Some(remaining),
            retry_after: Some(retry_after),
        }
    }

    #[tokio::test]
    async fn pacer_counts_requests_started_after_the_one_answered() {
        let p = Pacer::default();
        let cancel = CancellationToken::new();
        let a = p.wait_turn(&cancel).await;
        let b = p.wait_turn(&cancel).await;
        let c = p.wait_turn(&cancel).await;
        // a was counted with 2 left; b and c started after it: none left.
        p.observe(a, &rate(2, 1), false);
        // b's reply, late and out of order, cannot raise the count again.
        p.observe(c, &rate(0, 1), false);
        p.observe(b, &rate(1, 1), false);
        let t = Instant::now();
        p.wait_turn(&cancel).await;
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn pacer_ignores_replies_from_a_window_that_ended() {
        let p = Pacer::default();
        let cancel = CancellationToken::new();
        let old = p.wait_turn(&cancel).await;
        let first = p.wait_turn(&cancel).await;
        p.observe(first, &rate(5, 0), false); // the window ends now
        let new = p.wait_turn(&cancel).await;
        assert_ne!(old.window, new.window);
        // The old request's reply says its window had nothing left.
        p.observe(old, &rate(0, 1), false);
        let t = Instant::now();
        p.wait_turn(&cancel).await;
        assert!(t.elapsed() < Duration::from_millis(200));
        // A 429 is heeded whatever its window.
        p.observe(old, &rate(0, 1), true);
        let t = Instant::now();
        p.wait_turn(&cancel).await;
        assert!(t.elapsed() >= Duration::from_millis(900));
    }

    #[tokio::test]
    async fn pacer_turn_is_given_at_once_when_cancelled() {
        let p = Pacer::default();
        let cancel = CancellationToken::new();
        let a = p.wait_turn(&cancel).await;
        p.observe(a, &rate(0, 60), false);
        cancel.cancel();
        let t = Instant::now();
        p.wait_turn(&cancel).await;
        assert!(t.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn outage_has_one_probe_and_a_success_wakes_the_others() {
        let o = Outage::default();
        let long = Duration::from_secs(60);
        assert_eq!(o.unreachable(1, long), OUTAGE_PROBE);
        assert_eq!(o.unreachable(2, long), long);
        let short = Duration::from_secs(2);
        assert_eq!(o.unreachable(3, short), short);
        // 3 failed otherwise since: its backoff is its own.
        o.forget(3);
        assert_eq!(o.reached(2), vec![1]);
        assert!(o.reached(1).is_empty());
        // A probe whose time passed (its file went away) is replaced.
        assert_eq!(
            o.unreachable(4, Duration::from_millis(1)),
            Duration::from_millis(1)
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(o.unreachable(5, long), OUTAGE_PROBE);
    }

    #[test]
    fn gate_ignores_stale_refusals() {
        let g = TokenGate::default();
        let generation = g.state().generation;
        g.replaced();
        assert!(!g.refuse(generation, "old token".into()));
        assert!(g.state().refused.is_none());
        assert!(g.refuse(generation + 1, "new token".into()));
        assert!(g.state().refused.is_some());
        g.replaced();
        assert!(g.state().refused.is_none());
    }

    #[tokio::test]
    async fn throttle_limits_the_rate() {
        let t = Throttle::new(4 * MIB);
        let start = Instant::now();
        for _ in 0..8 {
            t.take(256 * 1024).await; // 2 MiB in all at 4 MiB/s
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        let t = Throttle::new(0);
        let start = Instant::now();
        t.take(usize::MAX / 2).await;
        assert!(start.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn multipart_names_are_made_safe() {
        use std::ffi::OsStr;
        let p = Path::new(OsStr::from_bytes(b"/x/caf\xe9\nclip.mp4"));
        assert_eq!(display_name(p), "caf\u{fffd} clip.mp4");
    }
}
