//! What the journal knows of identity beyond a row's state: content samples,
//! re-identification after a remount or a rename, revival of `gone` rows
//! whose file came back, the watch roots' own identity, and the videos left
//! behind on api.video (orphans).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::queries::QueuePlace;
use super::row::{path_from_blob, to_i64, to_u64};
use super::sql::{args, Value};
use super::transitions::queued_at;
use super::{now_ms, Added, FileIdentity, FileRow, FileState, Journal, JournalError};
use crate::sample::Sample;

/// A video ingestd started on api.video and then abandoned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    /// The journal row of the file it was for.
    pub file_id: i64,
    pub path: PathBuf,
    /// `None` when the reply that would have named it was lost.
    pub video_id: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
    pub why: String,
}

/// A watch root's own identity, as last seen available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootRecord {
    pub dev: u64,
    pub inode: u64,
    /// The root was itself a mount point.
    pub mount_point: bool,
}

/// The orphan text of a request that would have created a video and whose
/// outcome is unknown: one SQL expression over a `files` row.
const IN_DOUBT_WHY: &str = "CASE WHEN chunk_size IS NOT NULL AND size > chunk_size \
     THEN 'possibly an unfinished video: the request that created it lost its reply, so its videoId is unknown; look for a video with this file''s name' \
     ELSE 'possibly a duplicate video: the request that uploads this file in one piece lost its reply; look for two videos with this file''s name' END";

impl Journal {
    /// Journals `f`, whose content sample is `sample`, unless it is already
    /// journaled: same hints, or same size, mtime and sample (its hints are
    /// then brought up to date). For `ingestd upload FILE`.
    pub fn add_sampled(
        &mut self,
        f: &FileIdentity,
        sample: Sample,
        state: FileState,
    ) -> Result<Added, JournalError> {
        self.atomically(|j| {
            j.lock_paths([(f.root.as_path(), f.rel_path.as_path())])?;
            let rows = j.rows_at(&f.root, &f.rel_path)?;
            let same = rows.iter().find(|r| r.identity.same_hints(f)).or_else(|| {
                rows.iter().find(|r| {
                    r.identity.size == f.size
                        && r.identity.mtime_ns == f.mtime_ns
                        && r.sample == Some(sample)
                })
            });
            if let Some(row) = same {
                j.reidentify(row.id, f, Some(sample))?;
                return Ok(Added {
                    id: row.id,
                    inserted: false,
                    state: row.state,
                });
            }
            Ok(Added {
                id: j.insert(f, Some(sample), state)?,
                inserted: true,
                state,
            })
        })
    }

    /// The row `id` is the file `now` describes (the same content after a
    /// remount, a restore or a rename): its path, mtime and hints follow,
    /// and its sample is filled in if it had none. Any state; nothing else
    /// of the row changes.
    pub(crate) fn reidentify(
        &mut self,
        id: i64,
        now: &FileIdentity,
        sample: Option<Sample>,
    ) -> Result<(), JournalError> {
        self.exec(
            "re-identify a file",
            "UPDATE files SET rel_path = ?2, mtime_ns = ?3, dev = ?4, inode = ?5, ctime_ns = ?6, \
             sample = coalesce(sample, ?7), updated_at = ?8 WHERE id = ?1 AND size = ?9",
            args![
                id,
                now.rel_path.as_os_str().as_bytes(),
                now.mtime_ns,
                to_i64(now.dev),
                to_i64(now.inode),
                now.ctime_ns,
                sample.map(|s| s.0.to_vec()),
                now_ms(),
                to_i64(now.size),
            ],
        )?;
        Ok(())
    }

    /// Stores the content sample of a row that had none (one written by an
    /// older ingestd, sampled the first time it is needed).
    pub(crate) fn set_sample(&mut self, id: i64, sample: Sample) -> Result<(), JournalError> {
        self.exec(
            "store a content sample",
            "UPDATE files SET sample = ?2 WHERE id = ?1 AND sample IS NULL",
            args![id, sample.0.to_vec()],
        )?;
        Ok(())
    }

    /// settling → queued for files that settled, each with its sample and
    /// at its place in the queue, in one transaction. Returns the ids queued.
    pub(crate) fn mark_ready_sampled(
        &mut self,
        ready: &[(i64, Sample, QueuePlace)],
    ) -> Result<Vec<i64>, JournalError> {
        self.atomically(|j| {
            let mut queued = Vec::with_capacity(ready.len());
            for (id, sample, place) in ready {
                let changed = j.exec(
                    "mark ready",
                    &format!(
                        "UPDATE files SET {}, sample = ?2, updated_at = ?3, \
                         last_error = NULL, next_attempt_at = NULL \
                         WHERE id = ?1 AND state = 'settling'",
                        queued_at(*place, 4)
                    ),
                    args![*id, sample.0.to_vec(), now_ms(), place.rank],
                )?;
                if changed == 1 {
                    queued.push(*id);
                }
            }
            Ok(queued)
        })
    }

