//! The SHA-256 of a file, computed from the bytes its upload reads anyway.
//! Each chunk's blocks go, as they are read, to a hashing thread of
//! their own (so the hash runs beside the network, not in front of it),
//! and a chunk's part of the hash counts only once the server has stored
//! the chunk: a chunk sent again after a failure is hashed once. What no
//! body carried (the prefix a resumed upload does not send again, a
//! duplicate check) is read from the same descriptor in 1 MiB blocks on a
//! blocking thread. Memory stays bounded: a few blocks queued, one block
//! per read.
//!
//! Hashing never decides an upload: when the hash cannot be kept (a read
//! error), the file is read whole once more at its end, and if even that
//! fails it is done without a SHA-256 (with a warning).

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::display::show_path;
use crate::journal::FileRow;

/// The reads that hash what no chunk body carries go in blocks this large.
const BLOCK: usize = 1024 * 1024;
/// Blocks read (1 MiB each) queued for a chunk's hashing thread: bounded
/// memory, and slack enough that the network does not wait on the hash.
const BLOCKS_QUEUED: usize = 4;

/// Why a hash that reads the file did not finish.
#[derive(Debug)]
pub(super) enum HashError {
    Io(io::Error),
    /// Shutting down: the attempt gives its file back.
    Cancelled,
}

/// The SHA-256 of a file's bytes `[0, at)`.
#[derive(Clone)]
pub(super) struct Running {
    hasher: Sha256,
    at: u64,
}

impl Running {
    /// Nothing hashed yet.
    pub(super) fn new() -> Running {
        Running {
            hasher: Sha256::new(),
            at: 0,
        }
    }

    /// How far the hash has read.
    pub(super) fn at(&self) -> u64 {
        self.at
    }

    /// The digest, lowercase hex.
    pub(super) fn hex(self) -> String {
        crate::display::hex(&self.hasher.finalize())
    }

    /// A tap hashing the body of the chunk `[offset, offset + len)` on its
    /// own thread, from where this hash stands; `None` when the hash is not
    /// at `offset` (it is already past it: nothing to add).
    pub(super) fn tap(&self, offset: u64, len: u64) -> Option<Tap> {
        if offset != self.at {
            return None;
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(BLOCKS_QUEUED);
        let mut hasher = self.hasher.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            let mut n = 0u64;
            while n < len {
                let Some(frame) = rx.blocking_recv() else {
                    break;
                };
                hasher.update(&frame);
                n += frame.len() as u64;
            }
            (hasher, n)
        });
        Some(Tap {
            feed: Arc::new(Feed(Mutex::new(Some(tx)))),
            hashed,
            offset,
        })
    }

    /// After the chunk ending at `end` was stored: takes in what its tap
    /// hashed, then reads whatever of the chunk the tap did not see (a body
    /// cut short by an early reply, a chunk sent without a tap).
    pub(super) async fn stored(
        mut self,
        tap: Option<Tap>,
        file: &tokio::fs::File,
        end: u64,
    ) -> Result<Running, HashError> {
        if let Some(mut tap) = tap {
            tap.feed.close();
            // It only hashes what it was given, and it was given its last
            // frame: this wait is short.
            if let Ok((hasher, n)) = (&mut tap.hashed).await {
                if tap.offset == self.at {
                    self.hasher = hasher;
                    self.at += n;
                }
            }
        }
        self.read_to(file, end, None).await
    }

    /// Hashes the file's bytes `[at, end)` from the descriptor `file` (its
    /// position untouched), on a blocking thread, stopping early when
    /// `cancel` fires. A file shorter than `end` is `UnexpectedEof`.
    pub(super) async fn read_to(
        self,
        file: &tokio::fs::File,
        end: u64,
        cancel: Option<&CancellationToken>,
    ) -> Result<Running, HashError> {
        if self.at >= end {
            return Ok(self);
        }
        let std_file = file
            .try_clone()
            .await
            .map_err(HashError::Io)?
            .into_std()
            .await;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let mut running = self;
        let mut task = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; BLOCK];
            while running.at < end {
                if stopped.load(Ordering::Relaxed) {
                    return Err(HashError::Cancelled);
                }
                let want = usize::try_from(end - running.at).map_or(BLOCK, |n| n.min(BLOCK));
                let n = match std_file.read_at(&mut buf[..want], running.at) {
                    Ok(0) => {
                        return Err(HashError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the file ended before its journaled size",
                        )))
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(HashError::Io(e)),
                };
                running.hasher.update(&buf[..n]);
                running.at += n as u64;
            }
            Ok(running)
        });
        let joined = match cancel {
            Some(cancel) => tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(HashError::Cancelled);
                }
                r = &mut task => r,
            },
            None => task.await,
        };
        joined.map_err(|e| HashError::Io(io::Error::other(e.to_string())))?
    }
}

