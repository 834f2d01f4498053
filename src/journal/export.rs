//! Moving a single-node journal into a shared one (`ingestd journal
//! export`): every row of a SQLite journal (its files with their ids, its
//! orphans and watch roots) copied into an empty PostgreSQL journal in one
//! transaction, so the nodes that take over know every file already sent
//! and never send it again.
//!
//! The source is only read (by older schemas too: a column it lacks is
//! copied as the migration that added it would have set it). Uploads the
//! stopped daemon left `uploading` are queued in the copy by the very rule
//! its next start would have applied ([`Journal::requeue_interrupted`], as
//! with `upload.in_doubt = "resend"`): progress, videoId and chunk plan
//! kept, a request that may have created a video counted one send in doubt.
//! The copies hold no lease (owner and lease NULL, epoch 0).

use super::sql::Value;
use super::{Journal, JournalError};

/// Each column of `files` in the shared journal's schema, the SQLite
/// schema version that has it, and what an older one is read as.
const FILE_COLUMNS: [(&str, i64, &str); 29] = [
    ("id", 1, ""),
    ("root", 1, ""),
    ("rel_path", 1, ""),
    ("size", 1, ""),
    ("mtime_ns", 1, ""),
    ("dev", 1, ""),
    ("inode", 1, ""),
    ("ctime_ns", 3, "NULL"),
    ("sample", 3, "NULL"),
    ("state", 1, ""),
    ("chunk_size", 1, ""),
    ("bytes_uploaded", 1, ""),
    ("video_id", 1, ""),
    ("attempts", 1, ""),
    ("next_attempt_at", 1, ""),
    ("last_error", 1, ""),
    ("created_at", 1, ""),
    ("updated_at", 1, ""),
    ("started_at", 1, ""),
    ("done_at", 1, ""),
    ("video_json", 1, ""),
    ("creating", 2, "0"),
    ("sends_in_doubt", 2, "0"),
    ("sha256", 4, "NULL"),
    ("queue_rank", 5, "0"),
    ("queue_key", 5, "0"),
    ("playable_at", 5, "NULL"),
    ("playable_poll_at", 5, "NULL"),
    ("playable_note", 5, "NULL"),
];

const ORPHAN_COLUMNS: &str = "id, file_id, root, rel_path, video_id, at, why";
const ROOT_COLUMNS: &str = "root, dev, inode, mount_point, seen_at";
/// The SQLite schema version that added `orphans` and `roots`.
const ORPHANS_SINCE: i64 = 3;

/// What an export copied, counted in the shared journal once it committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub files: u64,
    pub done: u64,
    pub failed: u64,
    /// Queued or retrying with nothing sent yet.
    pub waiting: u64,
    /// Queued or retrying with bytes already on a video: they resume there.
    pub half_uploaded: u64,
    /// Settling (not yet settled) or gone (vanished before it was sent).
    pub other: u64,
    /// Of the files, those the daemon left uploading (now queued), and of
    /// those, the ones whose creating request may have been on its way.
    pub interrupted: u64,
    pub in_doubt: u64,
    pub orphans: u64,
    pub roots: u64,
}

