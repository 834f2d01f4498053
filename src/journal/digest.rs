//! The SHA-256 of done files: stored by the same transaction that marks a
//! file done, read back for `status` and the sidecar, and looked up for a
//! file that may be a copy of one already uploaded (`duplicates = "skip"`).
//! No I/O besides SQL.

use super::queries::state_filter;
use super::row::{row_to_file, to_i64, COLUMNS, COLUMN_COUNT};
use super::sql::args;
use super::{FileRow, FileState, Journal, JournalError};
use crate::config::HookEvent;
use crate::sample::Sample;

/// A done file another one may be a copy of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneTwin {
    pub row: FileRow,
    /// Its whole content's SHA-256, lowercase hex.
    pub sha256: String,
    /// The Video object of the reply that completed its upload (JSON).
    pub video_json: Option<String>,
}

impl Journal {
    /// [`Journal::mark_done`], and the file's SHA-256 (lowercase hex), when
    /// known, stored in the same transaction.
    pub fn mark_done_hashed(
        &mut self,
        id: i64,
        video_id: Option<&str>,
        video_json: Option<&str>,
        note: Option<&str>,
        sha256: Option<&str>,
    ) -> Result<(), JournalError> {
        self.atomically(|j| {
            j.done_without_event(id, video_id, video_json, note)?;
            if let Some(sha256) = sha256 {
                j.exec(
                    "store a file's SHA-256",
                    "UPDATE files SET sha256 = ?2 WHERE id = ?1 AND state = 'done'",
                    args![id, sha256],
                )?;
            }
            // After the SHA-256: the event carries it.
            j.emit(id, HookEvent::Uploaded)
        })
    }

    /// The SHA-256 stored for a file: only a done one has one, and not
    /// every done one (those done by an older ingestd have none).
    pub fn sha256(&self, id: i64) -> Result<Option<String>, JournalError> {
        self.text_of("read a file's SHA-256", "sha256", id)
    }

    /// [`Journal::list`], each row with its SHA-256, read in one statement.
    /// A journal opened read-only may still have the schema before the
    /// SHA-256 (`status` while an older ingestd runs): none is known then.
    pub fn list_hashed(
        &self,
        states: Option<&[FileState]>,
    ) -> Result<Vec<(FileRow, Option<String>)>, JournalError> {
        // A PostgreSQL journal has had the column from its first version.
        let has_column = self.is_postgres()
            || self
                .scalar(
                    "inspect schema",
                    "SELECT count(*) FROM pragma_table_info('files') WHERE name = 'sha256'",
                    &[],
                )?
                .unwrap_or(0)
                > 0;
        let sha256 = if has_column { "sha256" } else { "NULL" };
        let sql = format!(
            "SELECT {COLUMNS}, {sha256} FROM files {} ORDER BY id",
            state_filter(states)
        );
        const OP: &str = "list files";
        let rows = self.rows(OP, &sql, &[])?;
        self.map_rows(OP, rows, |r| {
            Ok((row_to_file(r)?, r.opt_text(COLUMN_COUNT)?))
        })
    }

    /// The done files other than `id` with this size and content sample, a
    /// SHA-256 and a videoId, oldest first: the ones the file may be a copy of.
    pub fn done_twins(
        &self,
        id: i64,
        size: u64,
        sample: Sample,
    ) -> Result<Vec<DoneTwin>, JournalError> {
        const OP: &str = "look for a done copy of a file";
        let rows = self.rows(
            OP,
            &format!(
                "SELECT {COLUMNS}, sha256, video_json FROM files \
                 WHERE sample = ?1 AND size = ?2 AND id != ?3 AND state = 'done' \
                 AND sha256 IS NOT NULL AND video_id IS NOT NULL ORDER BY id"
            ),
            args![sample.0.to_vec(), to_i64(size), id],
        )?;
        self.map_rows(OP, rows, |r| {
            Ok(DoneTwin {
                row: row_to_file(r)?,
                sha256: r.text(COLUMN_COUNT)?,
                video_json: r.opt_text(COLUMN_COUNT + 1)?,
            })
        })
    }
}