/// Where a chunk body's frames go to be hashed.
pub(crate) struct Feed(Mutex<Option<mpsc::Sender<Bytes>>>);

impl Feed {
    /// The way to the hashing thread, while the chunk's hash is still
    /// wanted.
    pub(super) fn sender(&self) -> Option<mpsc::Sender<Bytes>> {
        self.0.lock().ok()?.clone()
    }

    /// No more frames: the hashing thread ends once it has hashed those
    /// already queued.
    fn close(&self) {
        if let Ok(mut tx) = self.0.lock() {
            tx.take();
        }
    }
}

/// The hashing of one chunk's body, started from the hash of the bytes
/// before it.
pub(super) struct Tap {
    feed: Arc<Feed>,
    hashed: JoinHandle<(Sha256, u64)>,
    offset: u64,
}

impl Tap {
    pub(super) fn feed(&self) -> Arc<Feed> {
        self.feed.clone()
    }
}

impl Drop for Tap {
    /// A chunk not stored: its hash is thrown away, and its thread ends
    /// even if the request still holds the body.
    fn drop(&mut self) {
        self.feed.close();
    }
}

/// The hash an attempt starts from: nothing, or, for a resumed upload, the
/// prefix `[0, offset)` already sent, read again. `None` when it cannot be
/// read (the file is then read whole at the end).
pub(super) async fn resumed(
    row: &FileRow,
    file: &tokio::fs::File,
    offset: u64,
    cancel: &CancellationToken,
) -> Result<Option<Running>, HashError> {
    if offset == 0 {
        return Ok(Some(Running::new()));
    }
    info!(id = row.id, path = %show_path(&row.path()), offset, "reading again the bytes already sent, for the file's SHA-256");
    match Running::new().read_to(file, offset, Some(cancel)).await {
        Ok(r) => Ok(Some(r)),
        Err(HashError::Cancelled) => Err(HashError::Cancelled),
        Err(HashError::Io(e)) => {
            lost(row, &e);
            Ok(None)
        }
    }
}

/// After the chunk ending at `end` was stored: the hash taken up to `end`,
/// or `None` (with a warning) when it could not be kept.
pub(super) async fn after_chunk(
    row: &FileRow,
    digest: Option<Running>,
    tap: Option<Tap>,
    file: &tokio::fs::File,
    end: u64,
) -> Option<Running> {
    match digest?.stored(tap, file, end).await {
        Ok(r) => Some(r),
        Err(HashError::Io(e)) => {
            lost(row, &e);
            None
        }
        Err(HashError::Cancelled) => None,
    }
}

/// The SHA-256 of the whole file, once its last chunk is stored: the
/// running hash, or, when it was lost, the file read whole again. `None`
/// (with a warning) when even that fails: the file is done without one.
pub(super) async fn finish(
    row: &FileRow,
    digest: Option<Running>,
    file: &tokio::fs::File,
    cancel: &CancellationToken,
) -> Option<String> {
    let size = row.identity.size;
    if let Some(d) = digest.filter(|d| d.at() == size) {
        return Some(d.hex());
    }
    match Running::new().read_to(file, size, Some(cancel)).await {
        Ok(d) => Some(d.hex()),
        Err(e) => {
            warn!(id = row.id, path = %show_path(&row.path()), "the file's SHA-256 could not be computed ({}); it is recorded done without one (its sidecar, if any, hashes it)",
                match &e { HashError::Io(e) => e.to_string(), HashError::Cancelled => "shutting down".to_owned() });
            None
        }
    }
}

