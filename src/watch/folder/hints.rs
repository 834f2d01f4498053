//! The event hints of one folder: what is at each path a watcher named,
//! and what the journal knows there.
//!
//! Events are only hints: nothing is marked gone for a vanished path
//! before the root is known to be there, and nothing here reads a sample.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::availability::check_root;
use super::transitions::{follow, gone_many, revive_one, Absorbed, ADD_BATCH, CHANGED, VANISHED};
use super::watcher::watch_dir;
use super::{join_err, not_there, Folder, FolderError};
use crate::journal::{FileIdentity, FileState, Journal, JournalError};
use crate::watch::notifier::Backend;
use crate::watch::scan::Tree;
use crate::watch::settle::Settling;
use crate::watch::show;

/// What a file path looked like when a hint was checked.
#[derive(Debug)]
enum Seen {
    File(FileIdentity),
    /// Nothing wanted is at this path now.
    Missing(PathBuf),
}

#[derive(Debug, Default)]
struct Classified {
    seen: Vec<Seen>,
    root_lost: bool,
    limit: Option<notify::Error>,
}

impl Folder {
    /// Looks at the paths watcher events named: new files are journaled,
    /// settling ones get their clock restarted (and their row follows them
    /// if they changed), vanished or changed unfinished ones become gone,
    /// new directories are watched and walked.
    /// Returns `Unavailable` when the root itself went away.
    pub(crate) async fn absorb(
        &mut self,
        paths: HashSet<PathBuf>,
        created: HashSet<PathBuf>,
        cancel: &CancellationToken,
    ) -> Result<(), FolderError> {
        let tree = self.tree()?;
        let mut backend = self.backend.take();
        let hint_cancel = cancel.clone();
        let (backend, classified) = tokio::task::spawn_blocking(move || {
            let classified = classify(&tree, paths, &created, backend.as_mut(), &hint_cancel);
            (backend, classified)
        })
        .await
        .map_err(join_err)?;
        self.backend = backend;
        if classified.limit.is_some() {
            self.limit_hit = classified.limit;
        }
        if classified.root_lost {
            let root = self.root.clone();
            let check = tokio::task::spawn_blocking(move || check_root(&root))
                .await
                .map_err(join_err)?;
            if let Err(e) = check {
                return Err(FolderError::Unavailable(e));
            }
        }

        let now = Instant::now();
        let mut gone_ids = Vec::new();
        let mut resettles = Vec::new();
        let mut lookups: Vec<(PathBuf, Option<FileIdentity>)> = Vec::new();
        for seen in classified.seen {
            match seen {
                Seen::Missing(rel) => {
                    if let Some(s) = self.settler.forget(&rel) {
                        gone_ids.push((s.id, s.identity.path()));
                    }
                    // A directory moved away takes its files with it.
                    gone_ids.extend(
                        self.settler
                            .forget_under(&rel)
                            .into_iter()
                            .map(|s| (s.id, s.identity.path())),
                    );
                    if let Some(b) = self.backend.as_mut() {
                        b.forget_dir(&self.root.join(&rel));
                    }
                    lookups.push((rel, None));
                }
                Seen::File(identity) => match self.settler.get(&identity.rel_path) {
                    Some(s) if s.identity == identity => {
                        self.settler.touch(&identity.rel_path, now);
                    }
                    Some(_) => {
                        if let Some(s) = self.settler.forget(&identity.rel_path) {
                            resettles.push((s.id, identity));
                        }
                    }
                    None => lookups.push((identity.rel_path.clone(), Some(identity))),
                },
            }
        }
        if gone_ids.is_empty() && resettles.is_empty() && lookups.is_empty() {
            return Ok(());
        }
        // A path that vanished may be the whole share going away (a path
        // that is there proves its root is).
        if lookups.iter().any(|(_, seen)| seen.is_none()) || !gone_ids.is_empty() {
            self.check_root().await?;
        }
        let root = self.root.clone();
        let absorbed = self
            .journal
            .call(move |j| {
                j.atomically(|j| {
                    let mut out = Absorbed::default();
                    gone_many(j, &gone_ids, VANISHED, &mut out)?;
                    for (id, identity) in &resettles {
                        follow(j, *id, identity, &mut out)?;
                    }
                    look_up(j, &root, &lookups, &mut out)?;
                    Ok(out)
                })
            })
            .await?;
        self.log_gone(&absorbed.gone);
        self.log_revived(&absorbed.revived);
        for (id, path) in &absorbed.journaled {
            info!(id, path = %show(path), "new file journaled; waiting for it to settle");
        }
        let now = Instant::now();
        for file in absorbed.track {
            self.settler.track(file, now);
        }
        Ok(())
    }
}

