//! Whether one folder's root is there: the blocking check of a root, the
//! preparation of a folder once its root is available, the periodic look
//! at the root (gone, swapped, unmounted), and telling the registry of
//! roots that the folder is away or back.
//!
//! It must not touch the journal's file rows nor the settle clocks: a root
//! that goes away leaves its files waiting, never gone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, info};

use super::{join_err, relative_inside, Folder, FolderError};
use crate::after_upload::move_target;
use crate::config::AfterUpload;
use crate::roots;
use crate::watch::identify::MtimeRule;
use crate::watch::scan::Tree;
use crate::watch::{show, WatchError};

pub(crate) fn unavailable(root: &Path, e: io::Error) -> WatchError {
    match e.kind() {
        io::ErrorKind::NotFound => WatchError::Missing {
            path: root.to_path_buf(),
        },
        io::ErrorKind::NotADirectory => WatchError::NotADirectory {
            path: root.to_path_buf(),
        },
        _ if roots::may_be_share(&e) => WatchError::Away {
            path: root.to_path_buf(),
            why: roots::describe_errno(&e),
        },
        _ => WatchError::Unreadable {
            path: root.to_path_buf(),
            source: e,
        },
    }
}

/// Checks that a watch root is a readable directory. Blocking.
pub(crate) fn check_root(root: &Path) -> Result<PathBuf, WatchError> {
    let meta = fs::metadata(root).map_err(|e| unavailable(root, e))?;
    if !meta.is_dir() {
        return Err(WatchError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    fs::read_dir(root).map_err(|e| unavailable(root, e))?;
    fs::canonicalize(root).map_err(|e| unavailable(root, e))
}

impl Folder {
    /// Checks the root and (re)builds the tree; the error names the folder.
    /// A root that was a mount point (as this process or the journal last
    /// saw it) and is not one now is away, not empty.
    pub(crate) async fn prepare(&mut self) -> Result<(), WatchError> {
        let root = self.root.clone();
        let expected = match self.record {
            Some(r) => Some(r),
            None => self.journal.call(move |j| j.root_record(&root)).await?,
        };
        let root = self.root.clone();
        let mut filter = self.base_filter.clone();
        let settings = self.settings.clone();
        let (tree, state) = tokio::task::spawn_blocking(move || -> Result<_, WatchError> {
            let canonical_root = check_root(&root)?;
            let state =
                roots::probe(&root, expected.as_ref(), true).map_err(|a| WatchError::Away {
                    path: root.clone(),
                    why: a.why,
                })?;
            // `move_to` reached through a symlink is still inside.
            if let AfterUpload::Move(to) = &settings.after_upload {
                if let Ok(target) = fs::canonicalize(move_target(&root, to)) {
                    if let Some(rel) = relative_inside(&target, &canonical_root) {
                        filter.skip_subtree(rel);
                    }
                }
            }
            let tree = Tree {
                root,
                canonical_root,
                filter,
                recursive: settings.recursive,
                follow_symlinks: settings.follow_symlinks,
                // Network filesystems cache attributes: settle checks open
                // the file, which revalidates them (close-to-open).
                fresh: state.network.is_some(),
            };
            Ok((tree, state))
        })
        .await
        .map_err(|e| WatchError::Task(e.to_string()))??;
        self.rule = MtimeRule::new(self.settings.modify_window, state.mtime_granularity);
        if let Some(kind) = state.network {
            debug!(folder = %show(&self.root), filesystem = kind, "settle checks read fresh attributes");
        }
        let record = state.record;
        if expected != Some(record) {
            let root = self.root.clone();
            self.journal
                .call(move |j| j.save_root(&root, record))
                .await?;
        }
        self.record = Some(record);
        // Available again only once a scan has brought the journal in line
        // (after a remount, the rows' hints); see `mark_back`.
        self.shares.remember(&self.root, record);
        self.tree = Some(Arc::new(tree));
        Ok(())
    }

    /// The root is available and its rows are in line with it: its uploads
    /// may go (again).
    pub(crate) fn mark_back(&self) {
        let Some(record) = self.record else {
            return;
        };
        if self.shares.set_back(&self.root, record) {
            info!(folder = %show(&self.root), "watch folder is available again; its uploads resume");
            self.work.notify_waiters();
        }
    }

    /// The root is unavailable: its uploads wait (see [`Shares`]).
    pub(crate) fn set_away(&self, e: &WatchError) {
        if matches!(e, WatchError::Journal(_) | WatchError::Task(_)) {
            return;
        }
        self.shares.set_away(&self.root, &e.to_string());
    }

    /// Looks at the root now: still there, still the same directory, still
    /// mounted? `Unavailable` when it went away, `Restart` when another
    /// directory or filesystem took its place (a remount).
    pub(crate) async fn check_root(&self) -> Result<(), FolderError> {
        let root = self.root.clone();
        let expected = self.record;
        let state =
            tokio::task::spawn_blocking(move || roots::probe(&root, expected.as_ref(), false))
                .await
                .map_err(join_err)?;
        match state {
            Err(a) => Err(FolderError::Unavailable(WatchError::Away {
                path: self.root.clone(),
                why: a.why,
            })),
            Ok(s) if Some(s.record) != expected => {
                Err(FolderError::Unavailable(WatchError::Remounted {
                    path: self.root.clone(),
                }))
            }
            Ok(_) => {
                // An upload worker may have found it away meanwhile.
                if self.tree.is_some() && self.shares.is_away(&self.root) {
                    self.mark_back();
                }
                Ok(())
            }
        }
    }
}
