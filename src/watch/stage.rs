//! The watch stage's entry points: `run` (every folder in its own task,
//! until cancelled) and `scan_and_settle` (`ingestd run --once`), their
//! tuning (`WatchOptions`), and the building of the folders from the
//! configuration.
//!
//! It drives folders and sums their reports; it must not reach into a
//! folder's steps (scan, hints, settle checks, root checks) itself.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::folder::{run_folder, First, Folder, FolderError, Timing};
use super::{show, ScanReport, WatchError};
use crate::config::WatchSettings;
use crate::journal::JournalHandle;
use crate::roots::Shares;

/// How often a folder is scanned against the journal when nothing asks.
pub(crate) const DEFAULT_RECONCILE_EVERY: Duration = Duration::from_secs(15 * 60);
/// How often a missing or unreadable folder is looked for again.
pub(crate) const DEFAULT_RETRY_UNAVAILABLE_EVERY: Duration = Duration::from_secs(2);
/// How often an available root is checked (one stat and one directory read).
pub(crate) const DEFAULT_ROOT_CHECK_EVERY: Duration = Duration::from_secs(2);

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

fn folders(
    watches: &[WatchSettings],
    journal: &JournalHandle,
    work: &Arc<Notify>,
    opts: &WatchOptions,
) -> Result<Vec<Folder>, WatchError> {
    let sidecars = opts.sidecars;
    let roots: Vec<PathBuf> = watches.iter().map(WatchSettings::root).collect();
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

/// `ingestd run --once`: scans every folder once, gives every settling file
/// one settle check (at most `settle` after the scan), then returns; the
/// caller uploads what is queued. What is not ready at its check (still
/// being written, an unfinished container) is left settling and listed in
/// the report's `not_ready`: the run never waits on one long recording.
/// Files that arrive after the scan are left for the next run. Folders that
/// cannot be scanned are listed in the report's `unavailable` (the others
/// are scanned anyway). Returns early, with what was done, when `cancel`
/// fires.
pub async fn scan_and_settle(
    watches: &[WatchSettings],
    journal: JournalHandle,
    work: Arc<Notify>,
    opts: WatchOptions,
    cancel: CancellationToken,
) -> Result<ScanReport, WatchError> {
    let started = std::time::Instant::now();
    let mut folders = folders(watches, &journal, &work, &opts)?;
    for folder in &mut folders {
        folder.once = true;
    }
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
        report.not_ready.append(&mut folder.not_ready);
    }
    report.elapsed = started.elapsed();
    Ok(report)
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
    let roots: Vec<PathBuf> = watches.iter().map(WatchSettings::root).collect();
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
