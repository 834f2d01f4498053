//! The row types (`FileState`, `FileIdentity`, `FileRow` and the results of
//! journaling) and their mapping to and from the journal's columns. It must not run
//! statements: the queries and transitions that use these types live beside it.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use super::sql::{DbError, SqlRow};
use crate::sample::Sample;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Seen, but still changing (or not yet observed long enough).
    Settling,
    /// Ready, waiting for a worker.
    Queued,
    /// Claimed by a worker; found at start-up, it is resumed.
    Uploading,
    /// A retryable error happened; waits for `next_attempt_at`.
    Retrying,
    /// Uploaded completely; never uploaded again.
    Done,
    /// A permanent error; `ingestd retry` puts it back in the queue.
    Failed,
    /// The source vanished or changed before it was finished.
    Gone,
}

impl FileState {
    pub(crate) const ALL: [FileState; 7] = [
        FileState::Settling,
        FileState::Queued,
        FileState::Uploading,
        FileState::Retrying,
        FileState::Done,
        FileState::Failed,
        FileState::Gone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Settling => "settling",
            FileState::Queued => "queued",
            FileState::Uploading => "uploading",
            FileState::Retrying => "retrying",
            FileState::Done => "done",
            FileState::Failed => "failed",
            FileState::Gone => "gone",
        }
    }

    /// No more work will happen on a file in this state without a command.
    pub fn is_terminal(self) -> bool {
        matches!(self, FileState::Done | FileState::Failed | FileState::Gone)
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FileState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FileState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = FileState::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// What a file looks like on disk. Its identity is the root, the relative
/// path, the size, the mtime and (in the row) the content sample; `dev`,
/// `inode` and `ctime_ns` are hints that a remount or restore changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    /// The watch root (or, for `ingestd upload`, the file's directory).
    pub root: PathBuf,
    pub rel_path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    /// Hint.
    pub dev: u64,
    /// Hint.
    pub inode: u64,
    /// Hint: any write, and also a `touch -r` that puts an mtime back,
    /// changes it. `None` for rows written by an older ingestd.
    pub ctime_ns: Option<i64>,
}

impl FileIdentity {
    /// The identity of the file `root/rel_path` as it is now on disk.
    pub fn from_metadata(root: &Path, rel_path: &Path, meta: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            root: root.to_path_buf(),
            rel_path: rel_path.to_path_buf(),
            size: meta.len(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            dev: meta.dev(),
            inode: meta.ino(),
            ctime_ns: Some(meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec()),
        }
    }

    /// Whether `meta` has this file's size and mtime. The content may still
    /// differ when the hints do ([`FileIdentity::same_hints`]): then only
    /// the sample tells.
    pub fn matches(&self, meta: &std::fs::Metadata) -> bool {
        let now = FileIdentity::from_metadata(&self.root, &self.rel_path, meta);
        now.size == self.size && now.mtime_ns == self.mtime_ns
    }

    /// Whether `other` is certainly the same file: same size and mtime, and
    /// the same device, inode and ctime (a row without a ctime, from an
    /// older ingestd, is judged on device and inode).
    pub(crate) fn same_hints(&self, other: &FileIdentity) -> bool {
        self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.dev == other.dev
            && self.inode == other.inode
            && match (self.ctime_ns, other.ctime_ns) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    pub fn path(&self) -> PathBuf {
        self.root.join(&self.rel_path)
    }
}

/// One row of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: i64,
    pub identity: FileIdentity,
    pub state: FileState,
    /// The chunk size fixed when the first chunk was sent.
    pub chunk_size: Option<u64>,
    /// Bytes acknowledged by the server.
    pub bytes_uploaded: u64,
    pub video_id: Option<String>,
    /// Failed attempts since the last progress.
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub done_at: Option<i64>,
    /// Requests that would have created a video and whose outcome was never
    /// known: each may have left an extra video on api.video.
    pub sends_in_doubt: u32,
    /// The content sample, taken when the file settled.
    pub sample: Option<Sample>,
}

impl FileRow {
    pub fn path(&self) -> PathBuf {
        self.identity.path()
    }
}

/// The result of journaling a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub id: i64,
    /// False when the same identity was already journaled.
    pub inserted: bool,
    pub state: FileState,
}

/// What [`Journal::resettle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resettled {
    /// The settling row now has the file's new identity.
    Updated,
    /// Another row already had that identity: the settling row is now `gone`
    /// and the file is `into`'s.
    Merged { into: i64, state: FileState },
}

/// The column list every row-reading query uses, in [`row_to_file`]'s order.
pub(super) const COLUMNS: &str =
    "id, root, rel_path, size, mtime_ns, dev, inode, state, chunk_size, \
     bytes_uploaded, video_id, attempts, next_attempt_at, last_error, created_at, updated_at, \
     started_at, done_at, sends_in_doubt, ctime_ns, sample";

/// How many columns [`COLUMNS`] names: the index of a column a query
/// selects after them.
pub(super) const COLUMN_COUNT: usize = 21;

pub(super) fn path_from_blob(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&bytes))
}

pub(super) fn to_i64(v: u64) -> i64 {
    // SQLite integers are signed; sizes, inodes and devices above i64::MAX
    // are stored as their two's-complement bit pattern and read back the same.
    v as i64
}

pub(super) fn to_u64(v: i64) -> u64 {
    v as u64
}

pub(super) fn row_to_file(row: &SqlRow) -> Result<FileRow, DbError> {
    let state = FileState::from_str(&row.text(7)?).map_err(|_| DbError::Type {
        index: 7,
        expected: "a state",
    })?;
    Ok(FileRow {
        id: row.i64(0)?,
        identity: FileIdentity {
            root: path_from_blob(row.bytes(1)?),
            rel_path: path_from_blob(row.bytes(2)?),
            size: to_u64(row.i64(3)?),
            mtime_ns: row.i64(4)?,
            dev: to_u64(row.i64(5)?),
            inode: to_u64(row.i64(6)?),
            ctime_ns: row.opt_i64(19)?,
        },
        state,
        chunk_size: row.opt_i64(8)?.map(to_u64),
        bytes_uploaded: to_u64(row.i64(9)?),
        video_id: row.opt_text(10)?,
        attempts: row.u32(11)?,
        next_attempt_at: row.opt_i64(12)?,
        last_error: row.opt_text(13)?,
        created_at: row.i64(14)?,
        updated_at: row.i64(15)?,
        started_at: row.opt_i64(16)?,
        done_at: row.opt_i64(17)?,
        sends_in_doubt: row.u32(18)?,
        sample: row.opt_bytes(20)?.and_then(|b| Sample::from_bytes(&b)),
    })
}
