//! Reading the journal: claiming the next file due, single rows, listings,
//! counts and the monitoring figures. Apart from the claim (queued or
//! retrying → uploading, guarded in its `WHERE`), nothing here changes a row.
//! No I/O besides SQL.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::row::{path_from_blob, row_to_file, to_u64, COLUMNS};
use super::sql::{args, Value};
use super::{FileRow, FileState, Journal, JournalError};
use crate::config::QueueOrder;

/// Which files a query of the queue looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every file.
    All,
    /// These ids: a short list, written into the statement.
    Ids(&'a [i64]),
    /// The files of this connection's foreground batch
    /// ([`Journal::set_batch`]): however many, the statement stays the same
    /// size, so a claim costs the same at 100,000 files as at 100.
    Batch,
}

impl<'a> From<Option<&'a [i64]>> for Scope<'a> {
    fn from(only: Option<&'a [i64]>) -> Self {
        only.map_or(Scope::All, Scope::Ids)
    }
}

/// Where a queued file stands in the queue: a claim takes the lowest
/// `(rank, key, id)`. Set when the file is queued; a retry, a release or
/// the requeue of an interrupted upload keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePlace {
    /// The index of the first of its folder's `priority` patterns it
    /// matches, or [`QueuePlace::UNMATCHED`].
    pub rank: i64,
    /// Its folder's `order`, which makes its key within the rank from the
    /// row's own size or mtime.
    pub order: QueueOrder,
}

impl QueuePlace {
    /// The rank of a file matching no `priority` pattern: one for every
    /// folder (not the number of its patterns), so that a folder's priority
    /// files go before the other files of every folder, and the rest of all
    /// folders share a rank. (Rows queued before the queue had an order have
    /// rank 0: they go first.)
    pub const UNMATCHED: i64 = 1_000_000;

    /// No priority, oldest first: a file outside any watch folder, or of a
    /// folder with the default settings.
    pub const DEFAULT: QueuePlace = QueuePlace {
        rank: QueuePlace::UNMATCHED,
        order: QueueOrder::Oldest,
    };

    /// The place of a file matching priority pattern `index` (`None`: none),
    /// in a folder of `order`.
    pub fn new(index: Option<usize>, order: QueueOrder) -> QueuePlace {
        let rank = index.map_or(QueuePlace::UNMATCHED, |i| {
            i64::try_from(i).map_or(QueuePlace::UNMATCHED, |i| i.min(QueuePlace::UNMATCHED))
        });
        QueuePlace { rank, order }
    }

    /// The SQL expression of the key, over the row's own columns: the
    /// lowest goes first. Names of ours, so inlining it is safe. Descending
    /// is `-1 - x` rather than `-x`, which overflows for the lowest integer
    /// (a file dated before 1678 has that mtime).
    pub(super) fn key_sql(self) -> &'static str {
        match self.order {
            QueueOrder::Oldest => "mtime_ns",
            QueueOrder::Newest => "-1 - mtime_ns",
            QueueOrder::Smallest => "size",
            QueueOrder::Largest => "-1 - size",
        }
    }
}

/// `AND +id IN (…)` restricting a query to `scope`, or nothing. The `+`
/// keeps SQLite from driving a search by the scope's ids: a claim must walk
/// the queue in order (see [`claim_sql`]), or it sorts every file of the
/// batch on every claim.
pub(super) fn scope_filter(scope: Scope<'_>) -> String {
    match scope {
        Scope::All => String::new(),
        Scope::Ids(ids) => format!("AND +id IN {}", id_list(ids)),
        Scope::Batch => format!("AND +id IN (SELECT id FROM {BATCH})"),
    }
}

/// The foreground batch's table: a temporary one, the connection's own, in
/// SQLite as in PostgreSQL.
const BATCH: &str = "temp_batch";

/// `AND id IN (…)` restricting a query to `only`, or nothing.
pub(super) fn id_filter(only: Option<&[i64]>) -> String {
    only.map_or_else(String::new, |ids| format!("AND id IN {}", id_list(ids)))
}

/// `(1,2,3)`. Ids are integers, so inlining them is safe.
fn id_list(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("({})", ids.join(","))
}

