//! The watch stage: finds new files in the watch folders, journals them as
//! `settling`, and queues each once it has stopped changing.
//!
//! ```text
//!  inotify | poll ──hints──▶ folder task ──add / resettle / ready / gone──▶ journal
//!                               ▲    │                                         │
//!  reconcile scan (start, ──────┘    └── settle clocks          work.notify ──▶ upload workers
//!  overflow, timer)
//! ```
//!
//! Events are hints: the directory plus the journal are the truth. Each
//! folder runs in its own task (a missing folder does not stop the others)
//! which scans the tree against the journal at start, after lost events and
//! on a jittered timer. See [`run`], [`scan_and_settle`] and [`after_upload`].
//!
//! - `filter`: the name rules (built-in ignore list, include, exclude).
//! - `scan`: the tree walk and its diff against the journal.
//! - `settle`: the readiness clocks of settling files.
//! - `notifier`: inotify or polling, and their limits.
//! - `folder`: one folder's steps (reconcile, hints, settle checks).
//! - `after`: keep, delete or move after upload, and the sidecar.

mod after;
mod filter;
mod folder;
mod follow;
mod identify;
mod notifier;
mod scan;
mod settle;

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use after::{after_upload, sidecar_path, AfterUploadOutcome, SIDECAR_SUFFIX};
pub use follow::follow;

use crate::config::WatchSettings;
use crate::journal::{FileRow, FileState, JournalError, JournalHandle};
use crate::roots::Shares;
use folder::{Folder, FolderError};

/// How often a folder is scanned against the journal when nothing asks.
pub const DEFAULT_RECONCILE_EVERY: Duration = Duration::from_secs(15 * 60);
/// How often a missing or unreadable folder is looked for again.
pub const DEFAULT_RETRY_UNAVAILABLE_EVERY: Duration = Duration::from_secs(2);
/// How often an available root is checked (one stat and one directory read).
pub const DEFAULT_ROOT_CHECK_EVERY: Duration = Duration::from_secs(2);
/// A folder still unavailable is logged again at most this often.
const UNAVAILABLE_LOG_EVERY: Duration = Duration::from_secs(15 * 60);
/// After a journal error, the folder is rebuilt from a scan this much later.
const JOURNAL_RETRY: Duration = Duration::from_secs(30);
/// Event batches drained at once (paths are deduplicated per batch).
const DRAIN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "watch folder {} does not exist: create or mount it, or fix watch.path",
        show(path)
    )]
    Missing { path: PathBuf },
    #[error(
        "watch folder {} is not a directory: point watch.path at a directory",
        show(path)
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "cannot read watch folder {}: {source}; check its permissions for the user ingestd runs as",
        show(path)
    )]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("watch folder {} is unavailable: {why}", show(path))]
    Away { path: PathBuf, why: String },
    #[error(
        "watch folder {} was replaced under ingestd (remounted or restored); watching it again",
        show(path)
    )]
    Remounted { path: PathBuf },
    #[error("invalid pattern {pattern:?} in watch.include or watch.exclude: {source}")]
    Glob {
        pattern: String,
        source: globset::Error,
    },
    #[error(
        "watch folder {} is configured twice; keep one [[watch]] entry for it",
        show(path)
    )]
    Duplicate { path: PathBuf },
    #[error("cannot watch {} with inotify: the limit {sysctl} is reached, so this folder is polled instead. Raise the limit with `sysctl -w {sysctl}={suggested}` (persist it in /etc/sysctl.d/90-ingestd.conf)", show(path))]
    InotifyLimit {
        path: PathBuf,
        sysctl: &'static str,
        suggested: u32,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("file {id} is {state}, not done: the after-upload action is refused")]
    NotDone { id: i64, state: FileState },
    #[error(
        "file {id} ({}) does not belong to watch folder {}",
        show(path),
        show(folder)
    )]
    NotInFolder {
        id: i64,
        path: PathBuf,
        folder: PathBuf,
    },
    #[error("after upload: cannot {op} {}: {source}", show(path))]
    AfterUpload {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "after upload: cannot move to {}: that name and its numbered variants are all taken",
        show(path)
    )]
    NoFreeName { path: PathBuf },
    #[error("a watch task failed: {0}")]
    Task(String),
}

