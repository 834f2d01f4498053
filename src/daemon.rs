//! The daemon: supervises the stages. It opens the session (the journal,
//! locked, and the state every stage shares), starts the watch stage, the
//! workers, the supervisor and the metrics endpoint, and stops them
//! together: the first fatal error, or the shutdown token, ends them all.
//!
//! # Layout
//! - `session`: the journal opened and locked, the shared upload state.
//! - `workers`: the worker-slot pool.
//! - `reload`: SIGHUP, the configuration applied again.
//! - `foreground`: `ingestd upload FILE…` and `ingestd run --once`.
//!
//! What each stage does is its own module's business; this one only wires.

mod foreground;
mod reload;
mod session;
mod workers;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::apivideo::ApiError;
use crate::config::{ConfigError, Settings};
use crate::journal::{JournalError, LockError};
use crate::service::{self, MetricsServer, Notifier, ServiceError, Vitals};
use crate::upload::WorkerError;
use crate::watch::{self, WatchError};

pub use foreground::{run_once, upload_files, UploadResult};
use reload::spawn_reloader;
pub use reload::{apply_reload, Reloads};
pub use session::Session;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("the upload token was refused by the server: {0}. Files keep their state; give a valid token and run again")]
    TokenRefused(String),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// `ingestd run`: resumes and uploads whatever the journal holds, until
/// `shutdown`. Each of `reloads` re-reads the configuration.
pub async fn run(
    settings: Settings,
    reloads: Reloads,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let session = Session::open(&settings).await?;
    session.stop_waiting_on(&shutdown);
    let notifier = Notifier::from_env();
    let mut vitals = Vitals::new(
        session.uploader.journal.clone(),
        session.uploader.gate.clone(),
        session.uploader.metrics.clone(),
        session.uploader.watches.clone(),
    );
    vitals.shares = session.uploader.shares.clone();
    // Bound before anything runs: a taken port stops the start-up.
    let metrics_server = match settings.metrics.listen {
        Some(addr) => Some(MetricsServer::bind(addr).await?),
        None => None,
    };
    info!(
        journal = %settings.journal.path.display(),
        server = %settings.api.base_url,
        concurrency = session.concurrency,
        "ingestd running"
    );
    let reloader = spawn_reloader(
        &session,
        reloads,
        settings.clone(),
        notifier.clone(),
        shutdown.clone(),
    );
    // The watch stage and the workers stop together: a fatal error in one
    // cancels the other.
    let stop = shutdown.child_token();
    let supervisor = tokio::spawn(service::supervise(notifier, vitals.clone(), stop.clone()));
    // The endpoint outlives `stop`: it shows the drain of the workers.
    let metrics_stop = CancellationToken::new();
    let metrics_task = metrics_server.map(|server| {
        let vitals = vitals.clone();
        let metrics_stop = metrics_stop.clone();
        tokio::spawn(async move {
            if let Err(e) = server.serve(vitals, metrics_stop).await {
                error!("{e}");
            }
        })
    });
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watch_task = {
        let journal = session.uploader.journal.clone();
        let work = session.uploader.work.clone();
        let stop = stop.clone();
        let watchers = vitals.watchers.clone();
        let shares = session.uploader.shares.clone();
        let folders = session.uploader.watches.subscribe();
        tokio::spawn(async move {
            // However this task ends (a panic included), the daemon stops:
            // uploading without watching would look healthy and do half.
            let _stop_on_exit = stop.clone().drop_guard();
            let watched =
                watch::follow(folders, journal, work, shares, Some(ready_tx), stop.clone()).await;
            if let Err(e) = &watched {
                error!("the watch stage stopped: {e}");
                watchers.stopped(e.to_string());
                stop.cancel();
            }
            watched
        })
    };
    let watchers = vitals.watchers.clone();
    tokio::spawn(async move {
        if let Ok(report) = ready_rx.await {
            watchers.running();
            info!(
                folders = report.folders,
                files = report.files,
                new = report.journaled,
                already_done = report.already_done,
                unavailable = report.unavailable.len(),
                took_ms = report.elapsed.as_millis() as u64,
                "first scan done; watching"
            );
        }
    });
    let workers = session.run_workers(None, &stop).await;
    stop.cancel();
    let watched = watch_task.await.map_err(|e| {
        DaemonError::Thread(std::io::Error::other(format!(
            "the watch stage panicked: {e}"
        )))
    })?;
    reloader.abort();
    let _ = supervisor.await;
    metrics_stop.cancel();
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    info!("stopped; the journal is consistent");
    workers?;
    watched?;
    Ok(())
}
