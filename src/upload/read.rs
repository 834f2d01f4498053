//! A chunk's bytes, read from the file for its body. One blocking thread
//! per chunk reads them with positional reads in blocks of [`BLOCK`] and
//! hands each to the request through a small bounded queue: one hop
//! between threads per MiB, where reading through `tokio::fs` costs two per
//! frame (each read a trip to the blocking pool and back).
//!
//! A block is read into a buffer of the attempt's [`Buffers`] and becomes
//! the body's `Bytes` as it is (no copy); once the request and the hash are
//! done with it, the buffer goes back for the next block. Fresh memory for
//! every block would be handed back to the system and faulted in again,
//! page by page, which costs about as much as the read itself. Memory stays
//! bounded: every queue a block waits in is.
//!
//! The thread ends when the chunk is read, when its body is dropped (the
//! request ended or was abandoned), or at the first read error, which the
//! body carries to the request.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

/// Bytes per read: large enough that the hop to the request and the read
/// call vanish beside the copy, small enough to keep memory flat.
pub(super) const BLOCK: usize = 1024 * 1024;
/// Blocks read ahead of the request: the disk and the network overlap, and
/// a short pause of either does not stall the other.
const BLOCKS_AHEAD: usize = 2;
/// Idle buffers an attempt keeps: as many as its blocks in flight at once
/// (read ahead, in the connection, queued for the hash), so that in a
/// steady upload none is allocated again.
const BUFFERS_KEPT: usize = 10;

/// The buffers of one attempt's blocks.
#[derive(Default)]
pub(super) struct Buffers {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl Buffers {
    /// An idle buffer, or a new one (zeroed by the system, not by us).
    fn take(&self) -> Vec<u8> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        idle.unwrap_or_else(|| vec![0; BLOCK])
    }

    fn give_back(&self, buf: Vec<u8>) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < BUFFERS_KEPT {
                idle.push(buf);
            }
        }
    }
}

/// A block read: the bytes `buf[..len]`, its buffer given back when the
/// last `Bytes` of it goes.
struct Block {
    buf: Vec<u8>,
    len: usize,
    buffers: Arc<Buffers>,
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.buffers.give_back(std::mem::take(&mut self.buf));
    }
}

/// The bytes `[offset, offset + len)` of `file`, in blocks of at most
/// [`BLOCK`], read on a blocking thread of their own. A file that ends
/// before `offset + len` yields an `UnexpectedEof` error.
pub(super) fn blocks(
    file: std::fs::File,
    offset: u64,
    len: u64,
    buffers: Arc<Buffers>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel(BLOCKS_AHEAD);
    // Detached: it ends on its own (see the module's comment).
    drop(tokio::task::spawn_blocking(move || {
        read_blocks(&file, offset, len, &buffers, &tx)
    }));
    futures_util::stream::unfold(rx, |mut rx| async move {
        let block = rx.recv().await?;
        Some((block, rx))
    })
}

fn read_blocks(
    file: &std::fs::File,
    offset: u64,
    len: u64,
    buffers: &Arc<Buffers>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) {
    let end = offset.saturating_add(len);
    let mut at = offset;
    while at < end {
        let want = usize::try_from(end - at).map_or(BLOCK, |n| n.min(BLOCK));
        let block = match read_block(file, at, want, buffers) {
            Ok(block) => block,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        at += block.len() as u64;
        if tx.blocking_send(Ok(block)).is_err() {
            // The body is no longer wanted.
            return;
        }
    }
}

/// Up to `want` (at most [`BLOCK`]) bytes of `file` at `at`; fewer only at
/// a short read.
fn read_block(
    file: &std::fs::File,
    at: u64,
    want: usize,
    buffers: &Arc<Buffers>,
) -> io::Result<Bytes> {
    let mut buf = buffers.take();
    loop {
        match file.read_at(&mut buf[..want], at) {
            Ok(0) => {
                buffers.give_back(buf);
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before its journaled size",
                ));
            }
            Ok(len) => {
                return Ok(Bytes::from_owner(Block {
                    buf,
                    len,
                    buffers: buffers.clone(),
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                buffers.give_back(buf);
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::io::Write;

    fn temp_with(bytes: &[u8]) -> (tempfile::NamedTempFile, std::fs::File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = std::fs::File::open(f.path()).unwrap();
        (f, file)
    }

    fn data(n: usize) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(3);
        (0..n).map(|_| rng.u8(..)).collect()
    }

    #[tokio::test]
    async fn a_range_comes_in_blocks_with_every_byte_in_order() {
        let bytes = data(3 * BLOCK + 4321);
        let (_t, file) = temp_with(&bytes);
        let offset = 1000u64;
        let len = (2 * BLOCK + 77) as u64;
        let got: Vec<Bytes> = blocks(file, offset, len, Arc::default())
            .map(|b| b.unwrap())
            .collect()
            .await;
        assert!(got.iter().all(|b| b.len() <= BLOCK && !b.is_empty()));
        assert_eq!(got.len(), 3);
        let joined: Vec<u8> = got.concat();
        assert_eq!(joined, &bytes[offset as usize..][..len as usize]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_is_an_error_after_its_bytes() {
        let bytes = data(BLOCK + 10);
        let (_t, file) = temp_with(&bytes);
        let got: Vec<io::Result<Bytes>> = blocks(file, 0, (BLOCK + 11) as u64, Arc::default())
            .collect()
            .await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap().len(), BLOCK);
        assert_eq!(got[1].as_ref().unwrap().len(), 10);
        assert_eq!(
            got[2].as_ref().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[tokio::test]
    async fn buffers_are_used_again_once_the_body_is_done_with_them() {
        let bytes = data(4 * BLOCK);
        let (_t, file) = temp_with(&bytes);
        let buffers: Arc<Buffers> = Arc::default();
        let read = |file: &std::fs::File| {
            blocks(
                file.try_clone().unwrap(),
                0,
                bytes.len() as u64,
                buffers.clone(),
            )
            .map(|b| b.unwrap())
            .collect::<Vec<Bytes>>()
        };
        let first = read(&file).await;
        let addresses: Vec<usize> = first.iter().map(|b| b.as_ptr() as usize).collect();
        drop(first);
        assert_eq!(buffers.idle.lock().unwrap().len(), 4);
        let second = read(&file).await;
        assert_eq!(second.concat(), bytes);
        for b in &second {
            assert!(addresses.contains(&(b.as_ptr() as usize)), "a new buffer");
        }
        assert!(buffers.idle.lock().unwrap().is_empty());
    }

    #[test]
    fn a_reader_whose_body_was_dropped_ends() {
        let bytes = data(8 * BLOCK);
        let (_t, file) = temp_with(&bytes);
        let (tx, mut rx) = mpsc::channel(BLOCKS_AHEAD);
        let len = bytes.len() as u64;
        let buffers = Arc::default();
        let reader = std::thread::spawn(move || read_blocks(&file, 0, len, &buffers, &tx));
        assert_eq!(rx.blocking_recv().unwrap().unwrap().len(), BLOCK);
        // It is blocked on the full queue (8 blocks, 2 queued) until the
        // body goes.
        drop(rx);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !reader.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader still runs"
            );
            std::thread::yield_now();
        }
    }
}
