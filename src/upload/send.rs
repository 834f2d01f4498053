//! Sending one chunk: the body streamed from the file (read in large
//! blocks on a thread of its own, see `read`) through the throttle,
//! watched for stalls and for shutdown. It reports what happened
//! ([`ChunkResult`]) and decides nothing about the file (see `attempt`).

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::decide::Attempt;
use super::digest::Feed;
use super::read::{self, Buffers};
use super::Uploader;
use crate::apivideo::{ApiError, ByteRange, Reply};

/// Bytes per body frame handed to the connection (a slice of a block read,
/// not a copy): fine enough for the bandwidth limit, and for the stall
/// watch, which sees progress a frame at a time.
const FRAME: usize = 256 * 1024;
/// No byte of a chunk body taken by the connection for this long: a stall.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// After the last byte is sent, how long the server may take to answer
/// (it may assemble the whole file before answering the last chunk).
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// On shutdown, how long a chunk in flight may take to finish before it is abandoned.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// On shutdown, how much longer to wait for the reply to a chunk whose body
/// was sent in full (abandoning it would leave its fate unknown).
const SHUTDOWN_REPLY_WAIT: Duration = Duration::from_secs(20);

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
pub(super) fn display_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
        .unwrap_or_else(|| "upload".to_owned());
    name.replace(['\r', '\n'], " ")
}

/// A block read, in frames of at most [`FRAME`] bytes.
fn frames(block: std::io::Result<Bytes>) -> Vec<std::io::Result<Bytes>> {
    match block {
        Ok(mut b) => {
            let mut out = Vec::with_capacity(b.len().div_ceil(FRAME));
            while b.len() > FRAME {
                out.push(Ok(b.split_to(FRAME)));
            }
            out.push(Ok(b));
            out
        }
        Err(e) => vec![Err(e)],
    }
}

pub(crate) enum ChunkResult {
    /// A 2xx reply (not yet proof of storage: see its videoId).
    Stored(Reply),
    Failed(ApiError),
    /// No progress for too long; the reason says which wait ran out.
    Stalled(&'static str),
    Abandoned,
}

impl Uploader {
    /// Sends one chunk of the attempt `at` (its file's name, videoId and
    /// whether it goes in ranges), streamed from the file, watching for
    /// stalls and shutdown; each block read (into one of `buffers`) also
    /// goes to `feed` (the chunk's hash).
    pub(super) async fn send_chunk(
        &self,
        file: &tokio::fs::File,
        at: &Attempt,
        range: ByteRange,
        feed: Option<Arc<Feed>>,
        buffers: &Arc<Buffers>,
        cancel: &CancellationToken,
    ) -> (ChunkResult, bool) {
        // A descriptor of its own for the chunk's reader thread (`dup`
        // never blocks): the same open file, so the same file's bytes.
        let reader = match file.as_fd().try_clone_to_owned() {
            Ok(fd) => std::fs::File::from(fd),
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
        let stream = read::blocks(reader, range.offset, range.len, buffers.clone())
            .then(move |block| {
                let hash = feed.as_ref().and_then(|f| f.sender());
                async move {
                    if let (Ok(b), Some(hash)) = (&block, hash) {
                        // The same bytes, not a copy. A hash no longer
                        // wanted drops the block: what it misses is read
                        // from the file if the chunk turns out stored.
                        let _ = hash.send(b.clone()).await;
                    }
                    block
                }
            })
            .flat_map(|block| futures_util::stream::iter(frames(block)))
            .then(move |frame| {
                let throttle = throttle.clone();
                let p = p.clone();
                async move {
                    if let Ok(b) = &frame {
                        p.throttled.store(true, Ordering::Relaxed);
                        throttle.take(b.len()).await;
                        p.throttled.store(false, Ordering::Relaxed);
                        p.touch(b.len());
                    }
                    frame
                }
            });
        let body = reqwest::Body::wrap_stream(stream);
        let send = self
            .client
            .send(&at.name, range, at.ranged, at.video_id.as_deref(), body);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_names_are_made_safe() {
        use std::ffi::OsStr;
        let p = Path::new(OsStr::from_bytes(b"/x/caf\xe9\nclip.mp4"));
        assert_eq!(display_name(p), "caf\u{fffd} clip.mp4");
    }
}
