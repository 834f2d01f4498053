//! One watch folder: its tree, its watcher, its settling files, and the three
//! things that move its files through the journal: the reconcile scan, the
//! handling of event hints, and the settle checks.
//!
//! All of it runs in one task per folder, one step at a time, so this task
//! is the only writer of its folder's `settling` rows and the settle clocks
//! always agree with the journal (a journal error clears them; the next
//! reconcile rebuilds them from the journal and the disk).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

mod hints;
mod settled;

use super::after::{after_upload, move_target, sidecar_path};
use super::filter::Filter;
use super::identify::MtimeRule;
use super::notifier::{self, Backend, Kind, Sink};
use super::scan::{self, Tree};
use super::settle::{Settler, Settling};
use super::{journal_root, show, ScanReport, WatchError};
use crate::config::{AfterUpload, WatchMode, WatchSettings};
use crate::journal::{
    FileIdentity, FileRow, FileState, Journal, JournalError, JournalHandle, Resettled, RootRecord,
};
use crate::roots::{self, Shares};
use crate::sample::Sample;

/// A scan names at most this many files it could not sample.
const UNREADABLE_LOGGED: usize = 10;

/// New files are journaled this many per transaction.
const ADD_BATCH: usize = 1000;

/// With `keep`, a missing sidecar is written again by a scan only for files
/// uploaded this recently: enough to cover a crash between `done` and the
/// sidecar, without hashing years of old uploads (or re-creating sidecars
/// someone deleted on purpose).
const SIDECAR_CATCH_UP_MS: i64 = 7 * 24 * 3600 * 1000;

const VANISHED: &str = "the file vanished before it was uploaded";
const CHANGED: &str =
    "the file changed before it was uploaded (its new content is journaled as a new file)";
const EMPTY: &str = "the file is empty; it is journaled again once it has bytes";

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

