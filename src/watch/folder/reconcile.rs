//! The reconcile scan of one folder: the tree walked against the journal,
//! and the plan it yields applied (new rows, gone rows, settle clocks, the
//! after-upload actions a crash left pending).
//!
//! The diff itself is `scan::plan` (pure); this file only runs it and
//! applies it. Nothing is marked gone while the root is in doubt.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::availability::unavailable;
use super::transitions::{follow, gone_many, revive_one, Absorbed, ADD_BATCH, CHANGED, VANISHED};
use super::watcher::watch_dir;
use super::{join_err, not_there, Folder, FolderError};
use crate::after_upload::sidecar_path;
use crate::config::AfterUpload;
use crate::journal::{FileRow, FileState};
use crate::watch::after_upload;
use crate::watch::scan;
use crate::watch::settle::Settling;
use crate::watch::{show, ScanReport};

/// A scan names at most this many files it could not sample.
const UNREADABLE_LOGGED: usize = 10;

/// With `keep`, a missing sidecar is written again by a scan only for files
/// uploaded this recently: enough to cover a crash between `done` and the
/// sidecar, without hashing years of old uploads (or re-creating sidecars
/// someone deleted on purpose).
const SIDECAR_CATCH_UP_MS: i64 = 7 * 24 * 3600 * 1000;