fn lost(row: &FileRow, e: &io::Error) {
    warn!(id = row.id, path = %show_path(&row.path()), "cannot read the file for its SHA-256 ({e}); it is read whole again once the upload is done");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn hex_of(bytes: &[u8]) -> String {
        crate::display::hex(&Sha256::digest(bytes))
    }

    fn temp_with(bytes: &[u8]) -> (tempfile::NamedTempFile, tokio::fs::File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = tokio::fs::File::from_std(std::fs::File::open(f.path()).unwrap());
        (f, file)
    }

    fn data(n: usize) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..n).map(|_| rng.u8(..)).collect()
    }

    async fn feed(tap: &Tap, bytes: &[u8]) {
        for frame in bytes.chunks(1000) {
            let tx = tap.feed().sender().unwrap();
            tx.send(Bytes::copy_from_slice(frame)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn chunks_hashed_by_their_taps_make_the_whole_hash() {
        let bytes = data(10_000);
        let (_t, file) = temp_with(&bytes);
        let mut d = Running::new();
        for (i, chunk) in bytes.chunks(3000).enumerate() {
            let offset = (i * 3000) as u64;
            let end = offset + chunk.len() as u64;
            // A first send of the chunk fails half-way: its hash is dropped.
            let failed = d.tap(offset, chunk.len() as u64).unwrap();
            feed(&failed, &chunk[..chunk.len() / 2]).await;
            drop(failed);
            let tap = d.tap(offset, chunk.len() as u64).unwrap();
            feed(&tap, chunk).await;
            d = d.stored(Some(tap), &file, end).await.unwrap();
            assert_eq!(d.at(), end);
        }
        assert_eq!(d.hex(), hex_of(&bytes));
    }

    #[tokio::test]
    async fn what_a_tap_did_not_see_is_read_from_the_file() {
        let bytes = data(5000);
        let (_t, file) = temp_with(&bytes);
        let tap = Running::new().tap(0, 5000).unwrap();
        // A body cut short by an early reply.
        feed(&tap, &bytes[..1234]).await;
        let d = Running::new().stored(Some(tap), &file, 5000).await.unwrap();
        assert_eq!(d.hex(), hex_of(&bytes));
        // No tap at all: the chunk is read.
        let d = Running::new().stored(None, &file, 5000).await.unwrap();
        assert_eq!(d.hex(), hex_of(&bytes));
    }

    #[tokio::test]
    async fn a_prefix_is_read_in_blocks_and_a_short_file_is_an_error() {
        let bytes = data(2 * BLOCK + 17);
        let (_t, file) = temp_with(&bytes);
        let d = Running::new()
            .read_to(&file, BLOCK as u64 + 5, None)
            .await
            .unwrap();
        assert_eq!(d.at(), BLOCK as u64 + 5);
        // A hash already past a chunk's offset needs no tap.
        assert!(d.tap(0, 10).is_none());
        let d = d.read_to(&file, bytes.len() as u64, None).await.unwrap();
        assert_eq!(d.hex(), hex_of(&bytes));
        let short = Running::new()
            .read_to(&file, bytes.len() as u64 + 1, None)
            .await;
        assert!(
            matches!(&short, Err(HashError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{short:?}",
            short = short.as_ref().map(|_| ())
        );
        let cancel = CancellationToken::new();
        cancel.cancel();
        let r = Running::new()
            .read_to(&file, bytes.len() as u64, Some(&cancel))
            .await;
        assert!(matches!(r, Err(HashError::Cancelled)));
    }
}
