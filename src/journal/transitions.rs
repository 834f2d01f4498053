//! Every write of a row: journaling new files and each state change. A change
//! of one known row goes through the guarded `Journal::transition` (many
//! rows: `transition_many`), so a transition that lost a race is an error,
//! never a silent overwrite; `make_due` is a single `UPDATE` guarded by the
//! state in its `WHERE` (the sweeps of interrupted uploads are `interrupted`'s).
//! No I/O besides SQL.

use std::os::unix::ffi::OsStrExt;

use super::queries::{id_filter, QueuePlace};
use super::row::to_i64;
use super::sql::{args, Value};
use super::{now_ms, Added, FileIdentity, FileState, Journal, JournalError, Resettled};
use crate::config::HookEvent;
use crate::sample::Sample;

/// What `retry` did to each id.
pub type RetryOutcome = Vec<(i64, Result<(), JournalError>)>;

impl Journal {
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
        let shared = self.is_postgres();
        self.atomically(|j| {
            j.lock_paths(
                files
                    .iter()
                    .map(|f| (f.root.as_path(), f.rel_path.as_path())),
            )?;
            let mut out = Vec::with_capacity(files.len());
            for f in files {
                // A `gone` row is not found here: whether the file is back
                // as it was is for its sample to say, once it settles.
                // In a shared journal the hints are another machine's (each
                // numbers the devices of its own mounts): a live row at the
                // path with the file's size and mtime is the file, found by
                // another node's scan; its sample decides when it settles.
                let same = j.rows_at(&f.root, &f.rel_path)?.into_iter().find(|r| {
                    r.state != FileState::Gone
                        && (r.identity.same_hints(f)
                            || (shared
                                && r.identity.size == f.size
                                && r.identity.mtime_ns == f.mtime_ns))
                });
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
    pub(super) fn insert(
        &mut self,
        f: &FileIdentity,
        sample: Option<Sample>,
        state: FileState,
    ) -> Result<i64, JournalError> {
        let now = now_ms();
        // A row journaled `queued` has the default place (see
        // `QueuePlace::DEFAULT`: oldest first) unless its caller places it;
        // a settling one gets its place when it is queued.
        let row = self.row(
            "add files",
            "INSERT INTO files (root, rel_path, size, mtime_ns, dev, inode, ctime_ns, sample, \
             state, created_at, updated_at, queue_rank, queue_key) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?4) \
             RETURNING id",
            args![
                f.root.as_os_str().as_bytes(),
                f.rel_path.as_os_str().as_bytes(),
                to_i64(f.size),
                f.mtime_ns,
                to_i64(f.dev),
                to_i64(f.inode),
                f.ctime_ns,
                sample.as_ref().map(|s| s.0.to_vec()),
                state.as_str(),
                now,
                QueuePlace::DEFAULT.rank
            ],
        )?;
        match row {
            Some(r) => r.i64(0).map_err(self.query_err("add files")),
            None => Err(JournalError::Closed),
        }
    }

    /// One guarded transition: `sql` must update the row `id` only when it is
    /// in one of the `from` states (bound as ?1 = id; the states are inlined).
    pub(super) fn transition(
        &mut self,
        op: &'static str,
        id: i64,
        from: &[FileState],
        set: &str,
        extra: &[Value],
    ) -> Result<(), JournalError> {
        let states: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let mut sql = format!(
            "UPDATE files SET {set}, updated_at = ?2 WHERE id = ?1 AND state IN ({})",
            states.join(", ")
        );
        let mut args = vec![Value::Int(id), Value::Int(now_ms())];
        args.extend_from_slice(extra);
        // In a shared journal, a write of an upload this node claimed names
        // the claim's epoch: a node whose lease was taken over writes nothing.
        let fenced = from.contains(&FileState::Uploading);
        if let Some((cond, epoch)) = self.fence(id, args.len() + 1).filter(|_| fenced) {
            sql.push_str(&cond);
            args.extend(epoch);
        }
        let changed = self.exec(op, &sql, &args)?;
        if changed == 1 {
            // Every transition that sets a state leaves `uploading`.
            if set.starts_with("state = ") {
                self.forget_lease(id);
            }
            return Ok(());
        }
        if fenced && self.lost_lease(id)? {
            return Err(JournalError::LeaseLost { id });
        }
        let actual = self.get(id)?.map(|r| r.state);
        Err(JournalError::WrongState {
            op,
            id,
            expected: from.first().map_or("", |s| s.as_str()),
            actual,
        })
    }

    /// settling → queued at `place`: the file stopped changing.
    pub fn mark_ready(&mut self, id: i64, place: QueuePlace) -> Result<(), JournalError> {
        self.transition(
            "mark ready",
            id,
            &[FileState::Settling],
            &queued_at(place, 3),
            args![place.rank],
        )
    }

    /// Puts rows just journaled `queued` (`ingestd upload FILE`) at their
    /// place, in the caller's transaction. A row in another state (found,
    /// not inserted) keeps its own.
    pub(crate) fn place_queued(
        &mut self,
        placed: &[(i64, QueuePlace)],
    ) -> Result<(), JournalError> {
        for (id, place) in placed {
            self.exec(
                "place in the queue",
                &format!(
                    "UPDATE files SET queue_rank = ?2, queue_key = {} \
                     WHERE id = ?1 AND state = 'queued' AND next_attempt_at IS NULL",
                    place.key_sql()
                ),
                args![*id, place.rank],
            )?;
        }
        Ok(())
    }

    /// Fixes the chunk plan of an upload before its first chunk (kept if set),
    /// and notes whether this attempt may create a video (no videoId yet).
    pub fn set_chunk_size(&mut self, id: i64, chunk_size: u64) -> Result<u64, JournalError> {
        self.transition(
            "fix the chunk plan",
            id,
            &[FileState::Uploading],
            "chunk_size = coalesce(chunk_size, ?3), \
             creating = CASE WHEN video_id IS NULL THEN 1 ELSE 0 END",
            args![to_i64(chunk_size)],
        )?;
        let row = self.get(id)?;
        Ok(row.and_then(|r| r.chunk_size).unwrap_or(chunk_size))
    }

    /// A chunk was acknowledged: commit the videoId and the new offset, and
    /// reset the backoff (progress was made). Must commit before the next chunk.
    pub(crate) fn record_progress(
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
            args![video_id, to_i64(bytes_uploaded)],
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
        self.atomically(|j| {
            j.done_without_event(id, video_id, video_json, note)?;
            j.emit(id, HookEvent::Uploaded)
        })
    }

    /// [`Journal::mark_done`] but the `uploaded` event, which the caller
    /// emits in the same transaction once the row holds all it will (the
    /// event's JSON is frozen when it is written).
    pub(super) fn done_without_event(
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
            args![video_id, video_json, note],
        )?;
        self.start_playable_watch(id)
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
            args![attempts, next_attempt_at, error],
        )
    }

    /// Makes these retrying files due at `now` (what they were waiting out
    /// is over: the server answers again). Their attempts are kept, so the
    /// next failure backs off further. Returns how many were moved.
    pub(crate) fn make_due(&mut self, ids: &[i64], now: i64) -> Result<usize, JournalError> {
        let mut moved = 0;
        // In slices, so that a large backlog never makes an over-long statement.
        for slice in ids.chunks(500) {
            let filter = id_filter(Some(slice));
            moved += self.exec(
                "make retries due",
                &format!(
                    "UPDATE files SET next_attempt_at = ?1, updated_at = ?1 \
                     WHERE state = 'retrying' AND next_attempt_at > ?1 {filter}"
                ),
                args![now],
            )?;
        }
        Ok(moved)
    }

    /// A permanent error: the file waits for `ingestd retry`.
    pub fn mark_failed(&mut self, id: i64, error: &str) -> Result<(), JournalError> {
        self.atomically(|j| {
            j.transition(
                "mark failed",
                id,
                &[
                    FileState::Uploading,
                    FileState::Queued,
                    FileState::Retrying,
                    FileState::Settling,
                ],
                "state = 'failed', last_error = ?3, next_attempt_at = NULL, creating = 0",
                args![error],
            )?;
            j.emit(id, HookEvent::Failed)
        })
    }

    /// A permanent error that also voids the upload's progress (the server
    /// no longer has the partial video): `ingestd retry` starts it over.
    pub(crate) fn mark_failed_restart(&mut self, id: i64, error: &str) -> Result<(), JournalError> {
        self.atomically(|j| {
            j.transition(
                "mark failed",
                id,
                &[FileState::Uploading],
                "state = 'failed', last_error = ?3, next_attempt_at = NULL, video_id = NULL, \
                 bytes_uploaded = 0, chunk_size = NULL, creating = 0",
                args![error],
            )?;
            j.emit(id, HookEvent::Failed)
        })
    }

    /// The source vanished or changed before it was finished. A video its
    /// upload had started becomes an orphan.
    pub fn mark_gone(&mut self, id: i64, reason: &str) -> Result<(), JournalError> {
        self.atomically(|j| {
            j.gone_quietly(id, reason)?;
            j.emit(id, HookEvent::Gone)
        })
    }

    /// [`Journal::mark_gone`] without its event: a row merged into its
    /// twin is not a file that went away.
    fn gone_quietly(&mut self, id: i64, reason: &str) -> Result<(), JournalError> {
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
                args![reason],
            )?;
            j.orphan_if_started(id, reason)
        })
    }

    /// The request that would have created this file's video failed in a way
    /// that leaves its outcome unknown (the reply was lost): count it.
    pub(crate) fn count_send_in_doubt(&mut self, id: i64) -> Result<(), JournalError> {
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
    pub(crate) fn not_creating(&mut self, id: i64) -> Result<(), JournalError> {
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
    pub(crate) fn fail_in_doubt(&mut self, id: i64, error: &str) -> Result<(), JournalError> {
        self.atomically(|j| {
            j.transition(
                "mark failed in doubt",
                id,
                &[FileState::Uploading],
                "state = 'failed', last_error = ?3, next_attempt_at = NULL, \
                 sends_in_doubt = sends_in_doubt + 1, creating = 0",
                args![error],
            )?;
            j.orphan_in_doubt(id)?;
            j.emit(id, HookEvent::Failed)
        })
    }

    /// Gives a claimed file back to the queue untouched (shutdown, token
    /// trouble): its offset, videoId and attempts are kept.
    pub(crate) fn release(&mut self, id: i64, note: Option<&str>) -> Result<(), JournalError> {
        self.transition(
            "release",
            id,
            &[FileState::Uploading],
            "state = 'queued', last_error = coalesce(?3, last_error), creating = 0",
            args![note],
        )
    }

    /// Puts failed files back in the queue (`ingestd retry`). With `ids`, only
    /// those; each id gets its own outcome.
    pub(crate) fn retry_failed(
        &mut self,
        ids: Option<&[i64]>,
    ) -> Result<RetryOutcome, JournalError> {
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

    /// A settling file changed (it is still being written): its row follows
    /// the new size, mtime and hints instead of a new row per growth step.
    /// Only the size, mtime and hints of `identity` are used; root and path
    /// stay. If another row at the path already has those (the file went
    /// back to a state already journaled), this row becomes `gone` and the
    /// other one is returned. An `incomplete:` note and its deadline go:
    /// the changed file is judged again.
    pub(crate) fn resettle(
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
                    j.gone_quietly(id, &format!("the same file as {}", twin.id))?;
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
                "size = ?3, mtime_ns = ?4, dev = ?5, inode = ?6, ctime_ns = ?7, sample = NULL, \
                 last_error = NULL, next_attempt_at = NULL",
                args![
                    to_i64(identity.size),
                    identity.mtime_ns,
                    to_i64(identity.dev),
                    to_i64(identity.inode),
                    identity.ctime_ns,
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
        extra: &[Value],
    ) -> Result<Vec<i64>, JournalError> {
        let states: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let sql = format!(
            "UPDATE files SET {set}, updated_at = ?2 WHERE id = ?1 AND state IN ({})",
            states.join(", ")
        );
        let now = now_ms();
        self.atomically(|j| {
            let mut changed = Vec::with_capacity(ids.len());
            let mut args = vec![Value::Null, Value::Int(now)];
            args.extend_from_slice(extra);
            for id in ids {
                args[0] = Value::Int(*id);
                if j.exec(op, &sql, &args)? == 1 {
                    changed.push(*id);
                }
            }
            Ok(changed)
        })
    }

    /// settling → queued for many files, each at its place, in one
    /// transaction (a restart with thousands of settled files costs one
    /// fsync). Returns the ids queued.
    pub fn mark_ready_many(
        &mut self,
        ready: &[(i64, QueuePlace)],
    ) -> Result<Vec<i64>, JournalError> {
        self.atomically(|j| {
            let mut queued = Vec::with_capacity(ready.len());
            for (id, place) in ready {
                queued.extend(j.transition_many(
                    "mark ready",
                    &[*id],
                    &[FileState::Settling],
                    &queued_at(*place, 3),
                    args![place.rank],
                )?);
            }
            Ok(queued)
        })
    }

    /// Files not yet claimed by a worker (settling, queued, retrying) whose
    /// source vanished or changed: `gone`, in one transaction. Rows a worker
    /// holds (`uploading`) are the worker's to judge. Returns the ids changed.
    pub(crate) fn mark_gone_many(
        &mut self,
        ids: &[i64],
        reason: &str,
    ) -> Result<Vec<i64>, JournalError> {
        self.atomically(|j| {
            let changed = j.transition_many(
                "mark gone",
                ids,
                &[FileState::Settling, FileState::Queued, FileState::Retrying],
                "state = 'gone', last_error = ?3, next_attempt_at = NULL",
                args![reason],
            )?;
            for id in &changed {
                j.orphan_if_started(*id, reason)?;
                j.emit(*id, HookEvent::Gone)?;
            }
            Ok(changed)
        })
    }
}

/// The `SET` assignments that queue a row at `place`, its rank bound as
/// `?n`; its key comes from the row's own size or mtime.
pub(super) fn queued_at(place: QueuePlace, n: usize) -> String {
    format!(
        "state = 'queued', queue_rank = ?{n}, queue_key = {}",
        place.key_sql()
    )
}