/// What a journal step asks of the settle clocks.
#[derive(Debug, Default)]
struct Absorbed {
    track: Vec<Settling>,
    journaled: Vec<(i64, PathBuf)>,
    /// Rows marked gone, with their path and why.
    gone: Vec<(i64, PathBuf, &'static str)>,
    /// `gone` rows whose file came back.
    revived: Vec<(i64, PathBuf)>,
}

pub(crate) struct Folder {
    pub settings: WatchSettings,
    /// The root as journaled (absolute, normalised).
    pub root: PathBuf,
    /// Name rules without what depends on the disk (canonical paths).
    base_filter: Filter,
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
        let root = journal_root(&settings.path);
        let mut base_filter = Filter::new(&settings.include, &settings.exclude)?;
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
        })
    }

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

    pub(crate) fn is_polling(&self) -> bool {
        self.backend.as_ref().map(Backend::kind) == Some(Kind::Poll)
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

    /// Starts watching: inotify, or polling on network filesystems, when
    /// asked, or when inotify cannot (its limits). Never fails: the periodic
    /// reconcile is the last resort.
    pub(crate) async fn start_watching(&mut self, sink: Sink) {
        let root = self.root.clone();
        let mode = self.settings.mode;
        let kind = tokio::task::spawn_blocking(move || match mode {
            WatchMode::Events => Kind::Inotify,
            WatchMode::Poll => Kind::Poll,
            WatchMode::Auto => match notifier::network_filesystem_of(&root) {
                Some(fs) => {
                    info!(folder = %show(&root), filesystem = fs,
                        "network filesystem: polling it (inotify does not see other machines' writes)");
                    Kind::Poll
                }
                None => Kind::Inotify,
            },
        })
        .await
        .unwrap_or(Kind::Poll);
        self.sink = Some(sink.clone());
        self.backend = None;
        if kind == Kind::Inotify {
            let made = tokio::task::spawn_blocking(move || Backend::inotify(sink)).await;
            match made {
                Ok(Ok(backend)) => {
                    self.backend = Some(backend);
                    return;
                }
                Ok(Err(e)) => self.warn_fallback(&e),
                Err(e) => warn!(folder = %show(&self.root), error = %e,
                    "cannot start inotify; polling the folder instead"),
            }
        }
        self.start_polling().await;
    }

    fn warn_fallback(&self, e: &notify::Error) {
        match notifier::limit_error(&self.root, e) {
            Some(limit) => warn!(folder = %show(&self.root), "{limit}"),
            None => warn!(folder = %show(&self.root), error = %notifier::describe(e),
                "cannot watch the folder with inotify; polling it instead"),
        }
    }

    /// Replaces the watcher by notify's polling watcher.
    pub(crate) async fn start_polling(&mut self) {
        self.backend = None;
        let Some(sink) = self.sink.clone() else {
            return;
        };
        let root = self.root.clone();
        let recursive = self.settings.recursive;
        let interval = self.settings.poll_interval;
        let follow = self.settings.follow_symlinks;
        let made = tokio::task::spawn_blocking(move || {
            Backend::poll(sink, &root, recursive, interval, follow)
        })
        .await;
        match made {
            Ok(Ok(backend)) => {
                info!(folder = %show(&self.root), interval = %humantime::format_duration(interval),
                    "polling the watch folder");
                self.backend = Some(backend);
            }
            Ok(Err(e)) => warn!(folder = %show(&self.root), error = %notifier::describe(&e),
                "cannot poll the folder; only the periodic scans will find its files"),
            Err(e) => warn!(folder = %show(&self.root), error = %e,
                "cannot poll the folder; only the periodic scans will find its files"),
        }
    }

    /// After an inotify limit: the folder is polled from now on.
    pub(crate) async fn fall_back_to_polling(&mut self) {
        if let Some(e) = self.limit_hit.take() {
            if self.backend.as_ref().map(Backend::kind) == Some(Kind::Inotify) {
                self.warn_fallback(&e);
                self.start_polling().await;
            }
        }
    }

    fn tree(&self) -> Result<Arc<Tree>, FolderError> {
        self.tree.clone().ok_or_else(|| {
            FolderError::Unavailable(WatchError::Missing {
                path: self.root.clone(),
            })
        })
    }

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

    fn log_revived(&self, revived: &[(i64, PathBuf)]) {
        for (id, path) in revived {
            info!(id, path = %show(path),
                "the file is back as it was journaled; it is no longer gone and its upload resumes");
        }
        if !revived.is_empty() {
            self.work.notify_waiters();
        }
    }

    fn log_gone(&self, gone: &[(i64, PathBuf, &'static str)]) {
        for (id, path, reason) in gone {
            info!(id, path = %show(path), "{reason}; marked gone");
        }
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
            let video_json = self.journal.call(move |j| j.video_json(id)).await?;
            let settings = self.settings.clone();
            let path = row.path();
            let outcome = tokio::task::spawn_blocking(move || {
                after_upload(&settings, &row, video_json.as_deref(), sidecars)
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

/// Adds a watch for `dir` unless a limit was already hit.
fn watch_dir(
    backend: Option<&mut Backend>,
    dir: &Path,
    fresh: bool,
    limit: &mut Option<notify::Error>,
) {
    let Some(backend) = backend else {
        return;
    };
    if limit.is_some() {
        return;
    }
    if let Err(e) = backend.watch_dir(dir, fresh) {
        if notifier::inotify_limit(&e).is_some() {
            *limit = Some(e);
        } else {
            // Vanished or unreadable: the walk finds out and says so.
            debug!(dir = %show(dir), error = %notifier::describe(&e), "cannot watch a directory");
        }
    }
}

/// Marks `files` gone in one transaction (on the journal thread).
fn gone_many(
    j: &mut Journal,
    files: &[(i64, PathBuf)],
    reason: &'static str,
    out: &mut Absorbed,
) -> Result<(), JournalError> {
    if files.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = files.iter().map(|(id, _)| *id).collect();
    let changed: HashSet<i64> = j.mark_gone_many(&ids, reason)?.into_iter().collect();
    out.gone.extend(
        files
            .iter()
            .filter(|(id, _)| changed.contains(id))
            .map(|(id, path)| (*id, path.clone(), reason)),
    );
    Ok(())
}

/// A `gone` row whose file is back (on the journal thread): queued again,
/// or settling again (then its clock starts).
fn revive_one(
    j: &mut Journal,
    id: i64,
    to: FileState,
    identity: &FileIdentity,
    out: &mut Absorbed,
) -> Result<(), JournalError> {
    match j.revive(id, to) {
        Ok(()) => {
            out.revived.push((id, identity.path()));
            if to == FileState::Settling {
                j.resettle(id, identity)?;
                out.track.push(Settling {
                    id,
                    identity: identity.clone(),
                });
            }
            Ok(())
        }
        // Someone else moved it on: not ours.
        Err(JournalError::WrongState { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A settling row follows its changed file (on the journal thread).
fn follow(
    j: &mut Journal,
    id: i64,
    identity: &FileIdentity,
    out: &mut Absorbed,
) -> Result<(), JournalError> {
    match j.resettle(id, identity) {
        Ok(Resettled::Updated) => out.track.push(Settling {
            id,
            identity: identity.clone(),
        }),
        Ok(Resettled::Merged { into, state }) => {
            out.gone.push((
                id,
                identity.path(),
                "the file became identical to another journaled file",
            ));
            if state == FileState::Settling {
                out.track.push(Settling {
                    id: into,
                    identity: identity.clone(),
                });
            }
        }
        // No longer settling (someone else moved it on): not ours to follow.
        Err(JournalError::WrongState { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// `d` ± 10 %, so folders (and machines) do not scan in step.
pub(crate) fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}
