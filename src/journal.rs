//! The journal: one table of files, the only queue of the daemon, in SQLite
//! (one machine) or PostgreSQL (several nodes).
//!
//! Every SQL statement of the project lives in this module. Each state
//! transition is one method and one statement guarded by the expected current
//! state, so a transition that lost a race (or a bug) is an error, never a
//! silent overwrite. Both clients are synchronous: the [`Journal`] has one
//! owner thread and async code reaches it through [`JournalHandle`].
//!
//! # Layout
//!
//! - `sql`: the one way statements run, on either database.
//! - `open`: the SQLite file, its checks and the migrations.
//! - `row`: [`FileState`], [`FileIdentity`], [`FileRow`] and their columns.
//! - `transitions`: journaling files and every guarded state change.
//! - `interrupted`: the uploads a stop, a crash or a silent node left.
//! - `queries`: the claim, single rows, listings and counts.
//! - `identity`: content samples, re-identification, revival, watch roots, orphans.
//! - `digest`: the SHA-256 of done files, and the done files a file may be a copy of.
//! - `handle`: the owner thread and [`JournalHandle`].
//! - `postgres`: the shared journal (connecting, its schema, the leases).
//! - `nodes`: its nodes, the lead of each watch folder, the path lock.
//! - `outbox`: the events of files and their deliveries to hooks.
//! - `playable`: watching done videos until they play.
//! - `export`: a SQLite journal copied into an empty shared one.
//!
//! This file holds the [`Journal`] itself, its errors and the transaction
//! wrapper every multi-statement method uses.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::ErrorCode;

use sql::{Conn, DbError};

mod digest;
mod export;
mod handle;
mod identity;
mod interrupted;
mod lock;
mod nodes;
mod open;
mod outbox;
mod playable;
mod postgres;
mod queries;
mod row;
pub(crate) mod sql;
mod transitions;

pub use digest::DoneTwin;
pub use export::ExportReport;
pub use handle::JournalHandle;
pub use identity::{Orphan, RootRecord};
pub use lock::{lock_journal, lock_path, mark_lock, LockError};
pub use nodes::NodeRecord;
pub(crate) use outbox::rfc3339;
pub use outbox::{DueDelivery, HookBacklog, PendingDelivery};
pub use playable::{PlayableStates, PlayableWatch};
pub use postgres::PgTarget;
pub use queries::{QueuePlace, Scope};
pub(crate) use row::Resettled;
pub use row::{Added, FileIdentity, FileRow, FileState};
pub use transitions::RetryOutcome;

/// Milliseconds since the Unix epoch: the journal's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
        source: DbError,
    },
    #[error("cannot reach the journal's database {url}: {cause}; {todo}")]
    Connect {
        url: String,
        cause: String,
        todo: &'static str,
    },
    #[error("the journal's database {url} is not an ingestd journal ({reason}); refusing to use it. Point journal.url at ingestd's own database (an empty one is set up on first start)")]
    ForeignDatabase { url: String, reason: String },
    #[error("the journal's database {url} has schema version {found}, but this ingestd knows only up to {supported}: it was set up by a newer ingestd. Upgrade ingestd on this node (the journal was left untouched)")]
    DatabaseTooNew {
        url: String,
        found: i64,
        supported: usize,
    },
    #[error("the node name {node:?} is in use by another ingestd (on {host}, pid {pid}, heard from {}s ago); give this node its own journal.node (INGESTD_JOURNAL__NODE), or stop the other one", ago_ms / 1000)]
    NodeInUse {
        node: String,
        host: String,
        pid: i64,
        ago_ms: i64,
    },
    #[error("this journal is not shared: --nodes lists the nodes of a journal in PostgreSQL (journal.url)")]
    NotShared,
    #[error("file {id}: this node's lease on it was lost (another node took it over after it went silent for longer than journal.lease); its upload stops here, nothing more is written or sent for it")]
    LeaseLost { id: i64 },
    #[error("file {id} is {}, not {expected}: {op} refused", actual.map_or("not in the journal", FileState::as_str))]
    WrongState {
        op: &'static str,
        id: i64,
        expected: &'static str,
        actual: Option<FileState>,
    },
    #[error("refusing: {reason}")]
    ExportRefused { reason: String },
    #[error("the journal thread has stopped")]
    Closed,
}

fn disk_hint(e: &DbError) -> &'static str {
    if e.is_unreachable() {
        return " (the database is away; everything that needs the journal waits for it)";
    }
    match e.sqlite_code() {
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

impl JournalError {
    /// SQLite could not write for lack of space (`SQLITE_FULL`, which is
    /// also what `ENOSPC` becomes). The statement was rolled back, so the
    /// same call can be made again once there is room.
    pub(crate) fn is_disk_full(&self) -> bool {
        matches!(self, JournalError::Query { source, .. }
            if source.sqlite_code() == Some(ErrorCode::DiskFull))
    }

    /// The journal's database could not be reached, or the connection
    /// broke: the same call can be made again once it is back.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(self, JournalError::Query { source, .. } if source.is_unreachable())
            || matches!(self, JournalError::Connect { .. })
    }
}

/// The journal, in SQLite or PostgreSQL. Not `Sync`: give it one owner
/// ([`JournalHandle`]).
pub struct Journal {
    conn: Conn,
    /// The SQLite file, or the PostgreSQL URL without its password.
    path: PathBuf,
    /// In a journal shared by several nodes: this node's name and leases.
    cluster: Option<postgres::Cluster>,
    /// Which events to write for which hooks (none until set).
    outbox: outbox::Outbox,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn query_err<E: Into<DbError>>(&self, op: &'static str) -> impl FnOnce(E) -> JournalError + '_ {
        move |source| self.classify(op, source.into())
    }

    fn classify(&self, op: &'static str, source: DbError) -> JournalError {
        match source.sqlite_code() {
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

    /// Runs `f` as one transaction: its writes are all committed or none is
    /// (so a caller may run it again after an error, e.g. a full disk).
    pub(crate) fn atomically<R>(
        &mut self,
        f: impl FnOnce(&mut Journal) -> Result<R, JournalError>,
    ) -> Result<R, JournalError> {
        // Called inside another `atomically`, this is a nested savepoint: an
        // error undoes only its own writes, and the caller decides.
        let outermost = self.begin()?;
        let r = f(self).and_then(|r| {
            self.commit(outermost)?;
            Ok(r)
        });
        if r.is_err() {
            self.roll_back(outermost);
        }
        if outermost {
            self.settle_leases(r.is_ok());
        }
        r
    }
}

#[cfg(test)]
mod tests;