impl WatchError {
    /// The folder or file the error is about, when it names one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            WatchError::Missing { path }
            | WatchError::NotADirectory { path }
            | WatchError::Unreadable { path, .. }
            | WatchError::Away { path, .. }
            | WatchError::Remounted { path }
            | WatchError::Duplicate { path }
            | WatchError::InotifyLimit { path, .. }
            | WatchError::NotInFolder { path, .. }
            | WatchError::AfterUpload { path, .. }
            | WatchError::NoFreeName { path } => Some(path),
            _ => None,
        }
    }
}

/// Tuning of the watch stage.
#[derive(Debug)]
pub struct WatchOptions {
    /// How often every folder is scanned against the journal (jittered by
    /// ±10 %), on top of the scans at start and after lost events.
    pub reconcile_every: Duration,
    /// How often a missing or unreadable folder is looked for again.
    pub retry_unavailable_every: Duration,
    /// Master switch for `NAME.ingestd.json` sidecars (with `keep` and
    /// `move`), written when a scan applies an after-upload action that a
    /// crash interrupted; each folder's `sidecar` key decides under it.
    pub sidecars: bool,
    /// [`run`] sends the report of the first scan of every folder here once
    /// all have been scanned (or found unavailable): the moment to tell
    /// systemd READY=1. [`scan_and_settle`] does not use it.
    pub ready: Option<oneshot::Sender<ScanReport>>,
    /// The registry of unavailable roots this stage keeps up to date (the
    /// upload workers and monitoring read it).
    pub shares: Arc<Shares>,
    /// How often an available root is looked at (is it still there, still
    /// the same, still mounted?).
    pub root_check_every: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            reconcile_every: DEFAULT_RECONCILE_EVERY,
            retry_unavailable_every: DEFAULT_RETRY_UNAVAILABLE_EVERY,
            sidecars: true,
            ready: None,
            shares: Arc::default(),
            root_check_every: DEFAULT_ROOT_CHECK_EVERY,
        }
    }
}

/// What scans found (summed over folders).
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Folders scanned.
    pub folders: usize,
    /// Wanted files found on disk.
    pub files: usize,
    /// Files journaled for the first time (as settling).
    pub journaled: usize,
    /// Files found whose identity is already `done`: never uploaded again.
    pub already_done: usize,
    /// Unfinished files marked gone (vanished, or changed before upload).
    pub gone: usize,
    /// After-upload actions applied to done files found still in place.
    pub after_upload: usize,
    /// Files queued for upload ([`scan_and_settle`]).
    pub queued: usize,
    /// Directories that could not be listed (their files are left as they are).
    pub unreadable: usize,
    /// Folders that could not be scanned, each with why (names the path).
    pub unavailable: Vec<WatchError>,
    /// Files that failed before they could be queued ([`scan_and_settle`]).
    pub failed: Vec<i64>,
    pub elapsed: Duration,
}

