//! The foreground commands: `ingestd upload FILE…` and `ingestd run
//! --once`. They share the daemon's session and workers, and end when
//! their batch is finished.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::cluster::renew_while_running;
use super::{DaemonError, Session};
use crate::config::{Settings, WatchSettings};
use crate::display::show_path;
use crate::hooks::HookRunner;
use crate::journal::{FileIdentity, FileRow, FileState, QueuePlace};
use crate::playable::PlayableWatcher;
use crate::watch::{self, QueueRules, WatchOptions};

/// What happened to one file given to `ingestd upload`.
#[derive(Debug, Clone)]
pub struct UploadResult {
    pub path: PathBuf,
    /// The journal row, when the file was journaled.
    pub row: Option<FileRow>,
    /// Why it was not journaled or not uploaded, when so.
    pub note: Option<String>,
    /// `run --once`: not ready at its check (still being written, an
    /// unfinished container); left for the next run, not an error.
    pub not_ready: bool,
}

impl UploadResult {
    pub fn ok(&self) -> bool {
        self.not_ready
            || self
                .row
                .as_ref()
                .is_some_and(|r| r.state == FileState::Done)
    }
}

/// The identity of a file named on the command line, or why it cannot be
/// uploaded.
fn identify(path: &Path, watches: &[WatchSettings]) -> Result<FileIdentity, String> {
    let abs = std::path::absolute(path).map_err(|e| format!("cannot resolve the path: {e}"))?;
    let meta = std::fs::metadata(&abs).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        _ => format!("cannot read it: {e}"),
    })?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.len() == 0 {
        return Err("empty file: nothing to upload (skipped, not journaled)".to_owned());
    }
    // A file inside a watch folder has the identity the watch stage gives
    // it, so the two never upload it twice.
    // Compared as real paths: `..`, `.` and symlinks (of the folder or on
    // the way to the file) must not make a second identity.
    let real_file = std::fs::canonicalize(&abs).ok();
    for w in watches {
        let root = w.root();
        let real_root = std::fs::canonicalize(&root).ok();
        if let (Some(f), Some(r)) = (&real_file, &real_root) {
            if let Ok(rel) = f.strip_prefix(r) {
                return Ok(FileIdentity::from_metadata(&root, rel, &meta));
            }
        }
        if let Ok(rel) = abs.strip_prefix(&root) {
            return Ok(FileIdentity::from_metadata(&root, rel, &meta));
        }
    }
    let (Some(root), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err("not a file path".to_owned());
    };
    Ok(FileIdentity::from_metadata(root, Path::new(name), &meta))
}

/// Where each file named on the command line goes in the queue: a file of
/// a watch folder where that folder's `priority` and `order` put it (as if
/// the watch stage had found it), any other at the default place.
fn queue_places(idents: &[FileIdentity], watches: &[WatchSettings]) -> Vec<QueuePlace> {
    // The patterns were checked when the configuration was loaded: a folder
    // whose rules would not build cannot be configured.
    let rules: Vec<(PathBuf, QueueRules)> = watches
        .iter()
        .filter_map(|w| Some((w.root(), QueueRules::new(&w.priority, w.order).ok()?)))
        .collect();
    idents
        .iter()
        .map(|i| {
            rules
                .iter()
                .find(|(root, _)| *root == i.root)
                .map_or(QueuePlace::DEFAULT, |(_, r)| r.place(&i.rel_path))
        })
        .collect()
}

