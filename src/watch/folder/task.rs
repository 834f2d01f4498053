//! One folder's task, until cancelled: wait for its root, watch it,
//! reconcile, then follow events, settle clocks, the reconcile timer and
//! the root checks; start over when the root goes away or is replaced.
//!
//! It only sequences the folder's steps and decides what a failed step
//! means (go on, start over, stop the stage); the steps themselves live in
//! the sibling files and must not be duplicated here.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{jittered, Folder, FolderError};
use crate::journal::JournalError;
use crate::watch::notifier;
use crate::watch::{show, ScanReport, WatchError};

/// A folder still unavailable is logged again at most this often.
const UNAVAILABLE_LOG_EVERY: Duration = Duration::from_secs(15 * 60);
/// After a journal error, the folder is rebuilt from a scan this much later.
const JOURNAL_RETRY: Duration = Duration::from_secs(30);
/// Event batches drained at once (paths are deduplicated per batch).
const DRAIN: usize = 4096;

/// What a folder task reports once, after its first scan.
#[derive(Debug)]
pub(crate) enum First {
    Scanned(ScanReport),
    Unavailable(WatchError),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub reconcile_every: Duration,
    pub retry_every: Duration,
    pub root_check_every: Duration,
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
pub(crate) async fn run_folder(
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
    let mut next_reconcile = Instant::now() + jittered(timing.reconcile_every);
    let mut last_error_log: Option<Instant> = None;
    let mut next_root_check = Instant::now() + timing.root_check_every;
    loop {
        if events.rescan.swap(false, Ordering::SeqCst) {
            info!(folder = %show(&folder.root), "watch events were lost; rescanning the folder");
            reconcile_due = true;
        }
        if reconcile_due {
            reconcile_due = false;
            next_reconcile = Instant::now() + jittered(timing.reconcile_every);
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
