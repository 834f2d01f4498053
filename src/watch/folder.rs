//! One watch folder: its tree, its watcher, its settling files, and the three
//! things that move its files through the journal: the reconcile scan, the
//! handling of event hints, and the settle checks.
//!
//! All of it runs in one task per folder, one step at a time, so this task
//! is the only writer of its folder's `settling` rows and the settle clocks
//! always agree with the journal (a journal error clears them; the next
//! reconcile rebuilds them from the journal and the disk).
//!
//! This file owns the `Folder` itself (its state, its construction, its
//! errors); its steps live beside it: `task` (the loop), `availability`
//! (root checks), `watcher`, `reconcile`, `hints`, `settled`, and
//! `transitions` (the journal steps they share). It must not grow steps of
//! its own.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

mod availability;
mod hints;
mod reconcile;
mod settled;
mod task;
mod transitions;
mod watcher;

pub(crate) use availability::check_root;
pub(crate) use task::{run_folder, First, Timing};

use super::filter::{Filter, QueueRules};
use super::identify::MtimeRule;
use super::notifier::{Backend, Sink};
use super::report::NotReady;
use super::scan::Tree;
use super::settle::Settler;
use super::WatchError;
use crate::after_upload::move_target;
use crate::config::{AfterUpload, WatchSettings};
use crate::journal::{JournalError, JournalHandle, RootRecord};
use crate::roots::Shares;

/// Why a folder step stopped.
#[derive(Debug)]
pub(crate) enum FolderError {
    /// The root is missing, not a directory, or unreadable.
    Unavailable(WatchError),
    Journal(JournalError),
    /// A blocking step panicked. Nothing was half-written (journal
    /// transitions are atomic): the folder is reconciled again later.
    Task(String),
    Cancelled,
}

impl From<JournalError> for FolderError {
    fn from(e: JournalError) -> Self {
        FolderError::Journal(e)
    }
}

fn join_err(e: tokio::task::JoinError) -> FolderError {
    FolderError::Task(e.to_string())
}

pub(crate) struct Folder {
    pub settings: WatchSettings,
    /// The root as journaled (absolute, normalised).
    pub root: PathBuf,
    /// Name rules without what depends on the disk (canonical paths).
    base_filter: Filter,
    /// Where each settled file goes in the upload queue.
    queue: QueueRules,
    /// Set while the root is available.
    tree: Option<Arc<Tree>>,
    pub settler: Settler,
    journal: JournalHandle,
    work: Arc<Notify>,
    sidecars: bool,
    /// Taken out while a blocking step uses it, put back after.
    backend: Option<Backend>,
    /// Kept to build a polling watcher when inotify hits its limit.
    sink: Option<Sink>,
    /// An inotify limit was hit: switch to polling.
    pub limit_hit: Option<notify::Error>,
    /// The registry of unavailable roots (shared with the workers).
    shares: Arc<Shares>,
    /// The root's identity when last seen available.
    record: Option<RootRecord>,
    /// When two mtimes are the same file's, on this folder's filesystem.
    rule: MtimeRule,
    /// Files the settle checks marked failed (unreadable), for the report
    /// of a foreground run.
    pub failed: Vec<i64>,
    /// A foreground run: each settling file gets one check, and what is not
    /// ready then goes to `not_ready` instead of back on its clock.
    pub once: bool,
    pub not_ready: Vec<NotReady>,
}

impl std::fmt::Debug for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Folder")
            .field("root", &self.root)
            .field("settling", &self.settler.len())
            .field("backend", &self.backend)
            .finish()
    }
}

/// Whether `io` says the path is not there (any more).
fn not_there(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn relative_inside(path: &Path, root: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    let normal = rel.components().all(|c| matches!(c, Component::Normal(_)));
    (normal && !rel.as_os_str().is_empty()).then(|| rel.to_path_buf())
}

impl Folder {
    /// `others` are the roots of the other watch folders: one nested in this
    /// one is left to its own settings, never journaled twice.
    pub(crate) fn new(
        settings: WatchSettings,
        others: &[PathBuf],
        journal: JournalHandle,
        work: Arc<Notify>,
        sidecars: bool,
        shares: Arc<Shares>,
    ) -> Result<Folder, WatchError> {
        let root = settings.root();
        let mut base_filter = Filter::new(&settings.include, &settings.exclude)?;
        let queue = QueueRules::new(&settings.priority, settings.order)?;
        for other in others {
            if let Some(rel) = relative_inside(other, &root) {
                base_filter.skip_subtree(rel);
            }
        }
        if let AfterUpload::Move(to) = &settings.after_upload {
            if let Some(rel) = relative_inside(&move_target(&root, to), &root) {
                base_filter.skip_subtree(rel);
            }
        }
        Ok(Folder {
            settler: Settler::new(settings.settle),
            settings,
            root,
            base_filter,
            queue,
            tree: None,
            journal,
            work,
            sidecars,
            backend: None,
            sink: None,
            limit_hit: None,
            shares,
            record: None,
            rule: MtimeRule::exact(),
            failed: Vec::new(),
            once: false,
            not_ready: Vec::new(),
        })
    }

    pub(crate) fn is_prepared(&self) -> bool {
        self.tree.is_some()
    }

    /// Drops the watcher and the clocks (the root went away).
    pub(crate) fn stop(&mut self) {
        self.backend = None;
        self.sink = None;
        self.tree = None;
        self.settler.clear();
    }

    fn tree(&self) -> Result<Arc<Tree>, FolderError> {
        self.tree.clone().ok_or_else(|| {
            FolderError::Unavailable(WatchError::Missing {
                path: self.root.clone(),
            })
        })
    }
}

/// `d` ± 10 %, so folders (and machines) do not scan in step.
pub(crate) fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}