/// `ingestd upload FILE…`: journals the files and uploads them in the
/// foreground. Files already uploaded are not uploaded again.
pub async fn upload_files(
    settings: &Settings,
    paths: &[PathBuf],
    shutdown: CancellationToken,
) -> Result<Vec<UploadResult>, DaemonError> {
    let session = Session::open(settings).await?;
    session.stop_waiting_on(&shutdown);
    let _leases = renew_while_running(session.uploader.journal.clone(), session.heartbeat);
    let mut results: Vec<UploadResult> = Vec::new();
    let mut idents = Vec::new();
    let given = paths.to_vec();
    let watches = settings.watches.clone();
    let identified = tokio::task::spawn_blocking(move || {
        given
            .iter()
            .map(|p| identify(p, &watches))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| DaemonError::Thread(std::io::Error::other(e.to_string())))?;
    for (p, identity) in paths.iter().zip(identified) {
        match identity {
            Ok(ident) => {
                idents.push(ident);
                results.push(UploadResult {
                    path: p.clone(),
                    row: None,
                    note: None,
                    not_ready: false,
                });
            }
            Err(note) => {
                warn!(path = %show_path(p), "not uploading: {note}");
                results.push(UploadResult {
                    path: p.clone(),
                    row: None,
                    note: Some(note),
                    not_ready: false,
                });
            }
        }
    }
    let journal = session.uploader.journal.clone();
    let to_add = idents.clone();
    let places = queue_places(&idents, &settings.watches);
    let added = journal
        .call(move |j| {
            j.atomically(|j| {
                let added = j.add_files(&to_add, FileState::Queued)?;
                let placed: Vec<(i64, QueuePlace)> = added
                    .iter()
                    .zip(&places)
                    .filter(|(a, _)| a.inserted)
                    .map(|(a, place)| (a.id, *place))
                    .collect();
                j.place_queued(&placed)?;
                Ok(added)
            })
        })
        .await?;
    let mut ids = Vec::new();
    for a in &added {
        match a.state {
            FileState::Queued | FileState::Retrying | FileState::Uploading => ids.push(a.id),
            FileState::Done => info!(id = a.id, "already uploaded; not uploading it again"),
            other => warn!(
                id = a.id,
                "already journaled as {other}; see `ingestd status`, `ingestd retry {}`", a.id
            ),
        }
    }
    let run = session.run_workers(Some(ids.clone()), &shutdown).await;
    finish_workflow(&session, settings, &shutdown).await;
    let gate = session.uploader.gate.state();
    // Fill in the final rows, in the order given.
    let ids_in_order: Vec<i64> = added.iter().map(|a| a.id).collect();
    let rows = journal
        .call(move |j| {
            ids_in_order
                .iter()
                .map(|id| j.get(*id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    let mut rows = rows.into_iter();
    for r in results.iter_mut().filter(|r| r.note.is_none()) {
        r.row = rows.next().flatten();
    }
    run?;
    if let Some(why) = gate.refused {
        return Err(DaemonError::TokenRefused(why));
    }
    if let Some(why) = gate.tls {
        return Err(DaemonError::TlsRefused(why));
    }
    Ok(results)
}

/// What a foreground run owes the workflow before it exits: one look at
/// each video due for its playable watch, then one attempt at each hook
/// delivery due. What is not done yet waits in the journal for the next run.
async fn finish_workflow(session: &Session, settings: &Settings, shutdown: &CancellationToken) {
    if shutdown.is_cancelled() {
        return;
    }
    let journal = session.uploader.journal.clone();
    if !settings.upload.playable_timeout.is_zero() {
        match crate::apivideo::http_client() {
            Ok(http) => {
                let watcher = PlayableWatcher {
                    journal: journal.clone(),
                    http,
                    watches: session.uploader.watches.clone(),
                    timeout: settings.upload.playable_timeout,
                };
                let round = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    round = watcher.round() => round,
                };
                if let Err(e) = round {
                    warn!("playable watch: {e}; the next run looks again");
                }
            }
            Err(e) => warn!("playable watch: {e}; the next run looks again"),
        }
    }
    let runner = HookRunner::new(journal, &settings.hooks, Default::default());
    let delivered = match runner {
        Ok(runner) => runner
            .deliver_due_once(shutdown)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = delivered {
        warn!("hooks: {e}; undelivered events wait in the journal for the next run");
    }
}

/// `ingestd run --once`: scans the watch folders once, uploads everything
/// ready then, and returns; what was not ready is reported as such (see
/// `watch::scan_and_settle`).
pub async fn run_once(
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<Vec<UploadResult>, DaemonError> {
    let session = Session::open(settings).await?;
    session.stop_waiting_on(&shutdown);
    let _leases = renew_while_running(session.uploader.journal.clone(), session.heartbeat);
    let journal = session.uploader.journal.clone();
    // A folder that could not be scanned (an unmounted share) makes the run
    // fail: a job that uploaded nothing from it must not look successful.
    let mut unavailable: Vec<UploadResult> = Vec::new();
    let mut failed_early: Vec<i64> = Vec::new();
    let mut not_ready: Vec<UploadResult> = Vec::new();
    if !settings.watches.is_empty() {
        let report = watch::scan_and_settle(
            &settings.watches,
            journal.clone(),
            session.uploader.work.clone(),
            WatchOptions {
                shares: session.uploader.shares.clone(),
                ..WatchOptions::default()
            },
            shutdown.clone(),
        )
        .await?;
        info!(
            folders = report.folders,
            files = report.files,
            new = report.journaled,
            already_done = report.already_done,
            "scan done"
        );
        for e in &report.unavailable {
            error!("{e}");
        }
        failed_early = report.failed.clone();
        if !report.not_ready.is_empty() {
            info!(
                not_ready = report.not_ready.len(),
                "files not ready yet are left settling for the next run"
            );
        }
        not_ready = report
            .not_ready
            .iter()
            .map(|n| UploadResult {
                path: n.path.clone(),
                row: None,
                note: Some(n.why.clone()),
                not_ready: true,
            })
            .collect();
        unavailable = report
            .unavailable
            .iter()
            .map(|e| UploadResult {
                path: e.path().map_or_else(PathBuf::new, Path::to_path_buf),
                row: None,
                note: Some(format!("watch folder not scanned: {e}")),
                not_ready: false,
            })
            .collect();
    }
    let pending: Vec<i64> = journal
        .call(|j| {
            Ok(j.list(Some(&[FileState::Queued, FileState::Retrying]))?
                .into_iter()
                .map(|r| r.id)
                .collect())
        })
        .await?;
    let run = session.run_workers(Some(pending.clone()), &shutdown).await;
    finish_workflow(&session, settings, &shutdown).await;
    let gate = session.uploader.gate.state();
    let reported: Vec<i64> = session
        .failed_in_doubt
        .iter()
        .copied()
        .chain(failed_early)
        .chain(pending)
        .collect();
    let rows = journal
        .call(move |j| {
            reported
                .iter()
                .map(|id| j.get(*id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    run?;
    if let Some(why) = gate.refused {
        return Err(DaemonError::TokenRefused(why));
    }
    if let Some(why) = gate.tls {
        return Err(DaemonError::TlsRefused(why));
    }
    Ok(rows
        .into_iter()
        .flatten()
        .map(|row| UploadResult {
            path: row.path(),
            row: Some(row),
            note: None,
            not_ready: false,
        })
        .chain(not_ready)
        .chain(unavailable)
        .collect())
}
