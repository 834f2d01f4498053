//! The journal: one SQLite table of files, the only queue of the daemon.
//!
//! Every SQL statement of the project lives in this module. Each state
//! transition is one method and one statement guarded by the expected current
//! state, so a transition that lost a race (or a bug) is an error, never a
//! silent overwrite. SQLite is synchronous: the [`Journal`] has one owner
//! thread and async code reaches it through [`JournalHandle`].

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};
use rusqlite_migration::{Migrations, M};
use serde::Serialize;

use crate::sample::Sample;

mod identity;
pub use identity::{Orphan, RootRecord};

/// The schema, one numbered migration per file; applied on open.
const MIGRATIONS: &[&str] = &[
    include_str!("journal/migrations/0001_files.sql"),
    include_str!("journal/migrations/0002_sends_in_doubt.sql"),
    include_str!("journal/migrations/0003_content_identity.sql"),
];

/// How long a writer waits for another connection's lock (a `status` reader,
/// a second `ingestd` process) before the statement fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A path for humans and logs: lossy for names that are not UTF-8, control
/// characters escaped so a name cannot forge a log line.
pub fn show_path(p: &Path) -> String {
    String::from_utf8_lossy(p.as_os_str().as_bytes())
        .escape_debug()
        .to_string()
}

/// Milliseconds since the Unix epoch: the journal's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

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
    pub const ALL: [FileState; 7] = [
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
    pub fn same_hints(&self, other: &FileIdentity) -> bool {
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
pub enum Resettled {
    /// The settling row now has the file's new identity.
    Updated,
    /// Another row already had that identity: the settling row is now `gone`
    /// and the file is `into`'s.
    Merged { into: i64, state: FileState },
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create the journal directory {}: {source}; check journal.path (INGESTD_JOURNAL__PATH) and the permissions", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("there is no journal at {}: nothing has been journaled there yet (check journal.path)", path.display())]
    Missing { path: PathBuf },
    #[error("cannot open the journal {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{} is not an ingestd journal ({reason}); refusing to use it. Point journal.path at the right file, or move this one away", path.display())]
    NotAJournal { path: PathBuf, reason: String },
    #[error("the journal {} is damaged ({detail}); refusing to use it, because starting over would upload again every file still in the watch folders. Restore it from a backup, or salvage it with `sqlite3 {} .recover | sqlite3 recovered.db` and put recovered.db in its place; to start over on purpose, move it and its lock file away", path.display(), path.display())]
    Damaged { path: PathBuf, detail: String },
    #[error("the journal {} has schema version {found}, but this ingestd knows only up to {supported}: it was written by a newer ingestd. Upgrade ingestd (the journal was left untouched)", path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: usize,
    },
    #[error("cannot migrate the journal {}: {source}", path.display())]
    Migrate {
        path: PathBuf,
        source: rusqlite_migration::Error,
    },
    #[error("journal {op} failed on {}: {source}{hint}", path.display(), hint = disk_hint(source))]
    Query {
        op: &'static str,
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("file {id} is {}, not {expected}: {op} refused", actual.map_or("not in the journal", FileState::as_str))]
    WrongState {
        op: &'static str,
        id: i64,
        expected: &'static str,
        actual: Option<FileState>,
    },
    #[error("the journal thread has stopped")]
    Closed,
}

fn disk_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => " (the disk is full: free space; nothing was lost)",
        Some(ErrorCode::ReadOnly) => " (the journal is read-only: check the disk and permissions)",
        Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => {
            " (check the permissions of the journal and its directory)"
        }
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
            " (another process holds the journal)"
        }
        _ => "",
    }
}

/// `AND id IN (…)` restricting a query to `only`, or nothing. Ids are
/// integers, so inlining them is safe.
fn id_filter(only: Option<&[i64]>) -> String {
    match only {
        Some(ids) => {
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!("AND id IN ({})", ids.join(","))
        }
        None => String::new(),
    }
}

/// What `retry` did to each id.
pub type RetryOutcome = Vec<(i64, Result<(), JournalError>)>;

/// The column list every row-reading query uses, in [`row_to_file`]'s order.
const COLUMNS: &str = "id, root, rel_path, size, mtime_ns, dev, inode, state, chunk_size, \
     bytes_uploaded, video_id, attempts, next_attempt_at, last_error, created_at, updated_at, \
     started_at, done_at, sends_in_doubt, ctime_ns, sample";

fn path_from_blob(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&bytes))
}

fn to_i64(v: u64) -> i64 {
    // SQLite integers are signed; sizes, inodes and devices above i64::MAX
    // are stored as their two's-complement bit pattern and read back the same.
    v as i64
}

fn to_u64(v: i64) -> u64 {
    v as u64
}

fn row_to_file(row: &Row<'_>) -> rusqlite::Result<FileRow> {
    let state: String = row.get(7)?;
    let state = FileState::from_str(&state).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, e.into())
    })?;
    Ok(FileRow {
        id: row.get(0)?,
        identity: FileIdentity {
            root: path_from_blob(row.get(1)?),
            rel_path: path_from_blob(row.get(2)?),
            size: to_u64(row.get(3)?),
            mtime_ns: row.get(4)?,
            dev: to_u64(row.get(5)?),
            inode: to_u64(row.get(6)?),
            ctime_ns: row.get(19)?,
        },
        state,
        chunk_size: row.get::<_, Option<i64>>(8)?.map(to_u64),
        bytes_uploaded: to_u64(row.get(9)?),
        video_id: row.get(10)?,
        attempts: row.get(11)?,
        next_attempt_at: row.get(12)?,
        last_error: row.get(13)?,
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
        started_at: row.get(16)?,
        done_at: row.get(17)?,
        sends_in_doubt: row.get(18)?,
        sample: row
            .get::<_, Option<Vec<u8>>>(20)?
            .and_then(|b| Sample::from_bytes(&b)),
    })
}