    /// A settled file whose container is unfinished stays `settling`, with
    /// `incomplete: <why>` as its note and, in `next_attempt_at`, when it
    /// fails unless it changes: `deadline` if it was not incomplete yet, the
    /// deadline already set otherwise (a restart or a second look does not
    /// push it back; a change clears it, see `resettle`). Returns that
    /// deadline (unix ms).
    pub(crate) fn mark_incomplete(
        &mut self,
        id: i64,
        why: &str,
        deadline: i64,
    ) -> Result<i64, JournalError> {
        let note = format!("incomplete: {why}");
        self.transition(
            "mark incomplete",
            id,
            &[FileState::Settling],
            "last_error = ?3, next_attempt_at = COALESCE(next_attempt_at, ?4)",
            args![note.as_str(), deadline],
        )?;
        Ok(self
            .get(id)?
            .and_then(|r| r.next_attempt_at)
            .unwrap_or(deadline))
    }

    /// A `gone` row whose file is back as it was: it is queued again (with
    /// its offset and videoId, so a half-sent upload resumes), or, when it
    /// went away while still settling, settles again. Its orphan, if it
    /// left one, is no longer one.
    pub(crate) fn revive(&mut self, id: i64, to: FileState) -> Result<(), JournalError> {
        let to = if to == FileState::Settling {
            FileState::Settling
        } else {
            FileState::Queued
        };
        self.atomically(|j| {
            let set = format!(
                "state = '{}', last_error = NULL, next_attempt_at = NULL, attempts = 0",
                to.as_str()
            );
            j.transition("revive", id, &[FileState::Gone], &set, &[])?;
            j.exec(
                "revive",
                "DELETE FROM orphans WHERE file_id = ?1 AND video_id IS NOT NULL \
                 AND video_id = (SELECT video_id FROM files WHERE id = ?1)",
                args![id],
            )?;
            Ok(())
        })
    }

    /// The rows of `root` with this content sample (a settled file that may
    /// be one already journaled, moved or restored).
    pub(crate) fn rows_with_sample(
        &self,
        root: &Path,
        sample: Sample,
    ) -> Result<Vec<FileRow>, JournalError> {
        self.select_rows(
            "look up a content sample",
            "WHERE sample = ?1 AND root = ?2 ORDER BY id",
            args![sample.0.to_vec(), root.as_os_str().as_bytes()],
        )
    }

    /// Deletes a settling row that turned out to be a second look at a file
    /// already journaled (its twin keeps the file's history).
    pub(crate) fn drop_settling(&mut self, id: i64) -> Result<(), JournalError> {
        let n = self.exec(
            "drop a duplicate row",
            "DELETE FROM files WHERE id = ?1 AND state = 'settling'",
            args![id],
        )?;
        if n == 1 {
            return Ok(());
        }
        Err(JournalError::WrongState {
            op: "drop a duplicate row",
            id,
            expected: "settling",
            actual: self.get(id)?.map(|r| r.state),
        })
    }

    /// After a row became `gone`: if its upload had started (it has a
    /// videoId), that video is an orphan.
    pub(super) fn orphan_if_started(&mut self, id: i64, why: &str) -> Result<(), JournalError> {
        self.exec(
            "record an orphan video",
            "INSERT INTO orphans (file_id, root, rel_path, video_id, at, why) \
             SELECT id, root, rel_path, video_id, ?2, ?3 FROM files \
             WHERE id = ?1 AND video_id IS NOT NULL AND bytes_uploaded < size",
            args![id, now_ms(), why],
        )?;
        Ok(())
    }

    /// The request creating the video of row `id` ended without a known
    /// outcome: api.video may hold a video nobody will finish or use.
    pub(super) fn orphan_in_doubt(&mut self, id: i64) -> Result<(), JournalError> {
        self.orphans_in_doubt_where("id = ?1", args![id])
    }

    /// [`Journal::orphan_in_doubt`] for every row `filter` selects.
    pub(super) fn orphans_in_doubt_where(
        &mut self,
        filter: &str,
        args: &[Value],
    ) -> Result<(), JournalError> {
        let sql = format!(
            "INSERT INTO orphans (file_id, root, rel_path, video_id, at, why) \
             SELECT id, root, rel_path, NULL, {now}, {IN_DOUBT_WHY} FROM files WHERE {filter}",
            now = now_ms()
        );
        self.exec("record an orphan video", &sql, args)?;
        Ok(())
    }

