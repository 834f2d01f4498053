//! The settle checks of one folder: files whose clock ran out are sampled
//! and queued, unless the sample shows a file already journaled (moved, or
//! restored under a new inode).
//!
//! Vanished files, or errors that may be the share's, are not judged
//! before the root is checked: a share going away marks nothing gone.
//!
//! With `readiness = "container"`, a settled MP4/MOV or MXF file must also
//! be a finished container (`watch::container`). One that is not stays
//! `settling` with an `incomplete: …` note and is looked at again when it
//! changes, or at its deadline (`incomplete_timeout` after it was first
//! found so), when it fails. In a foreground run (`once`) every file gets
//! one check: what is not ready then is reported, not waited for.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info};

use super::transitions::{follow, gone_many, revive_one, Absorbed, EMPTY, VANISHED};
use super::{join_err, not_there, Folder, FolderError};
use crate::config::Readiness;
use crate::journal::{now_ms, FileIdentity, FileRow, FileState, Journal, JournalError, QueuePlace};
use crate::roots;
use crate::sample::Sample;
use crate::watch::container::{self, Verdict};
use crate::watch::report::NotReady;
use crate::watch::scan::Tree;
use crate::watch::settle::Settling;
use crate::watch::show;

impl Folder {
    /// Checks the files whose settle clock ran out: unchanged and not empty
    /// → sampled and queued (and the workers are woken), unless the sample
    /// shows a file already journaled (moved, or restored under a new
    /// inode: that row takes the path, nothing is sent again); changed →
    /// the clock restarts; vanished or empty → gone. Returns how many were
    /// queued.
    pub(crate) async fn settle_due(&mut self) -> Result<usize, FolderError> {
        let due = self.settler.take_due(Instant::now());
        if due.is_empty() {
            return Ok(0);
        }
        let tree = self.tree()?;
        let readiness = self.settings.readiness;
        let checks = tokio::task::spawn_blocking(move || {
            due.into_iter()
                .map(|s| settle_check(&tree, s, readiness))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(join_err)?;
        let mut ready = Vec::new();
        let mut changed = Vec::new();
        let mut vanished = Vec::new();
        let mut empty = Vec::new();
        let mut unreadable = Vec::new();
        let mut incomplete = Vec::new();
        let mut share_errors = false;
        let now = Instant::now();
        for check in checks {
            match check {
                Check::Ready(s, sample) => ready.push((s, sample)),
                Check::Changed(id, identity) => changed.push((id, identity)),
                Check::Vanished(id, path) => vanished.push((id, path)),
                Check::Empty(id, path) => empty.push((id, path)),
                Check::Incomplete(s, why) => incomplete.push((s, why)),
                Check::Unreadable(s, e) if roots::may_be_share(&e) => {
                    share_errors = true;
                    self.again(s, now, "it could not be read just now (the share?)");
                }
                Check::Unreadable(s, e) => unreadable.push((s, e.to_string())),
                // An I/O error (a network hiccup): look again later.
                Check::Unknown(s) => self.again(s, now, "it could not be read just now"),
            }
        }
        if share_errors || !vanished.is_empty() {
            // Not the files: the share.
            self.check_root().await?;
        }
        let twins = self.find_twins(&ready).await?;
        // Each file's place in the queue, by its path.
        let ready_j: Vec<(Settling, Sample, QueuePlace)> = ready
            .iter()
            .map(|(s, sample)| (s.clone(), *sample, self.queue.place(&s.identity.rel_path)))
            .collect();
        let unreadable_j = unreadable.clone();
        let timeout = self.settings.incomplete_timeout;
        let (queued, merged, absorbed, waiting) = self
            .journal
            .call(move |j| {
                j.atomically(|j| {
                    let mut out = Absorbed::default();
                    let mut merged = Vec::new();
                    let mut to_queue = Vec::new();
                    for (s, sample, place) in &ready_j {
                        match twins.iter().find(|(id, _)| *id == s.id) {
                            Some((_, twin)) => {
                                merge_into_twin(j, s, twin, *sample, &mut out)?;
                                merged.push((s.identity.path(), twin.clone()));
                            }
                            None => to_queue.push((s.id, *sample, *place)),
                        }
                    }
                    let queued = j.mark_ready_sampled(&to_queue)?;
                    gone_many(j, &vanished, VANISHED, &mut out)?;
                    gone_many(j, &empty, EMPTY, &mut out)?;
                    for (id, identity) in &changed {
                        follow(j, *id, identity, &mut out)?;
                    }
                    for (s, e) in &unreadable_j {
                        let why = format!(
                            "cannot read the file for its content sample: {e}; fix it (permissions, the disk), then `ingestd retry {}`",
                            s.id
                        );
                        match j.mark_failed(s.id, &why) {
                            Ok(()) | Err(JournalError::WrongState { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    let waiting = mark_incomplete(j, &incomplete, timeout)?;
                    Ok((queued, merged, out, waiting))
                })
            })
            .await?;
        self.log_gone(&absorbed.gone);
        self.log_revived(&absorbed.revived);
        self.failed.extend(unreadable.iter().map(|(s, _)| s.id));
        for (s, e) in &unreadable {
            error!(id = s.id, path = %show(&s.identity.path()), error = %e,
                "cannot read the file for its content sample; marked failed");
        }
        for (path, twin) in &merged {
            if twin.identity.rel_path.as_path() != path.strip_prefix(&self.root).unwrap_or(path) {
                info!(id = twin.id, path = %show(path), from = %show(&twin.path()), state = %twin.state,
                    "file moved within the watch folder: its journal row follows it, nothing is sent again");
            } else {
                info!(id = twin.id, path = %show(path), state = %twin.state,
                    "file re-identified by its content (restored or remounted): nothing is sent again");
            }
        }
        let now = Instant::now();
        for file in absorbed.track {
            self.again(
                file,
                now,
                "still being written: it changed during its settle time",
            );
        }
        self.hold_incomplete(waiting, now);
        let queued: HashSet<i64> = queued.into_iter().collect();
        for (s, _) in ready.iter().filter(|(s, _)| queued.contains(&s.id)) {
            info!(id = s.id, path = %show(&s.identity.path()), size = s.identity.size,
                "file settled; queued for upload");
        }
        if !queued.is_empty() {
            self.work.notify_waiters();
        }
        Ok(queued.len())
    }

    /// A file to look at again: its clock restarts, or in a foreground run
    /// it is reported as not ready yet, with `why`.
    fn again(&mut self, file: Settling, now: Instant, why: &str) {
        if self.once {
            self.not_ready.push(NotReady {
                id: file.id,
                path: file.identity.path(),
                why: why.to_owned(),
            });
        } else {
            self.settler.track(file, now);
        }
    }

    /// Unfinished containers: each waits for its recorder until its
    /// deadline (or is reported, in a foreground run), or has failed.
    fn hold_incomplete(&mut self, held: Vec<Held>, now: Instant) {
        for h in held {
            match h {
                Held::Waiting { file, until, why } => {
                    let path = file.identity.path();
                    info!(id = file.id, path = %show(&path), reason = %why,
                        "file settled, but it is an unfinished container; it waits for its recorder (judged again when it changes)");
                    if self.once {
                        self.not_ready.push(NotReady {
                            id: file.id,
                            path,
                            why: format!("incomplete: {why}"),
                        });
                    } else {
                        let left = u64::try_from(until - now_ms()).unwrap_or(0);
                        self.settler
                            .track_until(file, now + Duration::from_millis(left));
                    }
                }
                Held::Failed { file, why } => {
                    error!(id = file.id, path = %show(&file.identity.path()), reason = %why,
                        "file still an unfinished container after incomplete_timeout; marked failed");
                    self.failed.push(file.id);
                }
            }
        }
    }

    /// For each settled file, the row already journaled with its content
    /// (size, mtime and sample) at its own path, or at a path that is empty
    /// now (the file moved), if any: that row is the file's.
    async fn find_twins(
        &self,
        ready: &[(Settling, Sample)],
    ) -> Result<Vec<(i64, FileRow)>, FolderError> {
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        let root = self.root.clone();
        let wanted: Vec<(i64, FileIdentity, Sample)> = ready
            .iter()
            .map(|(s, sample)| (s.id, s.identity.clone(), *sample))
            .collect();
        let rule = self.rule;
        let candidates = self
            .journal
            .call(move |j| {
                let mut out = Vec::new();
                for (id, identity, sample) in &wanted {
                    for row in j.rows_with_sample(&root, *sample)? {
                        if row.id != *id
                            && row.state != FileState::Settling
                            && row.identity.size == identity.size
                            && rule.same(row.identity.mtime_ns, identity.mtime_ns)
                        {
                            out.push((*id, identity.rel_path.clone(), row));
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let tree = self.tree()?;
        tokio::task::spawn_blocking(move || {
            let mut twins: Vec<(i64, FileRow)> = Vec::new();
            for (id, rel, row) in candidates {
                // One twin per file, and one file per twin (a move and a
                // copy settling together are two files).
                if twins.iter().any(|(t, r)| *t == id || r.id == row.id) {
                    continue;
                }
                // Elsewhere: only if nothing is there now (a copy is a file
                // of its own).
                let here = row.identity.rel_path == rel;
                if here || tree.stat(&row.path()).is_err_and(|e| not_there(&e)) {
                    twins.push((id, row));
                }
            }
            twins
        })
        .await
        .map_err(join_err)
    }
}

/// What a settle check found.
enum Check {
    Ready(Settling, Sample),
    Changed(i64, FileIdentity),
    Vanished(i64, PathBuf),
    Empty(i64, PathBuf),
    /// Settled, but an unfinished container (why).
    Incomplete(Settling, String),
    /// The sample could not be read.
    Unreadable(Settling, io::Error),
    Unknown(Settling),
}

/// What became of an unfinished container.
enum Held {
    /// It waits until `until` (unix ms), then fails unless it changed.
    Waiting {
        file: Settling,
        until: i64,
        why: String,
    },
    Failed {
        file: Settling,
        why: String,
    },
}

/// Notes the unfinished containers (on the journal thread): each keeps the
/// deadline it got when first found so, and fails once that has passed.
fn mark_incomplete(
    j: &mut Journal,
    files: &[(Settling, String)],
    timeout: Duration,
) -> Result<Vec<Held>, JournalError> {
    let now = now_ms();
    let deadline = now.saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
    let mut held = Vec::with_capacity(files.len());
    for (file, why) in files {
        let (file, why) = (file.clone(), why.clone());
        let until = match j.mark_incomplete(file.id, &why, deadline) {
            Ok(until) => until,
            Err(JournalError::WrongState { .. }) => continue,
            Err(e) => return Err(e),
        };
        if until > now {
            held.push(Held::Waiting { file, until, why });
            continue;
        }
        let why = format!(
            "incomplete: {why}; still unfinished after incomplete_timeout ({}). If it is whole after all, `ingestd retry {}` uploads it as it is (or set readiness = \"settle\" for this folder); a repaired file is journaled anew",
            humantime::format_duration(timeout),
            file.id
        );
        match j.mark_failed(file.id, &why) {
            Ok(()) => held.push(Held::Failed { file, why }),
            Err(JournalError::WrongState { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(held)
}

/// One settle check (blocking): the file as it is now, and its sample when
/// it is as it was (and, with `readiness = "container"`, a finished
/// container).
fn settle_check(tree: &Tree, s: Settling, readiness: Readiness) -> Check {
    let path = s.identity.path();
    match tree.stat(&path) {
        Err(e) if not_there(&e) => Check::Vanished(s.id, path),
        // On a network share the check opens the file: that is where a
        // permission problem shows.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Check::Unreadable(s, e),
        Err(_) => Check::Unknown(s),
        Ok(m) if !m.is_file() => Check::Vanished(s.id, path),
        Ok(m) => {
            let now = FileIdentity::from_metadata(&s.identity.root, &s.identity.rel_path, &m);
            if now != s.identity {
                Check::Changed(s.id, now)
            } else if now.size == 0 {
                Check::Empty(s.id, path)
            } else {
                match judge(tree, &now, readiness) {
                    Ok((_, Verdict::Incomplete(why))) => Check::Incomplete(s, why),
                    Ok((sample, _)) => Check::Ready(s, sample),
                    Err(e) if not_there(&e) => Check::Vanished(s.id, path),
                    // Still changing: its clock starts again.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Check::Unknown(s),
                    Err(e) => Check::Unreadable(s, e),
                }
            }
        }
    }
}

/// The sample of a file that stopped changing, and whether it is a finished
/// container (`Finished` when readiness does not ask).
fn judge(tree: &Tree, f: &FileIdentity, readiness: Readiness) -> io::Result<(Sample, Verdict)> {
    let file = tree.open_as(f)?;
    let sample = Sample::of_file(&file, f.size)?;
    let verdict = match readiness {
        Readiness::Container => container::check(&file, f.size)?,
        Readiness::Settle => Verdict::Finished,
    };
    Ok((sample, verdict))
}

/// A settled file is an already journaled one (on the journal thread): that
/// row takes the file's path and hints (a `gone` one is revived), and the
/// settling row, a second look at the same file, is dropped.
fn merge_into_twin(
    j: &mut Journal,
    s: &Settling,
    twin: &FileRow,
    sample: Sample,
    out: &mut Absorbed,
) -> Result<(), JournalError> {
    j.drop_settling(s.id)?;
    j.reidentify(twin.id, &s.identity, Some(sample))?;
    // Its state now, not when it was found.
    if j.get(twin.id)?.is_some_and(|r| r.state == FileState::Gone) {
        revive_one(j, twin.id, FileState::Queued, &s.identity, out)?;
    }
    Ok(())
}