/// The claim statement for a scope `filter` (see [`scope_filter`]).
pub(super) fn claim_sql(filter: &str) -> String {
    // Two arms, so that neither sorts the queue: a queued file has no
    // `next_attempt_at`, and `files_by_queue` (state, queue_rank,
    // queue_key, id, of those rows only) hands the first one in queue
    // order; the due retries are few, sorted apart. The two candidates are
    // compared in the same order.
    format!(
        "UPDATE files SET state = 'uploading', started_at = ?1, updated_at = ?1 \
         WHERE id = (SELECT id FROM ( \
           SELECT * FROM (SELECT id, queue_rank, queue_key FROM files \
             WHERE state = 'queued' AND next_attempt_at IS NULL {filter} \
             ORDER BY queue_rank, queue_key, id LIMIT 1) AS fresh \
           UNION ALL \
           SELECT * FROM (SELECT id, queue_rank, queue_key FROM files \
             WHERE state IN ('queued', 'retrying') AND next_attempt_at IS NOT NULL \
               AND (next_attempt_at <= ?1 OR next_attempt_at > ?2) {filter} \
             ORDER BY queue_rank, queue_key, id LIMIT 1) AS due) AS candidates \
           ORDER BY queue_rank, queue_key, id LIMIT 1) \
         RETURNING {COLUMNS}"
    )
}

/// `WHERE state IN (…)` restricting a listing to `states`, or nothing.
/// States are names of ours, so inlining them is safe.
pub(super) fn state_filter(states: Option<&[FileState]>) -> String {
    match states {
        Some(states) => {
            let s: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
            format!("WHERE state IN ({})", s.join(", "))
        }
        None => String::new(),
    }
}

impl Journal {
    /// Claims the next file due for upload (queued, or retrying whose backoff
    /// expired), first in queue order ([`QueuePlace`]), and marks it
    /// `uploading`. With `only`, claims only among those ids. A
    /// `next_attempt_at` further in the future than `max_backoff` (the clock
    /// jumped back) counts as due.
    pub fn claim_next(
        &mut self,
        now: i64,
        max_backoff: Duration,
        only: Option<&[i64]>,
    ) -> Result<Option<FileRow>, JournalError> {
        self.claim_next_skipping(now, max_backoff, only.into(), &[])
    }

    /// [`Journal::claim_next`], passing over files under `skip_roots` (watch
    /// folders that are unavailable: their files wait with their progress).
    pub(crate) fn claim_next_skipping(
        &mut self,
        now: i64,
        max_backoff: Duration,
        scope: Scope<'_>,
        skip_roots: &[PathBuf],
    ) -> Result<Option<FileRow>, JournalError> {
        let horizon = now.saturating_add(i64::try_from(max_backoff.as_millis()).unwrap_or(0));
        if scope == Scope::Ids(&[]) {
            return Ok(None);
        }
        let mut filter = scope_filter(scope);
        if !skip_roots.is_empty() {
            // Roots are bytes: inlined as hex BLOB literals, which cannot
            // break out of the statement.
            let roots: Vec<String> = skip_roots
                .iter()
                .map(|r| self.blob_literal(r.as_os_str().as_bytes()))
                .collect();
            filter.push_str(&format!(" AND root NOT IN ({})", roots.join(", ")));
        }
        if self.is_postgres() {
            return self.claim_leased(now, horizon, &filter);
        }
        let sql = claim_sql(&filter);
        let rows = self.select("claim a file", &sql, args![now, horizon])?;
        Ok(rows.into_iter().next())
    }

    pub fn get(&self, id: i64) -> Result<Option<FileRow>, JournalError> {
        let rows = self.select_rows("read a file", "WHERE id = ?1", args![id])?;
        Ok(rows.into_iter().next())
    }

    /// All rows (in id order), or those in `states`.
    pub fn list(&self, states: Option<&[FileState]>) -> Result<Vec<FileRow>, JournalError> {
        let filter = state_filter(states);
        self.select_rows("list files", &format!("{filter} ORDER BY id"), &[])
    }

    /// The rows `SELECT {COLUMNS} FROM files <tail>` finds, `args` bound.
    pub(super) fn select_rows(
        &self,
        op: &'static str,
        tail: &str,
        args: &[Value],
    ) -> Result<Vec<FileRow>, JournalError> {
        self.select(op, &format!("SELECT {COLUMNS} FROM files {tail}"), args)
    }

    /// The rows of a statement returning [`COLUMNS`].
    pub(super) fn select(
        &self,
        op: &'static str,
        sql: &str,
        args: &[Value],
    ) -> Result<Vec<FileRow>, JournalError> {
        let rows = self.rows(op, sql, args)?;
        self.map_rows(op, rows, row_to_file)
    }