    /// Every orphan, oldest first.
    pub fn orphans(&self) -> Result<Vec<Orphan>, JournalError> {
        const OP: &str = "list orphan videos";
        let rows = self.rows(
            OP,
            "SELECT file_id, root, rel_path, video_id, at, why FROM orphans ORDER BY id",
            &[],
        )?;
        self.map_rows(OP, rows, |r| {
            let root = path_from_blob(r.bytes(1)?);
            let rel = path_from_blob(r.bytes(2)?);
            Ok(Orphan {
                file_id: r.i64(0)?,
                path: root.join(rel),
                video_id: r.opt_text(3)?,
                at: r.i64(4)?,
                why: r.text(5)?,
            })
        })
    }

    /// How many orphans there are (for `/metrics`).
    pub(crate) fn orphan_count(&self) -> Result<u64, JournalError> {
        self.scalar("count orphan videos", "SELECT count(*) FROM orphans", &[])
            .map(|n| to_u64(n.unwrap_or(0)))
    }

    /// The identity `root` had when it was last seen available.
    pub(crate) fn root_record(&self, root: &Path) -> Result<Option<RootRecord>, JournalError> {
        const OP: &str = "read a watch root's identity";
        let rows = self.rows(
            OP,
            "SELECT dev, inode, mount_point FROM roots WHERE root = ?1",
            args![root.as_os_str().as_bytes()],
        )?;
        let recs = self.map_rows(OP, rows, |r| {
            Ok(RootRecord {
                dev: to_u64(r.i64(0)?),
                inode: to_u64(r.i64(1)?),
                mount_point: r.i64(2)? != 0,
            })
        })?;
        Ok(recs.into_iter().next())
    }

    /// Records the identity of `root`, seen available now.
    pub(crate) fn save_root(&mut self, root: &Path, rec: RootRecord) -> Result<(), JournalError> {
        self.exec(
            "record a watch root's identity",
            "INSERT INTO roots (root, dev, inode, mount_point, seen_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (root) DO UPDATE SET dev = ?2, inode = ?3, mount_point = ?4, seen_at = ?5",
            args![
                root.as_os_str().as_bytes(),
                to_i64(rec.dev),
                to_i64(rec.inode),
                rec.mount_point,
                now_ms()
            ],
        )?;
        Ok(())
    }