/// The SQLite journal. Not `Sync`: give it one owner ([`JournalHandle`]).
pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and applies the
    /// migrations. A file that is not an ingestd journal, or one written by a
    /// newer ingestd, is an error: never a silent new journal.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut journal = Journal::connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        journal.migrate()?;
        Ok(journal)
    }

    /// Opens an existing journal to write to it (`retry`). With `migrate`
    /// (the caller holds the lock) an older schema is brought up to date;
    /// without (another process, the daemon, holds it) it is refused unless
    /// it has the schema this ingestd writes.
    pub fn open_existing(path: &Path, migrate: bool) -> Result<Journal, JournalError> {
        let mut journal = Journal::connect_existing(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let version = journal.existing_version()?;
        if version < MIGRATIONS.len() as i64 {
            if !migrate {
                return Err(JournalError::NotAJournal {
                    path: path.to_path_buf(),
                    reason: format!(
                        "it has schema version {version} and another process holds it; this ingestd \
                         writes version {}: stop that process, or use the ingestd it runs",
                        MIGRATIONS.len()
                    ),
                });
            }
            journal.migrate()?;
        }
        Ok(journal)
    }

    /// Opens an existing journal for reading only (`status` while the daemon runs).
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        let journal = Journal::connect_existing(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        journal.existing_version()?;
        Ok(journal)
    }

    /// [`Journal::connect`] to a journal that must already be there.
    fn connect_existing(path: &Path, flags: OpenFlags) -> Result<Journal, JournalError> {
        if !path.exists() {
            return Err(JournalError::Missing {
                path: path.to_path_buf(),
            });
        }
        Journal::connect(path, flags)
    }

    /// Opens the connection, configures it and checks the file is sound
    /// (`PRAGMA quick_check`): a damaged journal (a torn disk, a truncated
    /// copy) is refused before anything trusts or rewrites it.
    fn connect(path: &Path, flags: OpenFlags) -> Result<Journal, JournalError> {
        let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|source| JournalError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let journal = Journal {
            conn,
            path: path.to_path_buf(),
        };
        journal.configure(flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY))?;
        let problems: Vec<String> = journal
            .conn
            .prepare("PRAGMA quick_check(3)")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(journal.query_err("check"))?;
        match problems.as_slice() {
            [ok] if ok == "ok" => Ok(journal),
            _ => Err(JournalError::Damaged {
                path: path.to_path_buf(),
                detail: problems.join("; "),
            }),
        }
    }

    /// The schema version of a journal that must already hold one this
    /// ingestd can read.
    fn existing_version(&self) -> Result<i64, JournalError> {
        let version = self.known_version()?;
        if version == 0 {
            return Err(JournalError::NotAJournal {
                path: self.path.clone(),
                reason: "it has no ingestd schema".into(),
            });
        }
        Ok(version)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn query_err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> JournalError + '_ {
        move |source| match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => JournalError::NotAJournal {
                path: self.path.clone(),
                reason: "not a SQLite database, or a damaged one".into(),
            },
            Some(ErrorCode::DatabaseCorrupt) => JournalError::Damaged {
                path: self.path.clone(),
                detail: source.to_string(),
            },
            _ => JournalError::Query {
                op,
                path: self.path.clone(),
                source,
            },
        }
    }

    fn configure(&self, read_only: bool) -> Result<(), JournalError> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(self.query_err("configure"))?;
        if !read_only {
            // WAL lets `status` read while the daemon writes. FULL syncs the WAL
            // on every commit: an acknowledged chunk survives a power cut too.
            self.conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
                .map_err(self.query_err("configure"))?;
            self.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(self.query_err("configure"))?;
        }
        Ok(())
    }

    fn schema_version(&self) -> Result<i64, JournalError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(self.query_err("read schema version"))
    }

    /// The schema version, refused when a newer ingestd wrote it.
    fn known_version(&self) -> Result<i64, JournalError> {
        let version = self.schema_version()?;
        if version > MIGRATIONS.len() as i64 {
            return Err(JournalError::TooNew {
                path: self.path.clone(),
                found: version,
                supported: MIGRATIONS.len(),
            });
        }
        Ok(version)
    }

    fn migrate(&mut self) -> Result<(), JournalError> {
        let version = self.known_version()?;
        if version == 0 {
            // A database someone else made: never write our schema into it.
            let foreign: i64 = self
                .conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
                    [],
                    |r| r.get(0),
                )
                .map_err(self.query_err("inspect schema"))?;
            if foreign > 0 {
                return Err(JournalError::NotAJournal {
                    path: self.path.clone(),
                    reason: format!("a SQLite database with {foreign} objects of another program"),
                });
            }
        }
        let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
        migrations
            .to_latest(&mut self.conn)
            .map_err(|source| JournalError::Migrate {
                path: self.path.clone(),
                source,
            })
    }

    /// Runs `f` as one transaction: its writes are all committed or none is
    /// (so a caller may run it again after an error, e.g. a full disk).
    pub fn atomically<R>(
        &mut self,
        f: impl FnOnce(&mut Journal) -> Result<R, JournalError>,
    ) -> Result<R, JournalError> {
        // Called inside another `atomically`, this is a nested savepoint: an
        // error undoes only its own writes, and the caller decides.
        let outermost = self.conn.is_autocommit();
        self.conn
            .execute_batch("SAVEPOINT atomically")
            .map_err(self.query_err("begin a transaction"))?;
        let r = f(self).and_then(|r| {
            self.conn
                .execute_batch("RELEASE atomically")
                .map_err(self.query_err("commit"))?;
            Ok(r)
        });
        if r.is_err() && !self.conn.is_autocommit() {
            // Best effort: SQLite may already have rolled back on its own.
            let _ = if outermost {
                self.conn.execute_batch("ROLLBACK")
            } else {
                self.conn
                    .execute_batch("ROLLBACK TO atomically; RELEASE atomically")
            };
        }
        r
    }

    /// Journals a file (or finds it already journaled) in `state`.
    pub fn add_file(
        &mut self,
        file: &FileIdentity,
        state: FileState,
    ) -> Result<Added, JournalError> {
        Ok(self.add_files(std::slice::from_ref(file), state)?[0])
    }

    /// Journals many files in one transaction (a burst of new files costs one
    /// fsync, not one each). A file already journaled with the same hints
    /// (path, size, mtime, device, inode, ctime) is found, not added again;
    /// telling a remounted file from a new one is the caller's (it needs the
    /// content sample: see [`Journal::add_sampled`]).
    pub fn add_files(
        &mut self,
        files: &[FileIdentity],
        state: FileState,
    ) -> Result<Vec<Added>, JournalError> {
        self.atomically(|j| {
            let mut out = Vec::with_capacity(files.len());
            for f in files {
                // A `gone` row is not found here: whether the file is back
                // as it was is for its sample to say, once it settles.
                let same = j
                    .rows_at(&f.root, &f.rel_path)?
                    .into_iter()
                    .find(|r| r.state != FileState::Gone && r.identity.same_hints(f));
                out.push(match same {
                    Some(row) => Added {
                        id: row.id,
                        inserted: false,
                        state: row.state,
                    },
                    None => Added {
                        id: j.insert(f, None, state)?,
                        inserted: true,
                        state,
                    },
                });
            }
            Ok(out)
        })
    }

    /// Inserts a row for `f` in `state`; its id.
    fn insert(
        &mut self,
        f: &FileIdentity,
        sample: Option<Sample>,
        state: FileState,
    ) -> Result<i64, JournalError> {
        let now = now_ms();
        self.conn
            .prepare_cached(
                "INSERT INTO files (root, rel_path, size, mtime_ns, dev, inode, ctime_ns, sample, \
                 state, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10) \
                 RETURNING id",
            )
            .and_then(|mut st| {
                st.query_row(
                    params![
                        f.root.as_os_str().as_bytes(),
                        f.rel_path.as_os_str().as_bytes(),
                        to_i64(f.size),
                        f.mtime_ns,
                        to_i64(f.dev),
                        to_i64(f.inode),
                        f.ctime_ns,
                        sample.as_ref().map(|s| s.0.to_vec()),
                        state.as_str(),
                        now
                    ],
                    |r| r.get(0),
                )
            })
            .map_err(self.query_err("add files"))
    }

    /// One guarded transition: `sql` must update the row `id` only when it is
    /// in one of the `from` states (bound as ?1 = id; the states are inlined).
    fn transition(
        &mut self,
        op: &'static str,
        id: i64,
        from: &[FileState],
        set: &str,
        extra: &[&dyn rusqlite::ToSql],
    ) -> Result<(), JournalError> {
        let states: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let sql = format!(
            "UPDATE files SET {set}, updated_at = ?2 WHERE id = ?1 AND state IN ({})",
            states.join(", ")
        );
        let now = now_ms();
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&id, &now];
        args.extend_from_slice(extra);
        let changed = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut st| st.execute(args.as_slice()))
            .map_err(self.query_err(op))?;
        if changed == 1 {
            return Ok(());
        }
        let actual = self.get(id)?.map(|r| r.state);
        Err(JournalError::WrongState {
            op,
            id,
            expected: from.first().map_or("", |s| s.as_str()),
            actual,
        })
    }

    /// settling → queued: the file stopped changing.
    pub fn mark_ready(&mut self, id: i64) -> Result<(), JournalError> {
        self.transition(
            "mark ready",
            id,
            &[FileState::Settling],
            "state = 'queued'",
            &[],
        )
    }

    /// At start-up: rows left `uploading` by a process that died are put back
    /// in the queue with their offset and videoId, so they resume. A request
    /// that would have created a video may have been on its way when it died:
    /// that one counts as sent in doubt.
    pub fn requeue_interrupted(&mut self) -> Result<usize, JournalError> {
        self.atomically(|j| {
            j.orphans_in_doubt_where("state = 'uploading' AND creating = 1", [])?;
            j.conn
                .execute(
                    "UPDATE files SET state = 'queued', updated_at = ?1, \
                     sends_in_doubt = sends_in_doubt + creating, creating = 0 \
                     WHERE state = 'uploading'",
                    [now_ms()],
                )
                .map_err(j.query_err("requeue interrupted uploads"))
        })
    }

    /// At start-up, with `upload.in_doubt = "fail"` (before
    /// [`Journal::requeue_interrupted`]): files sent in one request (5 MiB or
    /// less) whose request may have been on its way when the process died
    /// become `failed`, for a person to check. Returns their ids.
    pub fn fail_interrupted_in_doubt(&mut self) -> Result<Vec<i64>, JournalError> {
        let limit = to_i64(crate::config::MIN_CHUNK_SIZE);
        self.atomically(|j| {
            j.orphans_in_doubt_where(
                "state = 'uploading' AND creating = 1 AND size <= ?1",
                [limit],
            )?;
            j.fail_interrupted_in_doubt_now()
        })
    }

    fn fail_interrupted_in_doubt_now(&mut self) -> Result<Vec<i64>, JournalError> {
        self.conn
            .prepare(
                "UPDATE files SET state = 'failed', updated_at = ?1, next_attempt_at = NULL, \
                 sends_in_doubt = sends_in_doubt + 1, creating = 0, \
                 last_error = 'in doubt: ingestd stopped while the request that uploads this file in one piece \
                 was on its way, so api.video may already hold it (upload.in_doubt = \"fail\"). Check api.video \
                 for a video with this file''s name; if it is not there, `ingestd retry ' || id || '`' \
                 WHERE state = 'uploading' AND creating = 1 AND size <= ?2 RETURNING id",
            )
            .and_then(|mut st| {
                st.query_map(
                    params![now_ms(), to_i64(crate::config::MIN_CHUNK_SIZE)],
                    |r| r.get(0),
                )?
                .collect()
            })
            .map_err(self.query_err("fail uploads in doubt"))
    }

    /// Claims the next file due for upload (queued, or retrying whose backoff
    /// expired), oldest first, and marks it `uploading`. With `only`, claims
    /// only among those ids. A `next_attempt_at` further in the future than
    /// `max_backoff` (the clock jumped back) counts as due.
    pub fn claim_next(
        &mut self,
        now: i64,
        max_backoff: Duration,
        only: Option<&[i64]>,
    ) -> Result<Option<FileRow>, JournalError> {
        self.claim_next_skipping(now, max_backoff, only, &[])
    }

    /// [`Journal::claim_next`], passing over files under `skip_roots` (watch
    /// folders that are unavailable: their files wait with their progress).
    pub fn claim_next_skipping(
        &mut self,
        now: i64,
        max_backoff: Duration,
        only: Option<&[i64]>,
        skip_roots: &[PathBuf],
    ) -> Result<Option<FileRow>, JournalError> {
        let horizon = now.saturating_add(i64::try_from(max_backoff.as_millis()).unwrap_or(0));
        if only.is_some_and(|ids| ids.is_empty()) {
            return Ok(None);
        }
        let mut filter = id_filter(only);
        if !skip_roots.is_empty() {
            // Roots are bytes: inlined as hex BLOB literals, which cannot
            // break out of the statement.
            let roots: Vec<String> = skip_roots
                .iter()
                .map(|r| {
                    let hex: String = r
                        .as_os_str()
                        .as_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    format!("X'{hex}'")
                })
                .collect();
            filter.push_str(&format!(" AND root NOT IN ({})", roots.join(", ")));
        }
        let sql = format!(
            "UPDATE files SET state = 'uploading', started_at = ?1, updated_at = ?1 \
             WHERE id = (SELECT id FROM files WHERE state IN ('queued', 'retrying') \
               AND (next_attempt_at IS NULL OR next_attempt_at <= ?1 OR next_attempt_at > ?2) \
               {filter} ORDER BY id LIMIT 1) \
             RETURNING {COLUMNS}"
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut st| st.query_row(params![now, horizon], row_to_file).optional())
            .map_err(self.query_err("claim a file"))
    }

    /// Fixes the chunk plan of an upload before its first chunk (kept if set),
    /// and notes whether this attempt may create a video (no videoId yet).
    pub fn set_chunk_size(&mut self, id: i64, chunk_size: u64) -> Result<u64, JournalError> {
        self.transition(
            "fix the chunk plan",
            id,
            &[FileState::Uploading],
            "chunk_size = coalesce(chunk_size, ?3), creating = (video_id IS NULL)",
            &[&to_i64(chunk_size)],
        )?;
        let row = self.get(id)?;
        Ok(row.and_then(|r| r.chunk_size).unwrap_or(chunk_size))
    }

    /// A chunk was acknowledged: commit the videoId and the new offset, and
    /// reset the backoff (progress was made). Must commit before the next chunk.
    pub fn record_progress(
        &mut self,
        id: i64,
        video_id: &str,
        bytes_uploaded: u64,
    ) -> Result<(), JournalError> {
        self.transition(
            "record progress",
            id,
            &[FileState::Uploading],
            "video_id = ?3, bytes_uploaded = ?4, attempts = 0, next_attempt_at = NULL, last_error = NULL, \
             creating = 0",
            &[&video_id, &to_i64(bytes_uploaded)],
        )
    }

    /// The last chunk was acknowledged: the file is done.
    /// `note` stays in `last_error` (e.g. why the videoId is unknown).
    pub fn mark_done(
        &mut self,
        id: i64,
        video_id: Option<&str>,
        video_json: Option<&str>,
        note: Option<&str>,
    ) -> Result<(), JournalError> {
        self.transition(
            "mark done",
            id,
            &[FileState::Uploading],
            "state = 'done', video_id = coalesce(?3, video_id), bytes_uploaded = size, \
             done_at = ?2, video_json = ?4, next_attempt_at = NULL, last_error = ?5, creating = 0",
            &[&video_id, &video_json, &note],
        )
    }

    /// A retryable error: wait until `next_attempt_at`.
    pub fn mark_retrying(
        &mut self,
        id: i64,
        attempts: u32,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), JournalError> {
        self.transition(
            "schedule a retry",
            id,
            &[FileState::Uploading],
            "state = 'retrying', attempts = ?3, next_attempt_at = ?4, last_error = ?5, creating = 0",
            &[&attempts, &next_attempt_at, &error],
        )
    }

    /// Makes these retrying files due at `now` (what they were waiting out
    /// is over: the server answers again). Their attempts are kept, so the
    /// next failure backs off further. Returns how many were moved.
    pub fn make_due(&mut self, ids: &[i64], now: i64) -> Result<usize, JournalError> {
        let mut moved = 0;
        // In slices, so that a large backlog never makes an over-long statement.
        for slice in ids.chunks(500) {
            let filter = id_filter(Some(slice));
            moved += self
                .conn
                .execute(
                    &format!(
                        "UPDATE files SET next_attempt_at = ?1, updated_at = ?1 \
                         WHERE state = 'retrying' AND next_attempt_at > ?1 {filter}"
                    ),
                    [now],
                )
                .map_err(self.query_err("make retries due"))?;
        }
        Ok(moved)
    }

    /// A permanent error: the file waits for `ingestd retry`.
    pub fn mark_failed(&mut self, id: i64, error: &str) -> Result<(), JournalError> {
        self.transition(
            "mark failed",
            id,
            &[
                FileState::Uploading,
                FileState::Queued,
                FileState::Retrying,
                FileState::Settling,
            ],
            "state = 'failed', last_error = ?3, next_attempt_at = NULL, creating = 0",
            &[&error],
        )
    }

    /// A permanent error that also voids the upload's progress (the server
    /// no longer has the partial video): `ingestd retry` starts it over.
    pub fn mark_failed_restart(&mut self, id: i64, error: &str) -> Result<(), JournalError> {
        self.transition(
            "mark failed",
            id,
            &[FileState::Uploading],
            "state = 'failed', last_error = ?3, next_attempt_at = NULL, video_id = NULL, \
             bytes_uploaded = 0, chunk_size = NULL, creating = 0",
            &[&error],
        )
    }

    /// The source vanished or changed before it was finished. A video its
    /// upload had started becomes an orphan.
    pub fn mark_gone(&mut self, id: i64, reason: &str) -> Result<(), JournalError> {
        self.atomically(|j| {
            j.transition(
                "mark gone",
                id,
                &[
                    FileState::Uploading,
                    FileState::Queued,
                    FileState::Retrying,
                    FileState::Settling,
                ],
                "state = 'gone', last_error = ?3, next_attempt_at = NULL, creating = 0",
                &[&reason],
            )?;
            j.orphan_if_started(id, reason)
        })
    }

    /// The request that would have created this file's video failed in a way
    /// that leaves its outcome unknown (the reply was lost): count it.
    pub fn count_send_in_doubt(&mut self, id: i64) -> Result<(), JournalError> {
        self.atomically(|j| {
            j.transition(
                "count a request in doubt",
                id,
                &[FileState::Uploading],
                "sends_in_doubt = sends_in_doubt + 1, creating = 0",
                &[],
            )?;
            j.orphan_in_doubt(id)
        })
    }

    /// The request that would have created this file's video got a reply
    /// that proves nothing was stored (a 429): it is no longer in flight.
    pub fn not_creating(&mut self, id: i64) -> Result<(), JournalError> {
        self.transition(
            "note a refused request",
            id,
            &[FileState::Uploading],
            "creating = 0",
            &[],
        )
    }

    /// [`Journal::count_send_in_doubt`] and [`Journal::mark_failed`] in one
    /// transition (`upload.in_doubt = "fail"`).
    pub fn fail_in_doubt(&mut self, id: i64, error: &str) -> Result<(), JournalError> {
        self.atomically(|j| {
            j.transition(
                "mark failed in doubt",
                id,
                &[FileState::Uploading],
                "state = 'failed', last_error = ?3, next_attempt_at = NULL, \
                 sends_in_doubt = sends_in_doubt + 1, creating = 0",
                &[&error],
            )?;
            j.orphan_in_doubt(id)
        })
    }

    /// Gives a claimed file back to the queue untouched (shutdown, token
    /// trouble): its offset, videoId and attempts are kept.
    pub fn release(&mut self, id: i64, note: Option<&str>) -> Result<(), JournalError> {
        self.transition(
            "release",
            id,
            &[FileState::Uploading],
            "state = 'queued', last_error = coalesce(?3, last_error), creating = 0",
            &[&note],
        )
    }

    /// Puts failed files back in the queue (`ingestd retry`). With `ids`, only
    /// those; each id gets its own outcome.
    pub fn retry_failed(&mut self, ids: Option<&[i64]>) -> Result<RetryOutcome, JournalError> {
        let ids: Vec<i64> = match ids {
            Some(ids) => ids.to_vec(),
            None => self
                .list(Some(&[FileState::Failed]))?
                .into_iter()
                .map(|r| r.id)
                .collect(),
        };
        Ok(ids
            .into_iter()
            .map(|id| {
                let r = self.transition(
                    "retry",
                    id,
                    &[FileState::Failed],
                    "state = 'queued', attempts = 0, next_attempt_at = NULL",
                    &[],
                );
                (id, r)
            })
            .collect())
    }

    pub fn get(&self, id: i64) -> Result<Option<FileRow>, JournalError> {
        self.conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM files WHERE id = ?1"))
            .and_then(|mut st| st.query_row([id], row_to_file).optional())
            .map_err(self.query_err("read a file"))
    }

    /// All rows (in id order), or those in `states`.
    pub fn list(&self, states: Option<&[FileState]>) -> Result<Vec<FileRow>, JournalError> {
        let filter = match states {
            Some(states) => {
                let s: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
                format!("WHERE state IN ({})", s.join(", "))
            }
            None => String::new(),
        };
        self.select_rows("list files", &format!("{filter} ORDER BY id"), [])
    }

    /// The rows `SELECT {COLUMNS} FROM files <tail>` finds, `args` bound.
    fn select_rows(
        &self,
        op: &'static str,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<FileRow>, JournalError> {
        self.conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM files {tail}"))
            .and_then(|mut st| {
                st.query_map(args, row_to_file)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(self.query_err(op))
    }

    /// How many files are in each state.
    pub fn counts(&self) -> Result<BTreeMap<FileState, u64>, JournalError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT state, count(*) FROM files GROUP BY state")
            .map_err(self.query_err("count files"))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.query_err("count files"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| Some((FileState::from_str(&s).ok()?, to_u64(n))))
            .collect())
    }

    /// The earliest `next_attempt_at` of a retrying file (to sleep until).
    pub fn next_retry_at(&self, only: Option<&[i64]>) -> Result<Option<i64>, JournalError> {
        let filter = id_filter(only);
        self.conn
            .query_row(
                &format!(
                    "SELECT min(next_attempt_at) FROM files WHERE state = 'retrying' {filter}"
                ),
                [],
                |r| r.get(0),
            )
            .map_err(self.query_err("find the next retry"))
    }

    /// How many of the files (all, or `only`) still have work ahead of them.
    pub fn unfinished(&self, only: Option<&[i64]>) -> Result<u64, JournalError> {
        let filter = id_filter(only);
        self.conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM files WHERE state IN \
                     ('settling', 'queued', 'uploading', 'retrying') {filter}"
                ),
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(to_u64)
            .map_err(self.query_err("count unfinished files"))
    }

    /// How many files under each root still have work ahead of them
    /// (settling, queued, uploading, retrying), for monitoring. Roots with
    /// none are absent.
    pub fn unfinished_by_root(&self) -> Result<BTreeMap<PathBuf, u64>, JournalError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT root, count(*) FROM files WHERE state IN \
                 ('settling', 'queued', 'uploading', 'retrying') GROUP BY root",
            )
            .map_err(self.query_err("count unfinished files by folder"))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.query_err("count unfinished files by folder"))?;
        Ok(rows
            .into_iter()
            .map(|(root, n)| (path_from_blob(root), to_u64(n)))
            .collect())
    }

    /// When the file waiting longest for an upload (queued or retrying) was
    /// journaled, in Unix milliseconds; `None` when nothing waits.
    pub fn oldest_waiting_since(&self) -> Result<Option<i64>, JournalError> {
        self.conn
            .query_row(
                "SELECT min(created_at) FROM files WHERE state IN ('queued', 'retrying')",
                [],
                |r| r.get(0),
            )
            .map_err(self.query_err("find the oldest waiting file"))
    }

    /// Every row of one watch root (the reconcile scan loads a folder once
    /// instead of asking about each file).
    pub fn rows_under(&self, root: &Path) -> Result<Vec<FileRow>, JournalError> {
        self.select_rows(
            "list a watch folder",
            "WHERE root = ?1 ORDER BY id",
            [root.as_os_str().as_bytes()],
        )
    }

    /// Every row (any identity, any state) journaled for `root/rel_path`.
    pub fn rows_at(&self, root: &Path, rel_path: &Path) -> Result<Vec<FileRow>, JournalError> {
        self.select_rows(
            "look up a path",
            "WHERE root = ?1 AND rel_path = ?2 ORDER BY id",
            params![root.as_os_str().as_bytes(), rel_path.as_os_str().as_bytes()],
        )
    }

    /// A settling file changed (it is still being written): its row follows
    /// the new size, mtime and hints instead of a new row per growth step.
    /// Only the size, mtime and hints of `identity` are used; root and path
    /// stay. If another row at the path already has those (the file went
    /// back to a state already journaled), this row becomes `gone` and the
    /// other one is returned.
    pub fn resettle(
        &mut self,
        id: i64,
        identity: &FileIdentity,
    ) -> Result<Resettled, JournalError> {
        self.atomically(|j| {
            let row = j.get(id)?.filter(|r| r.state == FileState::Settling);
            if let Some(row) = row {
                let now = FileIdentity {
                    root: row.identity.root.clone(),
                    rel_path: row.identity.rel_path.clone(),
                    ..identity.clone()
                };
                let twin = j
                    .rows_at(&now.root, &now.rel_path)?
                    .into_iter()
                    .find(|r| r.id != id && r.identity.same_hints(&now));
                if let Some(twin) = twin {
                    j.mark_gone(id, &format!("the same file as {}", twin.id))?;
                    return Ok(Resettled::Merged {
                        into: twin.id,
                        state: twin.state,
                    });
                }
            }
            j.transition(
                "resettle",
                id,
                &[FileState::Settling],
                "size = ?3, mtime_ns = ?4, dev = ?5, inode = ?6, ctime_ns = ?7, sample = NULL",
                &[
                    &to_i64(identity.size),
                    &identity.mtime_ns,
                    &to_i64(identity.dev),
                    &to_i64(identity.inode),
                    &identity.ctime_ns,
                ],
            )?;
            Ok(Resettled::Updated)
        })
    }

    /// `UPDATE … WHERE id = ? AND state IN (from)` for many ids in one
    /// transaction; returns the ids that changed (the others were not in a
    /// `from` state any more: a lost race, not an error).
    fn transition_many(
        &mut self,
        op: &'static str,
        ids: &[i64],
        from: &[FileState],
        set: &str,
        extra: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<i64>, JournalError> {
        let states: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let sql = format!(
            "UPDATE files SET {set}, updated_at = ?2 WHERE id = ?1 AND state IN ({})",
            states.join(", ")
        );
        let now = now_ms();
        let path = self.path.clone();
        let err = move |source| JournalError::Query { op, path, source };
        let tx = self.conn.savepoint().map_err(err.clone())?;
        let mut changed = Vec::with_capacity(ids.len());
        {
            let mut st = tx.prepare_cached(&sql).map_err(err.clone())?;
            for id in ids {
                let mut args: Vec<&dyn rusqlite::ToSql> = vec![id, &now];
                args.extend_from_slice(extra);
                if st.execute(args.as_slice()).map_err(err.clone())? == 1 {
                    changed.push(*id);
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(changed)
    }

    /// settling → queued for many files in one transaction (a restart with
    /// thousands of settled files costs one fsync). Returns the ids queued.
    pub fn mark_ready_many(&mut self, ids: &[i64]) -> Result<Vec<i64>, JournalError> {
        self.transition_many(
            "mark ready",
            ids,
            &[FileState::Settling],
            "state = 'queued'",
            &[],
        )
    }

    /// Files not yet claimed by a worker (settling, queued, retrying) whose
    /// source vanished or changed: `gone`, in one transaction. Rows a worker
    /// holds (`uploading`) are the worker's to judge. Returns the ids changed.
    pub fn mark_gone_many(&mut self, ids: &[i64], reason: &str) -> Result<Vec<i64>, JournalError> {
        self.atomically(|j| {
            let changed = j.transition_many(
                "mark gone",
                ids,
                &[FileState::Settling, FileState::Queued, FileState::Retrying],
                "state = 'gone', last_error = ?3, next_attempt_at = NULL",
                &[&reason],
            )?;
            for id in &changed {
                j.orphan_if_started(*id, reason)?;
            }
            Ok(changed)
        })
    }

    /// The Video object (JSON) of the reply that completed a file's upload.
    pub fn video_json(&self, id: i64) -> Result<Option<String>, JournalError> {
        self.conn
            .prepare_cached("SELECT video_json FROM files WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |r| r.get(0)).optional())
            .map(Option::flatten)
            .map_err(self.query_err("read a file's video"))
    }
}

type Job = Box<dyn FnOnce(&mut Journal) + Send>;

/// How long a write waits between attempts while the journal's disk is full.
const FULL_RETRY_FIRST: Duration = Duration::from_millis(200);
const FULL_RETRY_MAX: Duration = Duration::from_secs(5);

/// Whether the journal's disk is full, shared by the journal thread (which
/// waits for space) and whoever reports health.
#[derive(Debug, Default)]
pub struct DiskState {
    /// When the current episode began (ms since the epoch), 0 when none.
    full_since: AtomicI64,
    /// Shutting down: a write waiting for space gives up (its rows resume
    /// at the next start), so a stop never hangs on a full disk.
    give_up: AtomicBool,
}

impl DiskState {
    /// From now on, writes stop waiting for space.
    pub fn give_up(&self) {
        self.give_up.store(true, Ordering::Relaxed);
    }

    /// Since when writes have been waiting for space, if they are.
    pub fn full_since(&self) -> Option<i64> {
        Some(self.full_since.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// True when this starts an episode.
    fn enter(&self) -> bool {
        self.full_since
            .compare_exchange(0, now_ms().max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The start of the episode this ends, if one was going on.
    fn leave(&self) -> Option<i64> {
        Some(self.full_since.swap(0, Ordering::Relaxed)).filter(|&t| t != 0)
    }
}

impl JournalError {
    /// SQLite could not write for lack of space (`SQLITE_FULL`, which is
    /// also what `ENOSPC` becomes). The statement was rolled back, so the
    /// same call can be made again once there is room.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, JournalError::Query { source, .. }
            if source.sqlite_error_code() == Some(ErrorCode::DiskFull))
    }
}

/// The async face of the journal: a dedicated thread owns the connection and
/// runs the closures sent to it in order, so the runtime never blocks on SQLite.
#[derive(Clone)]
pub struct JournalHandle {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    disk: Arc<DiskState>,
}

impl fmt::Debug for JournalHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl JournalHandle {
    /// Moves `journal` to its own thread; it closes when the last handle drops.
    pub fn spawn(mut journal: Journal) -> std::io::Result<JournalHandle> {
        let (tx, rx) = mpsc::channel::<Job>();
        let path = journal.path.clone();
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut journal);
                }
            })?;
        Ok(JournalHandle {
            jobs: tx,
            path,
            disk: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether writes are waiting for space on the journal's disk.
    pub fn disk(&self) -> &DiskState {
        &self.disk
    }

    /// Runs `f` on the journal thread and returns its result.
    ///
    /// A write that fails because the disk is full is made again, every few
    /// seconds, until there is room: everything that needs the journal waits
    /// (and says so once), nothing is lost or half-written, and work resumes
    /// by itself when space is freed. `f` must therefore be safe to run again
    /// after a disk-full error, which holds for every [`Journal`] method (each
    /// is one transaction, rolled back on error).
    pub async fn call<R, F>(&self, mut f: F) -> Result<R, JournalError>
    where
        F: FnMut(&mut Journal) -> Result<R, JournalError> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let disk = self.disk.clone();
        self.jobs
            .send(Box::new(move |j: &mut Journal| {
                let mut wait = FULL_RETRY_FIRST;
                let mut waited = false;
                let r = loop {
                    match f(j) {
                        // Nobody waits for the answer any more, or ingestd is
                        // stopping: stop trying.
                        Err(e)
                            if e.is_disk_full()
                                && !tx.is_closed()
                                && !disk.give_up.load(Ordering::Relaxed) =>
                        {
                            waited = true;
                            if disk.enter() {
                                tracing::error!(
                                    "{e}; everything that needs the journal waits for space, \
                                     trying again every few seconds"
                                );
                            }
                            std::thread::sleep(wait);
                            wait = (wait * 2).min(FULL_RETRY_MAX);
                        }
                        r => break r,
                    }
                };
                // Calls run one at a time: this one was the one waiting.
                if waited {
                    if let Some(since) = disk.leave() {
                        let waited_s = (now_ms() - since).max(0) / 1000;
                        if r.is_ok() {
                            tracing::warn!(waited_s, "the journal's disk has room again; resuming");
                        } else {
                            tracing::warn!(
                                waited_s,
                                "stopped waiting for room on the journal's disk"
                            );
                        }
                    }
                }
                // The caller may have gone away (cancelled); nothing to do then.
                let _ = tx.send(r);
            }))
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(name: &str, size: u64) -> FileIdentity {
        FileIdentity {
            root: PathBuf::from("/srv/capture"),
            rel_path: PathBuf::from(name),
            size,
            mtime_ns: 1_700_000_000_000_000_000,
            dev: 42,
            inode: 7,
            ctime_ns: Some(1),
        }
    }

    fn open_temp() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("sub/journal.db")).unwrap();
        (dir, j)
    }

    #[test]
    fn add_is_idempotent_per_identity() {
        let (_d, mut j) = open_temp();
        let a = j.add_file(&ident("a.mp4", 10), FileState::Queued).unwrap();
        let b = j.add_file(&ident("a.mp4", 10), FileState::Queued).unwrap();
        assert!(a.inserted && !b.inserted);
        assert_eq!(a.id, b.id);
        // Same name, new content (size): a new row.
        let c = j.add_file(&ident("a.mp4", 11), FileState::Queued).unwrap();
        assert!(c.inserted);
        assert_ne!(c.id, a.id);
    }

    #[test]
    fn a_nested_failure_undoes_only_its_own_writes() {
        let (_d, mut j) = open_temp();
        let a = j
            .add_file(&ident("a.mp4", 10), FileState::Queued)
            .unwrap()
            .id;
        let b = j
            .add_file(&ident("b.mp4", 10), FileState::Queued)
            .unwrap()
            .id;
        j.atomically(|j| {
            j.mark_gone(a, "vanished")?;
            // A lost race inside: only its own writes go.
            assert!(j.revive(b, FileState::Queued).is_err());
            j.mark_failed(b, "broken")
        })
        .unwrap();
        assert_eq!(j.get(a).unwrap().unwrap().state, FileState::Gone);
        assert_eq!(j.get(b).unwrap().unwrap().state, FileState::Failed);
        // An outer failure undoes everything.
        let r: Result<(), _> = j.atomically(|j| {
            j.retry_failed(Some(&[b]))?;
            j.mark_ready(a)
        });
        assert!(r.is_err());
        assert_eq!(j.get(b).unwrap().unwrap().state, FileState::Failed);
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let (_d, mut j) = open_temp();
        let mut f = ident("x", 5);
        f.rel_path = PathBuf::from(OsStr::from_bytes(b"caf\xe9\nnew.mp4"));
        let a = j.add_file(&f, FileState::Queued).unwrap();
        let row = j.get(a.id).unwrap().unwrap();
        assert_eq!(row.identity, f);
    }

    #[test]
    fn happy_path_transitions() {
        let (_d, mut j) = open_temp();
        let a = j
            .add_file(&ident("a.mp4", 100), FileState::Settling)
            .unwrap();
        assert!(j
            .claim_next(now_ms(), Duration::from_secs(300), None)
            .unwrap()
            .is_none());
        j.mark_ready(a.id).unwrap();
        let row = j
            .claim_next(now_ms(), Duration::from_secs(300), None)
            .unwrap()
            .unwrap();
        assert_eq!(row.state, FileState::Uploading);
        assert_eq!(j.set_chunk_size(a.id, 50).unwrap(), 50);
        // The plan is fixed once set.
        assert_eq!(j.set_chunk_size(a.id, 60).unwrap(), 50);
        j.record_progress(a.id, "vi1", 50).unwrap();
        let row = j.get(a.id).unwrap().unwrap();
        assert_eq!(
            (row.bytes_uploaded, row.video_id.as_deref()),
            (50, Some("vi1"))
        );
        j.mark_done(a.id, Some("vi1"), Some("{}"), None).unwrap();
        let row = j.get(a.id).unwrap().unwrap();
        assert_eq!(row.state, FileState::Done);
        assert_eq!(row.bytes_uploaded, 100);
        // A done file is never claimed again.
        assert!(j
            .claim_next(now_ms(), Duration::from_secs(300), None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn guarded_transitions_refuse_wrong_state() {
        let (_d, mut j) = open_temp();
        let a = j.add_file(&ident("a.mp4", 100), FileState::Queued).unwrap();
        let err = j.record_progress(a.id, "vi1", 10).unwrap_err();
        assert!(
            matches!(
                err,
                JournalError::WrongState {
                    actual: Some(FileState::Queued),
                    ..
                }
            ),
            "{err}"
        );
        let err = j.mark_done(999, Some("vi"), None, None).unwrap_err();
        assert!(matches!(err, JournalError::WrongState { actual: None, .. }));
    }

    #[test]
    fn retrying_waits_for_its_time_and_clock_jumps_back_count_as_due() {
        let (_d, mut j) = open_temp();
        let a = j.add_file(&ident("a.mp4", 100), FileState::Queued).unwrap();
        let now = now_ms();
        let cap = Duration::from_secs(300);
        j.claim_next(now, cap, None).unwrap().unwrap();
        j.mark_retrying(a.id, 1, now + 10_000, "503").unwrap();
        assert!(j.claim_next(now, cap, None).unwrap().is_none());
        assert_eq!(j.next_retry_at(None).unwrap(), Some(now + 10_000));
        assert!(j.claim_next(now + 10_000, cap, None).unwrap().is_some());
        j.mark_retrying(a.id, 2, now + 10_000_000, "503").unwrap();
        // Far beyond the cap: the clock went back; do not wait for it.
        let row = j.claim_next(now, cap, None).unwrap().unwrap();
        assert_eq!(row.attempts, 2);
    }

    #[test]
    fn make_due_moves_only_the_given_retrying_rows_and_keeps_their_attempts() {
        let (_d, mut j) = open_temp();
        let now = now_ms();
        let cap = Duration::from_secs(300);
        let a = j.add_file(&ident("a.mp4", 100), FileState::Queued).unwrap();
        let b = j.add_file(&ident("b.mp4", 100), FileState::Queued).unwrap();
        let c = j.add_file(&ident("c.mp4", 100), FileState::Queued).unwrap();
        for id in [a.id, b.id] {
            j.claim_next(now, cap, None).unwrap().unwrap();
            j.mark_retrying(id, 6, now + 60_000, "cannot connect")
                .unwrap();
        }
        // Over several statements: ids that are not rows, then a and c.
        let ids: Vec<i64> = (10_000..11_000).chain([a.id, c.id]).collect();
        assert_eq!(j.make_due(&ids, now).unwrap(), 1);
        assert_eq!(j.make_due(&[], now).unwrap(), 0);
        let row = j.claim_next(now, cap, None).unwrap().unwrap();
        assert_eq!((row.id, row.attempts), (a.id, 6));
        // c is queued (claimable anyway), b still waits.
        let row = j.claim_next(now, cap, None).unwrap().unwrap();
        assert_eq!(row.id, c.id);
        assert!(j.claim_next(now, cap, None).unwrap().is_none());
        assert_eq!(
            j.get(b.id).unwrap().unwrap().next_attempt_at,
            Some(now + 60_000)
        );
    }

    #[test]
    fn interrupted_uploads_are_resumed_with_their_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let id = {
            let mut j = Journal::open(&path).unwrap();
            let a = j.add_file(&ident("a.mp4", 100), FileState::Queued).unwrap();
            j.claim_next(now_ms(), Duration::from_secs(1), None)
                .unwrap();
            j.set_chunk_size(a.id, 40).unwrap();
            j.record_progress(a.id, "vi9", 40).unwrap();
            a.id
        };
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(j.requeue_interrupted().unwrap(), 1);
        let row = j
            .claim_next(now_ms(), Duration::from_secs(1), None)
            .unwrap()
            .unwrap();
        assert_eq!(row.id, id);
        assert_eq!(row.bytes_uploaded, 40);
        assert_eq!(row.video_id.as_deref(), Some("vi9"));
        assert_eq!(row.chunk_size, Some(40));
    }

    #[test]
    fn failing_with_restart_voids_the_progress() {
        let (_d, mut j) = open_temp();
        let a = j.add_file(&ident("a", 100), FileState::Queued).unwrap();
        j.claim_next(now_ms(), Duration::from_secs(1), None)
            .unwrap();
        j.set_chunk_size(a.id, 50).unwrap();
        j.record_progress(a.id, "vi1", 50).unwrap();
        j.mark_failed_restart(a.id, "404").unwrap();
        let r = j.get(a.id).unwrap().unwrap();
        assert_eq!(
            (r.state, r.bytes_uploaded, r.video_id, r.chunk_size),
            (FileState::Failed, 0, None, None)
        );
    }

    #[test]
    fn retry_failed_requeues_only_failed() {
        let (_d, mut j) = open_temp();
        let a = j.add_file(&ident("a", 1), FileState::Queued).unwrap();
        let b = j.add_file(&ident("b", 1), FileState::Queued).unwrap();
        j.mark_failed(a.id, "400 nope").unwrap();
        let out = j.retry_failed(Some(&[a.id, b.id])).unwrap();
        assert!(out[0].1.is_ok());
        assert!(out[1].1.is_err());
        assert_eq!(j.get(a.id).unwrap().unwrap().state, FileState::Queued);
    }

    #[test]
    fn claim_only_among_given_ids() {
        let (_d, mut j) = open_temp();
        let _a = j.add_file(&ident("a", 1), FileState::Queued).unwrap();
        let b = j.add_file(&ident("b", 1), FileState::Queued).unwrap();
        let row = j
            .claim_next(now_ms(), Duration::from_secs(1), Some(&[b.id]))
            .unwrap()
            .unwrap();
        assert_eq!(row.id, b.id);
        assert!(j
            .claim_next(now_ms(), Duration::from_secs(1), Some(&[b.id]))
            .unwrap()
            .is_none());
        assert_eq!(j.unfinished(Some(&[b.id])).unwrap(), 1);
    }

    #[test]
    fn garbage_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let err = Journal::open(&path).unwrap_err();
        assert!(matches!(err, JournalError::NotAJournal { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 8192]);
    }

    #[test]
    fn foreign_sqlite_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = Journal::open(&path).unwrap_err();
        assert!(matches!(err, JournalError::NotAJournal { .. }), "{err}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        drop(Journal::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Journal::open(&path).unwrap_err();
        assert!(
            matches!(err, JournalError::TooNew { found: 99, .. }),
            "{err}"
        );
        let err = Journal::open_read_only(&path).unwrap_err();
        assert!(matches!(err, JournalError::TooNew { .. }), "{err}");
    }

    #[test]
    fn migrations_are_valid() {
        let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
        migrations.validate().unwrap();
    }

    #[test]
    fn read_only_open_sees_writes_and_refuses_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        assert!(matches!(
            Journal::open_read_only(&path),
            Err(JournalError::Missing { .. })
        ));
        let mut w = Journal::open(&path).unwrap();
        w.add_file(&ident("a", 1), FileState::Queued).unwrap();
        let r = Journal::open_read_only(&path).unwrap();
        assert_eq!(r.list(None).unwrap().len(), 1);
        assert_eq!(r.counts().unwrap().get(&FileState::Queued), Some(&1));
    }

    #[test]
    fn resettle_follows_a_growing_file_and_merges_into_an_existing_identity() {
        let (_d, mut j) = open_temp();
        let a = j
            .add_file(&ident("a.mp4", 10), FileState::Settling)
            .unwrap();
        assert_eq!(
            j.resettle(a.id, &ident("a.mp4", 20)).unwrap(),
            Resettled::Updated
        );
        let row = j.get(a.id).unwrap().unwrap();
        assert_eq!((row.identity.size, row.state), (20, FileState::Settling));
        assert_eq!(
            j.rows_at(Path::new("/srv/capture"), Path::new("a.mp4"))
                .unwrap()
                .len(),
            1
        );
        // Back to an identity another row has: this one is gone, that one wins.
        let done = j.add_file(&ident("a.mp4", 30), FileState::Done).unwrap();
        let merged = j.resettle(a.id, &ident("a.mp4", 30)).unwrap();
        assert_eq!(
            merged,
            Resettled::Merged {
                into: done.id,
                state: FileState::Done
            }
        );
        assert_eq!(j.get(a.id).unwrap().unwrap().state, FileState::Gone);
        // Only a settling row may be resettled.
        let q = j.add_file(&ident("q.mp4", 1), FileState::Queued).unwrap();
        let err = j.resettle(q.id, &ident("q.mp4", 2)).unwrap_err();
        assert!(matches!(err, JournalError::WrongState { .. }), "{err}");
    }

    #[test]
    fn batch_transitions_skip_rows_in_other_states() {
        let (_d, mut j) = open_temp();
        let a = j.add_file(&ident("a", 1), FileState::Settling).unwrap();
        let b = j.add_file(&ident("b", 1), FileState::Queued).unwrap();
        let c = j.add_file(&ident("c", 1), FileState::Done).unwrap();
        assert_eq!(j.mark_ready_many(&[a.id, b.id, 999]).unwrap(), vec![a.id]);
        let gone = j.mark_gone_many(&[a.id, b.id, c.id], "vanished").unwrap();
        assert_eq!(gone, vec![a.id, b.id]);
        assert_eq!(j.get(c.id).unwrap().unwrap().state, FileState::Done);
        assert_eq!(
            j.get(b.id).unwrap().unwrap().last_error.as_deref(),
            Some("vanished")
        );
        let other = FileIdentity {
            root: PathBuf::from("/elsewhere"),
            ..ident("a", 1)
        };
        j.add_file(&other, FileState::Queued).unwrap();
        let under = j.rows_under(Path::new("/srv/capture")).unwrap();
        assert_eq!(
            under.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![a.id, b.id, c.id]
        );
    }

    #[test]
    fn monitoring_queries_count_work_ahead_per_root_and_the_oldest_wait() {
        let (_d, mut j) = open_temp();
        assert!(j.unfinished_by_root().unwrap().is_empty());
        assert_eq!(j.oldest_waiting_since().unwrap(), None);
        let a = j.add_file(&ident("a", 1), FileState::Queued).unwrap();
        j.add_file(&ident("b", 1), FileState::Settling).unwrap();
        j.add_file(&ident("c", 1), FileState::Done).unwrap();
        let f = j.add_file(&ident("f", 1), FileState::Queued).unwrap();
        j.mark_failed(f.id, "nope").unwrap();
        let other = FileIdentity {
            root: PathBuf::from("/elsewhere"),
            ..ident("d", 1)
        };
        j.add_file(&other, FileState::Queued).unwrap();
        let by_root = j.unfinished_by_root().unwrap();
        assert_eq!(by_root.get(Path::new("/srv/capture")), Some(&2));
        assert_eq!(by_root.get(Path::new("/elsewhere")), Some(&1));
        let created = j.get(a.id).unwrap().unwrap().created_at;
        assert_eq!(j.oldest_waiting_since().unwrap(), Some(created));
    }

    #[test]
    fn video_json_is_read_back() {
        let (_d, mut j) = open_temp();
        let a = j.add_file(&ident("a", 1), FileState::Queued).unwrap();
        assert_eq!(j.video_json(a.id).unwrap(), None);
        j.claim_next(now_ms(), Duration::from_secs(1), None)
            .unwrap();
        j.mark_done(a.id, Some("vi1"), Some(r#"{"videoId":"vi1"}"#), None)
            .unwrap();
        assert_eq!(
            j.video_json(a.id).unwrap().as_deref(),
            Some(r#"{"videoId":"vi1"}"#)
        );
        assert_eq!(j.video_json(999).unwrap(), None);
    }

    #[tokio::test]
    async fn handle_runs_calls_on_the_owner_thread() {
        let (_d, j) = open_temp();
        let h = JournalHandle::spawn(j).unwrap();
        let added = h
            .call(|j| j.add_file(&ident("a", 1), FileState::Queued))
            .await
            .unwrap();
        let row = h.call(move |j| j.get(added.id)).await.unwrap().unwrap();
        assert_eq!(row.state, FileState::Queued);
    }
}