    /// How many files are in each state.
    pub fn counts(&self) -> Result<BTreeMap<FileState, u64>, JournalError> {
        const OP: &str = "count files";
        let rows = self.rows(OP, "SELECT state, count(*) FROM files GROUP BY state", &[])?;
        let rows = self.map_rows(OP, rows, |r| Ok((r.text(0)?, r.i64(1)?)))?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| Some((FileState::from_str(&s).ok()?, to_u64(n))))
            .collect())
    }

    /// Makes `ids` this connection's foreground batch ([`Scope::Batch`]),
    /// replacing any earlier one. A temporary table: it is the run's, and
    /// goes with the connection (a crash leaves nothing behind).
    pub(crate) fn set_batch(&mut self, ids: &[i64]) -> Result<(), JournalError> {
        const OP: &str = "start a batch";
        self.atomically(|j| {
            j.batch(
                OP,
                &format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {BATCH} (id BIGINT PRIMARY KEY); \
                     DELETE FROM {BATCH};"
                ),
            )?;
            let sql = format!("INSERT INTO {BATCH} (id) VALUES (?1) ON CONFLICT DO NOTHING");
            for id in ids {
                j.exec(OP, &sql, args![*id])?;
            }
            Ok(())
        })
    }

    /// `id` leaves the foreground batch: this run is done with it.
    pub(crate) fn leave_batch(&mut self, id: i64) -> Result<(), JournalError> {
        self.exec(
            "leave the batch",
            &format!("DELETE FROM {BATCH} WHERE id = ?1"),
            args![id],
        )
        .map(|_| ())
    }

    /// The earliest `next_attempt_at` of a retrying file (to sleep until).
    pub(crate) fn next_retry_at(&self, scope: Scope<'_>) -> Result<Option<i64>, JournalError> {
        let filter = scope_filter(scope);
        self.scalar(
            "find the next retry",
            &format!("SELECT min(next_attempt_at) FROM files WHERE state = 'retrying' {filter}"),
            &[],
        )
    }

    /// How many of the files of `scope` still have work ahead of them.
    pub(crate) fn unfinished(&self, scope: Scope<'_>) -> Result<u64, JournalError> {
        let filter = scope_filter(scope);
        self.scalar(
            "count unfinished files",
            &format!(
                "SELECT count(*) FROM files WHERE state IN \
                 ('settling', 'queued', 'uploading', 'retrying') {filter}"
            ),
            &[],
        )
        .map(|n| to_u64(n.unwrap_or(0)))
    }

    /// How many files under each root still have work ahead of them
    /// (settling, queued, uploading, retrying), for monitoring. Roots with
    /// none are absent.
    pub(crate) fn unfinished_by_root(&self) -> Result<BTreeMap<PathBuf, u64>, JournalError> {
        const OP: &str = "count unfinished files by folder";
        let rows = self.rows(
            OP,
            "SELECT root, count(*) FROM files WHERE state IN \
             ('settling', 'queued', 'uploading', 'retrying') GROUP BY root",
            &[],
        )?;
        let rows = self.map_rows(OP, rows, |r| Ok((r.bytes(0)?, r.i64(1)?)))?;
        Ok(rows
            .into_iter()
            .map(|(root, n)| (path_from_blob(root), to_u64(n)))
            .collect())
    }

    /// When the file waiting longest for an upload (queued or retrying) was
    /// journaled, in Unix milliseconds; `None` when nothing waits.
    pub(crate) fn oldest_waiting_since(&self) -> Result<Option<i64>, JournalError> {
        self.scalar(
            "find the oldest waiting file",
            "SELECT min(created_at) FROM files WHERE state IN ('queued', 'retrying')",
            &[],
        )
    }

    /// Every row of one watch root (the reconcile scan loads a folder once
    /// instead of asking about each file).
    pub(crate) fn rows_under(&self, root: &Path) -> Result<Vec<FileRow>, JournalError> {
        self.select_rows(
            "list a watch folder",
            "WHERE root = ?1 ORDER BY id",
            args![root.as_os_str().as_bytes()],
        )
    }

    /// Every row (any identity, any state) journaled for `root/rel_path`.
    pub(crate) fn rows_at(
        &self,
        root: &Path,
        rel_path: &Path,
    ) -> Result<Vec<FileRow>, JournalError> {
        self.select_rows(
            "look up a path",
            "WHERE root = ?1 AND rel_path = ?2 ORDER BY id",
            args![root.as_os_str().as_bytes(), rel_path.as_os_str().as_bytes()],
        )
    }

    /// The Video object (JSON) of the reply that completed a file's upload.
    pub(crate) fn video_json(&self, id: i64) -> Result<Option<String>, JournalError> {
        self.text_of("read a file's video", "video_json", id)
    }

    /// One text column of a row, if the row is there and the column set.
    pub(super) fn text_of(
        &self,
        op: &'static str,
        column: &str,
        id: i64,
    ) -> Result<Option<String>, JournalError> {
        let sql = format!("SELECT {column} FROM files WHERE id = ?1");
        match self.row(op, &sql, args![id])? {
            Some(r) => r.opt_text(0).map_err(self.query_err(op)),
            None => Ok(None),
        }
    }
}