    /// `ingestd retry` of a `gone` row whose file the caller found back as
    /// journaled: queued again with its progress.
    pub(crate) fn retry_gone(&mut self, id: i64) -> Result<(), JournalError> {
        self.revive(id, FileState::Queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(name: &str, size: u64, inode: u64) -> FileIdentity {
        FileIdentity {
            root: PathBuf::from("/srv/nas"),
            rel_path: PathBuf::from(name),
            size,
            mtime_ns: 1_700_000_000_000_000_000,
            dev: 42,
            inode,
            ctime_ns: Some(1),
        }
    }

    use crate::journal::tests::open_pg;

    fn open_temp() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal.db")).unwrap();
        (dir, j)
    }

    fn the_same_content_under_new_hints_is_found_and_its_hints_follow(j: &mut Journal) {
        let s = Sample([7; 16]);
        let a = j
            .add_sampled(&ident("a.mp4", 10, 1), s, FileState::Queued)
            .unwrap();
        assert!(a.inserted);
        let mut moved = ident("a.mp4", 10, 99);
        moved.dev = 43;
        let b = j.add_sampled(&moved, s, FileState::Queued).unwrap();
        assert_eq!((b.id, b.inserted), (a.id, false));
        let row = j.get(a.id).unwrap().unwrap();
        assert_eq!((row.identity.dev, row.identity.inode), (43, 99));
        // Same size and mtime, another content: a new file.
        let c = j
            .add_sampled(&ident("a.mp4", 10, 100), Sample([8; 16]), FileState::Queued)
            .unwrap();
        assert!(c.inserted);
    }

    fn a_gone_row_revived_resumes_and_its_orphan_is_withdrawn(j: &mut Journal) {
        let id = j
            .add_file(&ident("a.mp4", 100, 1), FileState::Queued)
            .unwrap()
            .id;
        j.claim_next(now_ms(), std::time::Duration::from_secs(1), None)
            .unwrap()
            .unwrap();
        j.set_chunk_size(id, 10).unwrap();
        j.record_progress(id, "vi1", 10).unwrap();
        j.mark_gone(id, "the file vanished").unwrap();
        assert_eq!(j.orphan_count().unwrap(), 1);
        let o = &j.orphans().unwrap()[0];
        assert_eq!(o.video_id.as_deref(), Some("vi1"));
        assert_eq!(o.path, PathBuf::from("/srv/nas/a.mp4"));
        j.revive(id, FileState::Queued).unwrap();
        let row = j.get(id).unwrap().unwrap();
        assert_eq!(row.state, FileState::Queued);
        assert_eq!(
            (row.bytes_uploaded, row.video_id.as_deref()),
            (10, Some("vi1"))
        );
        assert_eq!(j.orphan_count().unwrap(), 0);
        assert!(matches!(
            j.revive(id, FileState::Queued),
            Err(JournalError::WrongState { .. })
        ));
    }

    fn a_creating_request_in_doubt_is_a_possible_orphan(j: &mut Journal) {
        let id = j
            .add_file(&ident("big.mp4", 100, 1), FileState::Queued)
            .unwrap()
            .id;
        j.claim_next(now_ms(), std::time::Duration::from_secs(1), None)
            .unwrap()
            .unwrap();
        j.set_chunk_size(id, 10).unwrap();
        j.count_send_in_doubt(id).unwrap();
        let o = j.orphans().unwrap();
        assert_eq!(o.len(), 1);
        assert!(
            o[0].video_id.is_none() && o[0].why.contains("unfinished"),
            "{o:?}"
        );
    }

    #[test]
    fn a_version_2_journal_keeps_every_row_and_gets_samples_lazily() {
        use rusqlite::params;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            let old = rusqlite_migration::Migrations::new(
                super::super::open::MIGRATIONS[..2]
                    .iter()
                    .map(|sql| rusqlite_migration::M::up(sql))
                    .collect(),
            );
            old.to_latest(&mut conn).unwrap();
            for (i, state) in ["done", "queued", "gone"].iter().enumerate() {
                conn.execute(
                    "INSERT INTO files (root, rel_path, size, mtime_ns, dev, inode, state, \
                     created_at, updated_at, video_id) VALUES (?1, ?2, 10, 5, 1, ?3, ?4, 1, 1, 'vi')",
                    params![b"/srv/nas".to_vec(), format!("f{i}.mp4").into_bytes(), i as i64, state],
                )
                .unwrap();
            }
        }
        let mut j = Journal::open(&path).unwrap();
        let rows = j.list(None).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows
            .iter()
            .all(|r| r.sample.is_none() && r.identity.ctime_ns.is_none()));
        assert_eq!(rows[0].state, FileState::Done);
        // The (dev, inode) key is gone: another row at the same path and
        // size with other hints can exist.
        let mut twin = rows[0].identity.clone();
        twin.inode = 99;
        assert!(j.add_file(&twin, FileState::Settling).unwrap().inserted);
        j.set_sample(rows[1].id, Sample([3; 16])).unwrap();
        assert_eq!(
            j.get(rows[1].id).unwrap().unwrap().sample,
            Some(Sample([3; 16]))
        );
        assert_eq!(j.orphan_count().unwrap(), 0);
    }

    fn roots_are_remembered(j: &mut Journal) {
        let root = Path::new("/srv/nas");
        assert_eq!(j.root_record(root).unwrap(), None);
        let rec = RootRecord {
            dev: 5,
            inode: 2,
            mount_point: true,
        };
        j.save_root(root, rec).unwrap();
        j.save_root(root, RootRecord { dev: 6, ..rec }).unwrap();
        assert_eq!(j.root_record(root).unwrap().unwrap().dev, 6);
    }

    fn settled_files_are_queued_with_their_sample(j: &mut Journal) {
        let id = j
            .add_file(&ident("a.mp4", 10, 1), FileState::Settling)
            .unwrap()
            .id;
        assert_eq!(
            j.mark_ready_sampled(&[(id, Sample([1; 16]), QueuePlace::DEFAULT)])
                .unwrap(),
            vec![id]
        );
        let row = j.get(id).unwrap().unwrap();
        assert_eq!(
            (row.state, row.sample),
            (FileState::Queued, Some(Sample([1; 16])))
        );
        let twins = j
            .rows_with_sample(Path::new("/srv/nas"), Sample([1; 16]))
            .unwrap();
        assert_eq!(twins.len(), 1);
        assert!(j.drop_settling(id).is_err());
    }

    crate::journal::tests::on_both!(
        the_same_content_under_new_hints_is_found_and_its_hints_follow,
        a_gone_row_revived_resumes_and_its_orphan_is_withdrawn,
        a_creating_request_in_doubt_is_a_possible_orphan,
        roots_are_remembered,
        settled_files_are_queued_with_their_sample,
    );
}
