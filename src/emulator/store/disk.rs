//! File work of the store, run off the async runtime: moving and hashing a
//! whole file, writing a byte range in place with a running SHA-256, and
//! assembling parts. It knows files, not the upload rules. Imports nothing
//! from the product.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::emulator::catalogue::{self as cat, Problem};

const COPY_BUF: usize = 1 << 20;

/// Running SHA-256 over the contiguous prefix of a byte-range upload.
#[derive(Clone, Debug, Default)]
pub(super) struct HashCursor {
    hasher: Sha256,
    upto: u64,
}

pub(super) fn io_problem(e: &io::Error) -> Problem {
    tracing::error!(error = %e, "emulator storage failed");
    Problem::new(cat::SERVER_ERROR).detail(e.to_string())
}

pub(super) async fn create_dir(dir: &Path) -> Result<(), Problem> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io_problem(&e))
}

/// Runs blocking file work off the async runtime.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(io_problem(&e)),
        Err(e) => Err(io_problem(&io::Error::other(e))),
    }
}

fn hex(digest: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(super) fn hash_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Copies `src` into `dst` at `offset`, extending the running hash when the
/// range continues the hashed prefix.
pub(super) fn write_range(
    src: &Path,
    dst: &Path,
    offset: u64,
    mut cursor: HashCursor,
) -> io::Result<HashCursor> {
    let mut input = File::open(src)?;
    let mut output = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dst)?;
    output.seek(SeekFrom::Start(offset))?;
    let hashing = cursor.upto == offset;
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        output.write_all(&buf[..n])?;
        if hashing {
            cursor.hasher.update(&buf[..n]);
            cursor.upto += n as u64;
        }
    }
    output.flush()?;
    Ok(cursor)
}

/// Hashes the rest of a complete byte-range upload.
pub(super) fn finish_hash(path: &Path, mut cursor: HashCursor, total: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(cursor.upto))?;
    let mut rest = file.take(total - cursor.upto.min(total));
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            break;
        }
        cursor.hasher.update(&buf[..n]);
        cursor.upto += n as u64;
    }
    if cursor.upto != total {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("video file holds {} bytes, expected {total}", cursor.upto),
        ));
    }
    Ok(hex(&cursor.hasher.finalize()))
}

/// Concatenates parts `1..=n` of `dir` into `dst`; returns the SHA-256 and the
/// size. The parts are removed only once the file is complete.
pub(super) fn assemble(dir: &Path, dst: &Path, n: u64) -> io::Result<(String, u64)> {
    let mut output = File::create(dst)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; COPY_BUF];
    for part in 1..=n {
        let mut input = File::open(dir.join(part.to_string()))?;
        loop {
            let k = input.read(&mut buf)?;
            if k == 0 {
                break;
            }
            output.write_all(&buf[..k])?;
            hasher.update(&buf[..k]);
            size += k as u64;
        }
    }
    output.flush()?;
    std::fs::remove_dir_all(dir)?;
    Ok((hex(&hasher.finalize()), size))
}
