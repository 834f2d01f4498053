//! The SHA-256 of done files: stored by the same transaction that marks a
//! file done, read back for `status` and the sidecar, and looked up for a
//! file that may be a copy of one already uploaded (`duplicates = "skip"`).
//! No I/O besides SQL.

use rusqlite::{params, OptionalExtension};

use super::queries::state_filter;
use super::row::{row_to_file, to_i64, COLUMNS, COLUMN_COUNT};
use super::{FileRow, FileState, Journal, JournalError};
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
            j.mark_done(id, video_id, video_json, note)?;
            let Some(sha256) = sha256 else {
                return Ok(());
            };
            j.conn
                .prepare_cached("UPDATE files SET sha256 = ?2 WHERE id = ?1 AND state = 'done'")
                .and_then(|mut st| st.execute(params![id, sha256]))
                .map_err(j.query_err("store a file's SHA-256"))?;
            Ok(())
        })
    }

    /// The SHA-256 stored for a file: only a done one has one, and not
    /// every done one (those done by an older ingestd have none).
    pub fn sha256(&self, id: i64) -> Result<Option<String>, JournalError> {
        self.conn
            .prepare_cached("SELECT sha256 FROM files WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |r| r.get(0)).optional())
            .map(Option::flatten)
            .map_err(self.query_err("read a file's SHA-256"))
    }

    /// [`Journal::list`], each row with its SHA-256, read in one statement.
    /// A journal opened read-only may still have the schema before the
    /// SHA-256 (`status` while an older ingestd runs): none is known then.
    pub fn list_hashed(
        &self,
        states: Option<&[FileState]>,
    ) -> Result<Vec<(FileRow, Option<String>)>, JournalError> {
        let has_column: bool = self
            .conn
            .query_row(
                "SELECT count(*) > 0 FROM pragma_table_info('files') WHERE name = 'sha256'",
                [],
                |r| r.get(0),
            )
            .map_err(self.query_err("inspect schema"))?;
        let sha256 = if has_column { "sha256" } else { "NULL" };
        let sql = format!(
            "SELECT {COLUMNS}, {sha256} FROM files {} ORDER BY id",
            state_filter(states)
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_map([], |r| Ok((row_to_file(r)?, r.get(COLUMN_COUNT)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(self.query_err("list files"))
    }

    /// The done files other than `id` with this size and content sample, a
    /// SHA-256 and a videoId, oldest first: the ones the file may be a copy of.
    pub fn done_twins(
        &self,
        id: i64,
        size: u64,
        sample: Sample,
    ) -> Result<Vec<DoneTwin>, JournalError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, sha256, video_json FROM files \
                 WHERE sample = ?1 AND size = ?2 AND id != ?3 AND state = 'done' \
                 AND sha256 IS NOT NULL AND video_id IS NOT NULL ORDER BY id"
            ))
            .and_then(|mut st| {
                st.query_map(params![sample.0.to_vec(), to_i64(size), id], |r| {
                    Ok(DoneTwin {
                        row: row_to_file(r)?,
                        sha256: r.get(COLUMN_COUNT)?,
                        video_json: r.get(COLUMN_COUNT + 1)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(self.query_err("look for a done copy of a file"))
    }
}
