//! What a stop, a crash or a silent node left `uploading`: put back in the
//! queue with its progress (a request that may have created a video counted
//! in doubt), or, with `upload.in_doubt = "fail"`, failed for a person to
//! check. At start-up in SQLite every such row; in a shared journal this
//! node's own and those whose lease ran out (`interrupted_filter`). No I/O
//! besides SQL.

use super::row::to_i64;
use super::sql::args;
use super::{now_ms, Journal, JournalError};
use crate::config::HookEvent;

impl Journal {
    /// At start-up: rows left `uploading` by a process that died are put back
    /// in the queue with their offset and videoId, so they resume. A request
    /// that would have created a video may have been on its way when it died:
    /// that one counts as sent in doubt.
    pub(crate) fn requeue_interrupted(&mut self) -> Result<usize, JournalError> {
        let mine = self.interrupted_filter();
        let unlease = self.unlease();
        self.atomically(|j| j.requeue_uploading(&mine, unlease))
            .inspect(|_| self.swept_own())
    }

    /// [`Journal::requeue_interrupted`]'s rule, in the caller's transaction,
    /// for the uploading rows `filter` (`" AND …"`) selects: a request that
    /// may have created a video counts one send in doubt (and its possible
    /// video an orphan); the row is queued with its progress. `unlease`
    /// holds more `SET` assignments. Also used by `journal export`.
    pub(super) fn requeue_uploading(
        &mut self,
        filter: &str,
        unlease: &str,
    ) -> Result<usize, JournalError> {
        self.orphans_in_doubt_where(
            &format!("state = 'uploading' AND creating = 1{filter}"),
            &[],
        )?;
        self.exec(
            "requeue interrupted uploads",
            &format!(
                "UPDATE files SET state = 'queued', updated_at = ?1, \
                 sends_in_doubt = sends_in_doubt + creating, creating = 0{unlease} \
                 WHERE state = 'uploading'{filter}"
            ),
            args![now_ms()],
        )
    }

    /// At start-up, with `upload.in_doubt = "fail"` (before
    /// [`Journal::requeue_interrupted`]): files sent in one request (of at
    /// most `one_request_max` bytes) whose request may have been on its way
    /// when the process died become `failed` with the reason `why(id)`, for a
    /// person to check. Returns their ids.
    pub(crate) fn fail_interrupted_in_doubt(
        &mut self,
        one_request_max: u64,
        why: &dyn Fn(i64) -> String,
    ) -> Result<Vec<i64>, JournalError> {
        let limit = to_i64(one_request_max);
        let mine = self.interrupted_filter();
        let unlease = self.unlease();
        self.atomically(|j| {
            j.orphans_in_doubt_where(
                &format!("state = 'uploading' AND creating = 1 AND size <= ?1{mine}"),
                args![limit],
            )?;
            j.fail_in_doubt_where(limit, &mine, unlease, why)
        })
    }

    fn fail_in_doubt_where(
        &mut self,
        limit: i64,
        mine: &str,
        unlease: &str,
        why: &dyn Fn(i64) -> String,
    ) -> Result<Vec<i64>, JournalError> {
        const OP: &str = "find uploads in doubt";
        let rows = self.rows(
            OP,
            &format!(
                "SELECT id FROM files WHERE state = 'uploading' AND creating = 1 AND size <= ?1\
                 {mine} ORDER BY id"
            ),
            args![limit],
        )?;
        let ids = self.map_rows(OP, rows, |r| r.i64(0))?;
        let now = now_ms();
        // Each judged again as it is failed (its node may have renewed its
        // lease since), and, in a shared journal, fenced off from it.
        let mut failed = Vec::with_capacity(ids.len());
        for id in &ids {
            let n = self.exec(
                "fail uploads in doubt",
                &format!(
                    "UPDATE files SET state = 'failed', updated_at = ?1, next_attempt_at = NULL, \
                     sends_in_doubt = sends_in_doubt + 1, creating = 0, last_error = ?2{unlease} \
                     WHERE id = ?3 AND state = 'uploading' AND creating = 1{mine}"
                ),
                args![now, why(*id), *id],
            )?;
            if n == 1 {
                self.emit(*id, HookEvent::Failed)?;
                failed.push(*id);
            }
        }
        Ok(failed)
    }
}