impl Folder {
    /// The reconcile scan: the tree against the journal. New files are
    /// journaled (settling), vanished or changed unfinished ones become
    /// gone, settling ones get their clocks, done ones still in place get
    /// their pending after-upload action.
    pub(crate) async fn reconcile(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<ScanReport, FolderError> {
        let started = std::time::Instant::now();
        let tree = self.tree()?;
        let mut backend = self.backend.take();
        let walk_tree = tree.clone();
        let walk_cancel = cancel.clone();
        let (backend, walked, limit) = tokio::task::spawn_blocking(move || {
            let mut limit = None;
            let walked = walk_tree.walk(
                Path::new(""),
                // Re-adding every watch repairs any that died unseen (a
                // directory replaced under the same name).
                &mut |dir| watch_dir(backend.as_mut(), dir, true, &mut limit),
                &walk_cancel,
            );
            if let (Ok(walked), Some(b)) = (&walked, backend.as_mut()) {
                b.keep_only(&walked.dirs.iter().cloned().collect());
            }
            (backend, walked, limit)
        })
        .await
        .map_err(join_err)?;
        self.backend = backend;
        if limit.is_some() {
            self.limit_hit = limit;
        }
        let walked = match walked {
            Ok(walked) => walked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(FolderError::Cancelled),
            Err(e) => return Err(FolderError::Unavailable(unavailable(&self.root, e))),
        };
        let mut report = ScanReport {
            folders: 1,
            files: walked.files.len(),
            unreadable: walked.unreadable.len(),
            ..ScanReport::default()
        };
        if walked.loops > 0 {
            debug!(folder = %show(&self.root), loops = walked.loops, "directory loops skipped");
        }

        let root = self.root.clone();
        let rows = self.journal.call(move |j| j.rows_under(&root)).await?;
        let rule = self.rule;
        let sample_tree = tree.clone();
        let sample_cancel = cancel.clone();
        let plan = tokio::task::spawn_blocking(move || {
            // After a remount every file is read (2 MiB each): a stop must
            // not wait for all of them.
            scan::plan(walked.files, rows, rule, &mut |f| {
                if sample_cancel.is_cancelled() {
                    return Err(io::Error::from(io::ErrorKind::Interrupted));
                }
                sample_tree.sample(f)
            })
        })
        .await
        .map_err(join_err)?;
        if cancel.is_cancelled() {
            return Err(FolderError::Cancelled);
        }
        report.already_done = plan.already_done;
        for path in &plan.empty {
            info!(path = %show(path), "the file is empty: not journaled until it has bytes");
        }

        // Unfinished rows not seen: gone only if the file is really not
        // there as journaled (not merely under an unreadable directory).
        let check_tree = tree.clone();
        let unseen = plan.unseen;
        let (vanished, changed) = tokio::task::spawn_blocking(move || {
            let mut vanished = Vec::new();
            let mut changed = Vec::new();
            for row in unseen {
                let path = row.path();
                match check_tree.stat(&path) {
                    Err(e) if not_there(&e) => vanished.push((row.id, path)),
                    Err(_) => {}
                    Ok(m) if !m.is_file() => vanished.push((row.id, path)),
                    Ok(m) if !row.identity.matches(&m) => changed.push((row.id, path)),
                    Ok(_) => {}
                }
            }
            (vanished, changed)
        })
        .await
        .map_err(join_err)?;

        // The share may have gone (or been swapped) while it was walked:
        // then nothing seen is trusted, nothing is marked gone.
        self.check_root().await?;
        for (path, kind) in plan.unreadable.iter().take(UNREADABLE_LOGGED) {
            warn!(path = %show(path), error = %io::Error::from(*kind),
                "cannot read the file for its content sample; it is left as it is until the next scan");
        }
        if plan.unreadable.len() > UNREADABLE_LOGGED {
            warn!(folder = %show(&self.root), more = plan.unreadable.len() - UNREADABLE_LOGGED,
                "more files could not be read for their content sample; they are left as they are");
        }
        let resettle = plan.resettle;
        let reidentify = plan.reidentify;
        let revive = plan.revive;
        let re_identified = reidentify.len();
        let absorbed = self
            .journal
            .call(move |j| {
                j.atomically(|j| {
                    let mut out = Absorbed::default();
                    gone_many(j, &vanished, VANISHED, &mut out)?;
                    gone_many(j, &changed, CHANGED, &mut out)?;
                    for (id, identity) in &resettle {
                        follow(j, *id, identity, &mut out)?;
                    }
                    for (id, identity, sample) in &reidentify {
                        j.reidentify(*id, identity, *sample)?;
                    }
                    for (id, to, identity) in &revive {
                        revive_one(j, *id, *to, identity, &mut out)?;
                    }
                    Ok(out)
                })
            })
            .await?;
        if re_identified > 0 {
            info!(folder = %show(&self.root), re_identified,
                "watch root {} looks remounted or restored: {re_identified} files re-identified by their content, none sent again",
                show(&self.root));
        }
        self.log_revived(&absorbed.revived);
        let mut live: HashSet<i64> = absorbed.track.iter().map(|s| s.id).collect();
        let mut track = absorbed.track;
        report.gone += absorbed.gone.len();
        self.log_gone(&absorbed.gone);

        for batch in plan.add.chunks(ADD_BATCH) {
            if cancel.is_cancelled() {
                return Err(FolderError::Cancelled);
            }
            let batch = batch.to_vec();
            let added = self
                .journal
                .call(move |j| {
                    let added = j.add_files(&batch, FileState::Settling)?;
                    Ok(batch.iter().cloned().zip(added).collect::<Vec<_>>())
                })
                .await?;
            for (identity, added) in added {
                if added.inserted {
                    report.journaled += 1;
                    info!(id = added.id, path = %show(&identity.path()), size = identity.size,
                        "new file journaled; waiting for it to settle");
                }
                if added.state == FileState::Settling {
                    live.insert(added.id);
                    track.push(Settling {
                        id: added.id,
                        identity,
                    });
                }
            }
        }

        for (id, identity) in plan.settling {
            live.insert(id);
            track.push(Settling { id, identity });
        }
        let now = Instant::now();
        self.settler.retain(|s| live.contains(&s.id));
        for file in track {
            self.settler.keep(file, now);
        }

        report.after_upload = self.catch_up_after_upload(plan.done_in_place).await?;
        report.elapsed = started.elapsed();
        debug!(folder = %show(&self.root), files = report.files, new = report.journaled,
            done = report.already_done, gone = report.gone, settling = self.settler.len(),
            elapsed_ms = report.elapsed.as_millis() as u64, "reconcile scan finished");
        Ok(report)
    }

    /// Done files found still in place: the after-upload action they are
    /// owed (a crash between `done` and the move, delete or sidecar).
    async fn catch_up_after_upload(&self, done: Vec<FileRow>) -> Result<usize, FolderError> {
        let sidecars = self.sidecars;
        let keep = matches!(self.settings.after_upload, AfterUpload::Keep);
        if done.is_empty() || (keep && !sidecars) {
            return Ok(0);
        }
        let recent = crate::journal::now_ms().saturating_sub(SIDECAR_CATCH_UP_MS);
        let candidates: Vec<FileRow> = done
            .into_iter()
            .filter(|r| !keep || r.done_at.is_some_and(|t| t >= recent))
            .collect();
        // With keep, only those without their sidecar.
        let pending = tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .filter(|r| !keep || fs::symlink_metadata(sidecar_path(&r.path())).is_err())
                .collect::<Vec<_>>()
        })
        .await
        .map_err(join_err)?;
        let mut applied = 0;
        for row in pending {
            let id = row.id;
            let (video_json, sha256) = self
                .journal
                .call(move |j| Ok((j.video_json(id)?, j.sha256(id)?)))
                .await?;
            let settings = self.settings.clone();
            let path = row.path();
            let outcome = tokio::task::spawn_blocking(move || {
                after_upload(
                    &settings,
                    &row,
                    video_json.as_deref(),
                    sha256.as_deref(),
                    sidecars,
                )
            })
            .await
            .map_err(join_err)?;
            match outcome {
                Ok(outcome) => {
                    applied += 1;
                    debug!(id, path = %show(&path), ?outcome, "pending after-upload action applied");
                }
                Err(e) => warn!(id, path = %show(&path), error = %e,
                    "the after-upload action failed; it is tried again at the next scan"),
            }
        }
        Ok(applied)
    }
}
