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
        if self.shares.set_back(&self.root, record) {
            info!(folder = %show(&self.root), "watch folder is available again; its uploads resume");
            self.work.notify_waiters();
        }
        self.tree = Some(Arc::new(tree));
        Ok(())
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
            Ok(_) => Ok(()),
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
        let plan = tokio::task::spawn_blocking(move || {
            scan::plan(walked.files, rows, rule, &mut |f| sample_tree.sample(f))
        })
        .await
        .map_err(join_err)?;
        report.already_done = plan.already_done;
        for (path, kind) in &plan.unreadable {
            warn!(path = %show(path), error = %io::Error::from(*kind),
                "cannot read the file for its content sample; it is left as it is until the next scan");
        }
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
        // A path that vanished may be the whole share going away.
        self.check_root().await?;
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
        let checks = tokio::task::spawn_blocking(move || {
            due.into_iter()
                .map(|s| settle_check(&tree, s))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(join_err)?;
        let mut ready = Vec::new();
        let mut changed = Vec::new();
        let mut vanished = Vec::new();
        let mut empty = Vec::new();
        let mut unreadable = Vec::new();
        let mut share_errors = false;
        let now = Instant::now();
        for check in checks {
            match check {
                Check::Ready(s, sample) => ready.push((s, sample)),
                Check::Changed(id, identity) => changed.push((id, identity)),
                Check::Vanished(id, path) => vanished.push((id, path)),
                Check::Empty(id, path) => empty.push((id, path)),
                Check::Unreadable(s, e) if roots::may_be_share(&e) => {
                    share_errors = true;
                    self.settler.track(s, now);
                }
                Check::Unreadable(s, e) => unreadable.push((s, e.to_string())),
                // An I/O error (a network hiccup): look again later.
                Check::Unknown(s) => self.settler.track(s, now),
            }
        }
        if share_errors || !vanished.is_empty() {
            // Not the files: the share.
            self.check_root().await?;
        }
        let twins = self.find_twins(&ready).await?;
        let (ready_j, unreadable_j) = (ready.clone(), unreadable.clone());
        let (queued, merged, absorbed) = self
            .journal
            .call(move |j| {
                j.atomically(|j| {
                    let mut out = Absorbed::default();
                    let mut merged = Vec::new();
                    let mut to_queue = Vec::new();
                    for (s, sample) in &ready_j {
                        match twins.iter().find(|(id, _)| *id == s.id) {
                            Some((_, twin)) => {
                                merge_into_twin(j, s, twin, *sample, &mut out)?;
                                merged.push((s.identity.path(), twin.clone()));
                            }
                            None => to_queue.push((s.id, *sample)),
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
                    Ok((queued, merged, out))
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
            self.settler.track(file, now);
        }
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
                if twins.iter().any(|(t, _)| *t == id) {
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
    /// The sample could not be read.
    Unreadable(Settling, io::Error),
    Unknown(Settling),
}

/// One settle check (blocking): the file as it is now, and its sample when
/// it is as it was.
fn settle_check(tree: &Tree, s: Settling) -> Check {
    let path = s.identity.path();
    match tree.stat(&path) {
        Err(e) if not_there(&e) => Check::Vanished(s.id, path),
        Err(_) => Check::Unknown(s),
        Ok(m) if !m.is_file() => Check::Vanished(s.id, path),
        Ok(m) => {
            let now = FileIdentity::from_metadata(&s.identity.root, &s.identity.rel_path, &m);
            if now != s.identity {
                Check::Changed(s.id, now)
            } else if now.size == 0 {
                Check::Empty(s.id, path)
            } else {
                match tree.sample(&now) {
                    Ok(sample) => Check::Ready(s, sample),
                    Err(e) if not_there(&e) => Check::Vanished(s.id, path),
                    Err(e) => Check::Unreadable(s, e),
                }
            }
        }
    }
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
    if twin.state == FileState::Gone {
        revive_one(j, twin.id, FileState::Queued, &s.identity, out)?;
    }
    Ok(())
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
                FileState::Gone => {
                    let to = if row.sample.is_some() {
                        FileState::Queued
                    } else {
                        FileState::Settling
                    };
                    revive_one(j, row.id, to, identity, out)?;
                }
                _ => {}
            }
        }
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

/// `d` ± 10 %, so folders (and machines) do not scan in step.
pub(crate) fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}