/// What is at each hinted path now (blocking). New directories are watched
/// and walked: files may be inside before their watch exists.
fn classify(
    tree: &Tree,
    paths: HashSet<PathBuf>,
    created: &HashSet<PathBuf>,
    mut backend: Option<&mut Backend>,
    cancel: &CancellationToken,
) -> Classified {
    let mut out = Classified::default();
    for path in paths {
        let Ok(rel) = path.strip_prefix(&tree.root) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            out.root_lost |= !fs::metadata(&tree.root).is_ok_and(|m| m.is_dir());
            continue;
        }
        let rel = rel.to_path_buf();
        if !tree.recursive && rel.components().count() != 1 {
            continue;
        }
        if !tree.filter.ancestors_wanted(&rel) {
            continue;
        }
        // Through a symlinked directory: only if it stays inside the root.
        if tree.follow_symlinks && rel.components().count() > 1 {
            let inside = path.parent().is_some_and(|p| {
                fs::canonicalize(p).is_ok_and(|p| p.starts_with(&tree.canonical_root))
            });
            if !inside {
                continue;
            }
        }
        match tree.stat(&path) {
            Err(e) if not_there(&e) => out.seen.push(Seen::Missing(rel)),
            Err(e) => {
                debug!(path = %show(&path), error = %e, "cannot inspect a path; the next scan will")
            }
            Ok(m) if m.is_file() => {
                if tree.filter.wants_file(&rel) {
                    out.seen.push(Seen::File(FileIdentity::from_metadata(
                        &tree.root, &rel, &m,
                    )));
                }
            }
            Ok(m) if m.is_dir() => {
                if !tree.recursive || tree.filter.skips_dir(&rel) {
                    continue;
                }
                // A directory already watched changed (a file came or went,
                // its mode): its files speak for themselves.
                let fresh = created.contains(&path);
                if !fresh && backend.as_deref().is_some_and(|b| b.covers(&path)) {
                    continue;
                }
                let mut limit = out.limit.take();
                let walked = tree.walk(
                    &rel,
                    &mut |dir| watch_dir(backend.as_deref_mut(), dir, fresh, &mut limit),
                    cancel,
                );
                out.limit = limit;
                match walked {
                    Ok(walked) => out.seen.extend(walked.files.into_iter().map(Seen::File)),
                    Err(e) => {
                        debug!(path = %show(&path), error = %e, "a new directory vanished or cannot be read")
                    }
                }
            }
            // Replaced by something that is not a file (fifo, socket,
            // unfollowed symlink): nothing wanted is there any more.
            Ok(_) => out.seen.push(Seen::Missing(rel)),
        }
    }
    out
}

/// For paths not being tracked: what the journal knows there decides (on
/// the journal thread). The same file → nothing (or its clock, if it is
/// settling); unfinished rows of another content → gone; a settling row of
/// another content follows the file; otherwise a new row.
fn look_up(
    j: &mut Journal,
    root: &Path,
    lookups: &[(PathBuf, Option<FileIdentity>)],
    out: &mut Absorbed,
) -> Result<(), JournalError> {
    let mut add = Vec::new();
    let mut gone = Vec::new();
    for (rel, identity) in lookups {
        let identity = identity.clone();
        let rows = j.rows_at(root, rel)?;
        // Live rows first: a `gone` twin is only revived when no live row
        // has the file.
        let same = identity.as_ref().and_then(|f| {
            rows.iter()
                .filter(|r| r.identity.same_hints(f))
                .min_by_key(|r| (r.state == FileState::Gone, std::cmp::Reverse(r.id)))
        });
        if let (Some(row), Some(identity)) = (same, &identity) {
            match row.state {
                FileState::Settling => out.track.push(Settling {
                    id: row.id,
                    identity: identity.clone(),
                }),
                // Gone before it settled: it settles again. One with a
                // sample is journaled anew below; its settle check finds the
                // gone row by the sample if the content is the same.
                FileState::Gone if row.sample.is_none() => {
                    revive_one(j, row.id, FileState::Settling, identity, out)?;
                }
                _ => {}
            }
        }
        let same = same.filter(|r| r.state != FileState::Gone || r.sample.is_none());
        let mut identity = if same.is_some() { None } else { identity };
        for row in rows.iter().filter(|r| Some(r.id) != same.map(|s| s.id)) {
            match row.state {
                FileState::Queued | FileState::Retrying => gone.push((row.id, row.path())),
                FileState::Settling => match identity.take() {
                    Some(now) => follow(j, row.id, &now, out)?,
                    None => gone.push((row.id, row.path())),
                },
                _ => {}
            }
        }
        if let Some(identity) = identity.filter(|f| f.size > 0) {
            add.push(identity);
        }
    }
    gone_many(j, &gone, CHANGED, out)?;
    for batch in add.chunks(ADD_BATCH) {
        let added = j.add_files(batch, FileState::Settling)?;
        for (identity, added) in batch.iter().zip(added) {
            if added.inserted {
                out.journaled.push((added.id, identity.path()));
            }
            if added.state == FileState::Settling {
                out.track.push(Settling {
                    id: added.id,
                    identity: identity.clone(),
                });
            }
        }
    }
    Ok(())
}