impl Journal {
    /// Copies this SQLite journal into `target`, an empty shared journal,
    /// in one transaction (nothing is copied unless everything is). Refused
    /// when `target` already holds a file, an orphan or a watch root. The
    /// caller holds this journal's lock: no daemon writes it meanwhile.
    pub fn export_into(&self, target: &mut Journal) -> Result<ExportReport, JournalError> {
        if self.is_postgres() || !target.is_postgres() {
            return Err(JournalError::ExportRefused {
                reason: "an export copies a SQLite journal into a PostgreSQL one".into(),
            });
        }
        let version = self.schema_version()?;
        let columns: Vec<&str> = FILE_COLUMNS.iter().map(|(name, _, _)| *name).collect();
        let read: Vec<&str> = FILE_COLUMNS
            .iter()
            .map(|&(name, since, default)| if version >= since { name } else { default })
            .collect();
        let files = self.rows(
            "read the files to export",
            &format!("SELECT {} FROM files ORDER BY id", read.join(", ")),
            &[],
        )?;
        let (orphans, roots) = if version >= ORPHANS_SINCE {
            (
                self.rows(
                    "read the orphans to export",
                    &format!("SELECT {ORPHAN_COLUMNS} FROM orphans ORDER BY id"),
                    &[],
                )?,
                self.rows(
                    "read the watch roots to export",
                    &format!("SELECT {ROOT_COLUMNS} FROM roots ORDER BY root"),
                    &[],
                )?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        target.atomically(|t| {
            t.refuse_unless_empty()?;
            t.insert_all("files", &columns.join(", "), files)?;
            t.insert_all("orphans", ORPHAN_COLUMNS, orphans)?;
            t.insert_all("roots", ROOT_COLUMNS, roots)?;
            for table in ["files", "orphans"] {
                t.exec(
                    "move the ids past the exported ones",
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
                    ),
                    &[],
                )?;
            }
            let interrupted = t.count("SELECT count(*) FROM files WHERE state = 'uploading'")?;
            let in_doubt = t.count(
                "SELECT count(*) FROM files WHERE state = 'uploading' AND creating = 1",
            )?;
            // Every uploading row is a copied one: the target was empty, and
            // stays locked until the commit.
            t.requeue_uploading("", "")?;
            let mut report = t.export_counts()?;
            report.interrupted = interrupted;
            report.in_doubt = in_doubt;
            Ok(report)
        })
    }

    /// Refuses a journal that holds anything, after locking its tables
    /// against writers until the transaction ends (a node started too
    /// early waits, then sees the copy).
    fn refuse_unless_empty(&self) -> Result<(), JournalError> {
        self.batch(
            "lock the journal",
            "LOCK TABLE files, orphans, roots IN EXCLUSIVE MODE",
        )?;
        let files = self.count("SELECT count(*) FROM files")?;
        let orphans = self.count("SELECT count(*) FROM orphans")?;
        let roots = self.count("SELECT count(*) FROM roots")?;
        if files + orphans + roots == 0 {
            return Ok(());
        }
        Err(JournalError::ExportRefused {
            reason: format!(
                "the journal {} holds {files} files (and {orphans} orphan videos, {roots} \
                 watch roots); export only into an empty journal (a fresh database, or one \
                 where no node ran yet)",
                self.path.display()
            ),
        })
    }

    /// Inserts `rows` (in `columns`' order) into `table`.
    fn insert_all(
        &self,
        table: &str,
        columns: &str,
        rows: Vec<super::sql::SqlRow>,
    ) -> Result<(), JournalError> {
        let n = columns.split(',').count();
        let placeholders: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({columns}) VALUES ({})",
            placeholders.join(", ")
        );
        for row in rows {
            let values: Vec<Value> = row.into_values();
            self.exec("copy a row", &sql, &values)?;
        }
        Ok(())
    }

    fn count(&self, sql: &str) -> Result<u64, JournalError> {
        let n = self.scalar("count the exported rows", sql, &[])?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    /// The rows of this journal, as [`ExportReport`] counts them.
    fn export_counts(&self) -> Result<ExportReport, JournalError> {
        const WAITING: &str = "state IN ('queued', 'retrying')";
        let c = |filter: &str| self.count(&format!("SELECT count(*) FROM files WHERE {filter}"));
        let files = self.count("SELECT count(*) FROM files")?;
        let done = c("state = 'done'")?;
        let failed = c("state = 'failed'")?;
        let half_uploaded = c(&format!("{WAITING} AND bytes_uploaded > 0"))?;
        let waiting = c(WAITING)?.saturating_sub(half_uploaded);
        Ok(ExportReport {
            files,
            done,
            failed,
            waiting,
            half_uploaded,
            other: files.saturating_sub(done + failed + waiting + half_uploaded),
            interrupted: 0,
            in_doubt: 0,
            orphans: self.count("SELECT count(*) FROM orphans")?,
            roots: self.count("SELECT count(*) FROM roots")?,
        })
    }
}