impl ScanReport {
    fn add(&mut self, other: ScanReport) {
        self.folders += other.folders;
        self.files += other.files;
        self.journaled += other.journaled;
        self.already_done += other.already_done;
        self.gone += other.gone;
        self.after_upload += other.after_upload;
        self.queued += other.queued;
        self.unreadable += other.unreadable;
        self.unavailable.extend(other.unavailable);
        self.failed.extend(other.failed);
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

pub(crate) use crate::display::show_path as show;

/// The root under which a folder's files are journaled: absolute, without
/// `.`, `..` or a trailing slash, so that `/srv/in/` and `/srv/in` are one
/// folder across restarts. Symlinks are kept (the configured name is what
/// the user knows).
pub fn journal_root(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The watch folder a journal row belongs to (to call [`after_upload`]).
pub fn folder_of<'a>(watches: &'a [WatchSettings], row: &FileRow) -> Option<&'a WatchSettings> {
    watches
        .iter()
        .find(|w| journal_root(&w.path) == row.identity.root)
}

/// Whether the file of a `gone` row is back as it was journaled (same size
/// and mtime at its path, and the same content sample if it had one), for
/// `ingestd retry`. Blocking. The error says what differs.
pub fn file_is_back(row: &FileRow) -> Result<(), String> {
    let path = row.path();
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", show(&path)))?;
    after::same_file(row, &meta, true)
}

/// Checks that a folder can be watched: its patterns compile and its path
/// is a readable directory (for `check-config` and start-up messages).
pub fn check_folder(watch: &WatchSettings) -> Result<(), WatchError> {
    filter::Filter::new(&watch.include, &watch.exclude)?;
    folder::check_root(&journal_root(&watch.path)).map(|_| ())
}

fn folders(
    watches: &[WatchSettings],
    journal: &JournalHandle,
    work: &Arc<Notify>,
    opts: &WatchOptions,
) -> Result<Vec<Folder>, WatchError> {
    let sidecars = opts.sidecars;
    let roots: Vec<PathBuf> = watches.iter().map(|w| journal_root(&w.path)).collect();
    let mut seen = HashSet::new();
    for root in &roots {
        if !seen.insert(root) {
            return Err(WatchError::Duplicate { path: root.clone() });
        }
    }
    watches
        .iter()
        .map(|w| {
            let sidecar = sidecars && w.sidecar;
            Folder::new(
                w.clone(),
                &roots,
                journal.clone(),
                work.clone(),
                sidecar,
                opts.shares.clone(),
            )
        })
        .collect()
}

/// `ingestd run --once`: scans every folder, then waits until every
/// settling file is queued (or vanished, or found empty), then returns; the
/// caller uploads what is queued. Folders that cannot be scanned are listed
/// in the report's `unavailable` (the others are scanned anyway). Returns
/// early, with what was done, when `cancel` fires.
pub async fn scan_and_settle(
    watches: &[WatchSettings],
    journal: JournalHandle,
    work: Arc<Notify>,
    opts: WatchOptions,
    cancel: CancellationToken,
) -> Result<ScanReport, WatchError> {
    let started = std::time::Instant::now();
    let mut folders = folders(watches, &journal, &work, &opts)?;
    let mut report = ScanReport::default();
    for folder in &mut folders {
        if cancel.is_cancelled() {
            return Ok(report);
        }
        if let Err(e) = folder.prepare().await {
            error!(folder = %show(&folder.root), "{e}");
            folder.set_away(&e);
            report.unavailable.push(e);
            continue;
        }
        match folder.reconcile(&cancel).await {
            Ok(r) => {
                folder.mark_back();
                report.add(r);
            }
            Err(FolderError::Unavailable(e)) => {
                error!(folder = %show(&folder.root), "{e}");
                folder.set_away(&e);
                folder.stop();
                report.unavailable.push(e);
            }
            Err(FolderError::Cancelled) => return Ok(report),
            Err(FolderError::Journal(e)) => return Err(e.into()),
            Err(FolderError::Task(e)) => return Err(WatchError::Task(e)),
        }
    }
    loop {
        let next = folders
            .iter()
            .filter_map(|f| f.settler.next_deadline())
            .min();
        let Some(next) = next else {
            break;
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(report),
            _ = tokio::time::sleep_until(next) => {}
        }
        for folder in folders.iter_mut().filter(|f| f.is_prepared()) {
            match folder.settle_due().await {
                Ok(n) => report.queued += n,
                Err(FolderError::Journal(e)) => return Err(e.into()),
                Err(FolderError::Task(e)) => return Err(WatchError::Task(e)),
                Err(FolderError::Cancelled) => return Ok(report),
                Err(FolderError::Unavailable(e)) => {
                    folder.set_away(&e);
                    folder.stop();
                    report.unavailable.push(e);
                }
            }
        }
    }
    for folder in &mut folders {
        report.failed.append(&mut folder.failed);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// What a folder task reports once, after its first scan.
#[derive(Debug)]
enum First {
    Scanned(ScanReport),
    Unavailable(WatchError),
}

/// The watch stage, until `cancel`: every folder watched (inotify or
/// polling), scanned against the journal at start, after lost events and
/// every `opts.reconcile_every`; settled files queued and `work` notified.
///
/// A folder that is missing or unreadable is logged (naming it) and looked
/// for again every `opts.retry_unavailable_every` while the others work; it
/// is listed in the report sent to `opts.ready`. Errors: invalid patterns or
/// a folder configured twice (at once), and a journal that stopped.
pub async fn run(
    watches: Vec<WatchSettings>,
    journal: JournalHandle,
    work: Arc<Notify>,
    mut opts: WatchOptions,
    cancel: CancellationToken,
) -> Result<(), WatchError> {
    let roots: Vec<PathBuf> = watches.iter().map(|w| journal_root(&w.path)).collect();
    opts.shares.retain(&roots);
    let folders = folders(&watches, &journal, &work, &opts)?;
    let (first_tx, mut first_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let timing = Timing {
        reconcile_every: opts.reconcile_every,
        retry_every: opts.retry_unavailable_every,
        root_check_every: opts.root_check_every,
    };
    let mut waiting = folders.len();
    for folder in folders {
        tasks.spawn(run_folder(folder, timing, first_tx.clone(), cancel.clone()));
    }
    drop(first_tx);
    let mut report = ScanReport::default();
    if waiting == 0 {
        if let Some(ready) = opts.ready.take() {
            let _ = ready.send(ScanReport::default());
        }
    }
    loop {
        tokio::select! {
            first = first_rx.recv(), if waiting > 0 => {
                let closed = first.is_none();
                match first {
                    Some(First::Scanned(r)) => report.add(r),
                    Some(First::Unavailable(e)) => report.unavailable.push(e),
                    None => {}
                }
                waiting = waiting.saturating_sub(1);
                if waiting == 0 || closed {
                    waiting = 0;
                    if let Some(ready) = opts.ready.take() {
                        // The receiver may not care any more.
                        let _ = ready.send(std::mem::take(&mut report));
                    }
                }
            }
            joined = tasks.join_next() => match joined {
                None => return Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(WatchError::Task(e.to_string())),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    reconcile_every: Duration,
    retry_every: Duration,
    root_check_every: Duration,
}

/// Logs "unavailable" once, then at most every [`UNAVAILABLE_LOG_EVERY`].
#[derive(Debug, Default)]
struct UnavailableLog {
    since: Option<std::time::Instant>,
    last: Option<std::time::Instant>,
}

impl UnavailableLog {
    fn failed(&mut self, root: &Path, e: &WatchError, retry: Duration) {
        let now = std::time::Instant::now();
        match self.last {
            None => {
                error!(folder = %show(root), retry_every = %humantime::format_duration(retry),
                    "{e}; the other folders keep working and this one is looked for again");
                self.since = Some(now);
                self.last = Some(now);
            }
            Some(last) if now.duration_since(last) >= UNAVAILABLE_LOG_EVERY => {
                let for_s = self.since.map_or(0, |s| now.duration_since(s).as_secs());
                warn!(folder = %show(root), unavailable_for_s = for_s, "{e}");
                self.last = Some(now);
            }
            Some(_) => {}
        }
    }

    fn recovered(&mut self, root: &Path) {
        if self.last.take().is_some() {
            info!(folder = %show(root), "watch folder is available again");
        }
        self.since = None;
    }
}

/// One folder, until cancelled: wait for it to exist, watch it, reconcile,
/// then follow events, settle clocks and the reconcile timer; start over if
/// the folder goes away (its files wait, nothing becomes gone) or is
/// replaced under us (a remount: watches are re-armed on the new root).
async fn run_folder(
    mut folder: Folder,
    timing: Timing,
    first: mpsc::UnboundedSender<First>,
    cancel: CancellationToken,
) -> Result<(), WatchError> {
    let mut first = Some(first);
    let mut log = UnavailableLog::default();
    loop {
        if let Err(e) = folder.prepare().await {
            folder.set_away(&e);
            log.failed(&folder.root, &e, timing.retry_every);
            if let Some(tx) = first.take() {
                let _ = tx.send(First::Unavailable(e));
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(timing.retry_every) => continue,
            }
        }
        log.recovered(&folder.root);
        let (sink, mut events) = notifier::channel();
        folder.start_watching(sink).await;
        let lost = follow_folder(&mut folder, &mut events, timing, &mut first, &cancel).await?;
        folder.stop();
        let Some(e) = lost else {
            return Ok(());
        };
        if let WatchError::Remounted { .. } = e {
            // Its uploads wait for the rescan that brings the rows' hints
            // in line with the new root.
            info!(folder = %show(&folder.root), "{e}");
            folder.set_away(&e);
            continue;
        }
        folder.set_away(&e);
        log.failed(&folder.root, &e, timing.retry_every);
        if let Some(tx) = first.take() {
            let _ = tx.send(First::Unavailable(e));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(timing.retry_every) => {}
        }
    }
}

/// The steady state of an available folder. Returns `None` when cancelled,
/// the reason when the folder went away; `Err` only for a fatal error.
async fn follow_folder(
    folder: &mut Folder,
    events: &mut notifier::Events,
    timing: Timing,
    first: &mut Option<mpsc::UnboundedSender<First>>,
    cancel: &CancellationToken,
) -> Result<Option<WatchError>, WatchError> {
    let mut reconcile_due = true;
    let mut next_reconcile = Instant::now() + folder::jittered(timing.reconcile_every);
    let mut last_error_log: Option<Instant> = None;
    let mut next_root_check = Instant::now() + timing.root_check_every;
    loop {
        if events.rescan.swap(false, Ordering::SeqCst) {
            info!(folder = %show(&folder.root), "watch events were lost; rescanning the folder");
            reconcile_due = true;
        }
        if reconcile_due {
            reconcile_due = false;
            next_reconcile = Instant::now() + folder::jittered(timing.reconcile_every);
            match folder.reconcile(cancel).await {
                Ok(report) => {
                    folder.mark_back();
                    if let Some(tx) = first.take() {
                        let _ = tx.send(First::Scanned(report));
                    }
                }
                Err(e) => match step_failed(folder, e, first)? {
                    Step::Continue => next_reconcile = Instant::now() + JOURNAL_RETRY,
                    Step::Stop(lost) => return Ok(lost),
                },
            }
            if folder.limit_hit.is_some() {
                folder.fall_back_to_polling().await;
                // Directories left unwatched may have had files meanwhile.
                reconcile_due = true;
                continue;
            }
        }
        let settle_at = folder.settler.next_deadline();
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(None),
            _ = events.wake.notified() => Ok(()),
            signal = events.rx.recv() => {
                let Some(signal) = signal else {
                    // The watcher is gone: start the folder over.
                    return Ok(Some(WatchError::Task("the folder watcher stopped".into())));
                };
                let mut paths = HashSet::new();
                let mut created = HashSet::new();
                let mut errors = Vec::new();
                let mut take = |s: notifier::Signal| match s {
                    notifier::Signal::Paths { paths: p, created: true } => {
                        created.extend(p.iter().cloned());
                        paths.extend(p);
                    }
                    notifier::Signal::Paths { paths: p, created: false } => paths.extend(p),
                    notifier::Signal::Error(e) => errors.push(e),
                };
                take(signal);
                for _ in 0..DRAIN {
                    match events.rx.try_recv() {
                        Ok(s) => take(s),
                        Err(_) => break,
                    }
                }
                for e in errors {
                    if notifier::inotify_limit(&e).is_some() {
                        folder.limit_hit = Some(e);
                        continue;
                    }
                    if e.paths.iter().any(|p| p == &folder.root) {
                        // About the root itself: look at it.
                        paths.insert(folder.root.clone());
                        continue;
                    }
                    if folder.is_polling() {
                        // The poller reports an unreadable subdirectory at
                        // every pass; the scans say it (once per scan).
                        debug!(folder = %show(&folder.root), error = %notifier::describe(&e),
                            "polling error");
                        continue;
                    }
                    let now = Instant::now();
                    if last_error_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
                        warn!(folder = %show(&folder.root), error = %notifier::describe(&e),
                            "watcher error; the folder is rescanned");
                        last_error_log = Some(now);
                        reconcile_due = true;
                    }
                }
                if folder.limit_hit.is_some() {
                    folder.fall_back_to_polling().await;
                    reconcile_due = true;
                }
                if paths.is_empty() { Ok(()) } else { folder.absorb(paths, created, cancel).await }
            }
            _ = sleep_until_some(settle_at) => folder.settle_due().await.map(|_| ()),
            _ = tokio::time::sleep_until(next_reconcile) => {
                reconcile_due = true;
                Ok(())
            }
            _ = tokio::time::sleep_until(next_root_check) => {
                next_root_check = Instant::now() + timing.root_check_every;
                folder.check_root().await
            }
        };
        if let Err(e) = result {
            match step_failed(folder, e, first)? {
                Step::Continue => {
                    next_reconcile = next_reconcile.min(Instant::now() + JOURNAL_RETRY);
                }
                Step::Stop(lost) => return Ok(lost),
            }
        }
    }
}

enum Step {
    /// Keep going; the folder is rebuilt by a scan later.
    Continue,
    /// Leave the steady state: cancelled (`None`) or the folder went away.
    Stop(Option<WatchError>),
}

fn step_failed(
    folder: &mut Folder,
    e: FolderError,
    first: &mut Option<mpsc::UnboundedSender<First>>,
) -> Result<Step, WatchError> {
    match e {
        FolderError::Cancelled => Ok(Step::Stop(None)),
        FolderError::Unavailable(e) => Ok(Step::Stop(Some(e))),
        FolderError::Journal(JournalError::Closed) => Err(JournalError::Closed.into()),
        FolderError::Journal(e) => {
            error!(folder = %show(&folder.root), error = %e,
                "journal error in the watch stage; the folder is scanned again shortly");
            folder.settler.clear();
            if let Some(tx) = first.take() {
                let _ = tx.send(First::Unavailable(e.into()));
            }
            Ok(Step::Continue)
        }
        // The watcher may have been lost with the step: start the folder over.
        FolderError::Task(e) => Ok(Step::Stop(Some(WatchError::Task(e)))),
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_roots_are_normalised() {
        assert_eq!(
            journal_root(Path::new("/srv/in/")),
            PathBuf::from("/srv/in")
        );
        assert_eq!(
            journal_root(Path::new("/srv/./in/../in2")),
            PathBuf::from("/srv/in2")
        );
        assert!(journal_root(Path::new("rel")).is_absolute());
    }

    #[test]
    fn unavailable_errors_name_the_path() {
        let err = check_folder(&WatchSettings::new("/nonexistent/ingestd-watch")).unwrap_err();
        assert!(matches!(err, WatchError::Missing { .. }));
        assert!(
            err.to_string().contains("/nonexistent/ingestd-watch"),
            "{err}"
        );
    }
}
