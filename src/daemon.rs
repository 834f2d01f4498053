//! The daemon: supervises the stages. It opens the session (the journal,
//! locked, and the state every stage shares), starts the watch stage, the
//! workers, the supervisor and the metrics endpoint, and stops them
//! together: the first fatal error, or the shutdown token, ends them all.
//!
//! # Layout
//! - `session`: the journal opened and locked, the shared upload state.
//! - `workers`: the worker-slot pool.
//! - `stages`: the stages in one named `JoinSet`; the first error stops all.
//! - `reload`: SIGHUP, the configuration applied again.
//! - `foreground`: `ingestd upload FILE…` and `ingestd run --once`.
//!
//! What each stage does is its own module's business; this one only wires.

mod cluster;
mod foreground;
mod reload;
mod session;
mod stages;
mod workers;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::apivideo::ApiError;
use crate::config::{ConfigError, Live, Settings};
use crate::hooks::HookRunner;
use crate::journal::{JournalError, LockError};
use crate::playable::PlayableWatcher;
use crate::service::{self, MetricsServer, Notifier, ServiceError, Vitals};
use crate::upload::WorkerError;
use crate::watch::{self, WatchError};

pub use foreground::{run_once, upload_files, UploadResult};
use reload::follow_reloads;
pub use reload::{apply_reload, Reloads};
pub use session::Session;
use stages::{Stage, Stages};

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
    #[error("{0}. Files keep their state; run again once the handshake works")]
    TlsRefused(String),
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
    vitals.hook_keys = settings.hooks.iter().map(|h| h.key.clone()).collect();
    vitals.throttle = session.uploader.throttle.clone();
    // Bound before anything runs: a taken port stops the start-up.
    let metrics_server = match settings.metrics.listen {
        Some(addr) => Some(MetricsServer::bind(addr).await?),
        None => None,
    };
    let journal_at = match &settings.journal.postgres {
        Some(p) => format!("{} (node {})", p.redacted_url(), p.node),
        None => settings.journal.path.display().to_string(),
    };
    info!(
        journal = %journal_at,
        server = %settings.api.base_url,
        concurrency = session.concurrency,
        "ingestd running"
    );
    // Every stage stops on `stop`: SIGTERM, or the first fatal error of any
    // of them. The metrics endpoint outlives it, to show the drain.
    let stop = shutdown.child_token();
    let metrics_stop = CancellationToken::new();
    let session = Arc::new(session);
    let mut stages = Stages::default();
    stages.spawn(
        Stage::Reload,
        follow_reloads(
            session.uploader.clone(),
            reloads,
            settings.clone(),
            notifier.clone(),
            stop.clone(),
        ),
    );
    stages.spawn(
        Stage::Supervisor,
        service::supervise(notifier, vitals.clone(), stop.clone()),
    );
    if let Some(server) = metrics_server {
        let (vitals, metrics_stop) = (vitals.clone(), metrics_stop.clone());
        stages.spawn(Stage::Metrics, async move {
            if let Err(e) = server.serve(vitals, metrics_stop).await {
                error!("{e}");
            }
        });
    }
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    {
        let journal = session.uploader.journal.clone();
        let work = session.uploader.work.clone();
        let stop = stop.clone();
        let watchers = vitals.watchers.clone();
        let shares = session.uploader.shares.clone();
        // In a shared journal, this node scans only the folders it leads.
        let folders = match session.heartbeat {
            Some(heartbeat) => {
                let scanned = Live::new(Vec::new());
                let folders = scanned.subscribe();
                let (uploader, stop) = (session.uploader.clone(), stop.clone());
                stages.spawn(
                    Stage::Leases,
                    cluster::keep(uploader, scanned, heartbeat, stop),
                );
                folders
            }
            None => session.uploader.watches.subscribe(),
        };
        stages.spawn_fallible(Stage::Watch, async move {
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
            watched.map_err(DaemonError::from)
        });
    }
    let watchers = vitals.watchers.clone();
    stages.spawn(Stage::FirstScan, async move {
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
    {
        let (session, stop) = (session.clone(), stop.clone());
        stages.spawn_fallible(Stage::Workers, async move {
            let workers = session.run_workers(None, &stop).await;
            stop.cancel();
            workers
        });
    }
    // Always, even with no hook configured: the backlog of a hook removed
    // since the last run is dropped, saying so.
    match HookRunner::new(
        session.uploader.journal.clone(),
        &settings.hooks,
        vitals.hooks.clone(),
    ) {
        Ok(runner) => stages.spawn(Stage::Hooks, runner.run(stop.clone())),
        Err(e) => error!(
            "hooks: {e}; no event is delivered by this run (they wait in the journal for the next)"
        ),
    }
    if !settings.upload.playable_timeout.is_zero() {
        let watcher = PlayableWatcher {
            journal: session.uploader.journal.clone(),
            http: crate::apivideo::http_client()?,
            watches: session.uploader.watches.clone(),
            timeout: settings.upload.playable_timeout,
        };
        stages.spawn(Stage::Playable, watcher.run(stop.clone()));
    }
    let mut ended = stages.wait(&stop, &metrics_stop).await;
    info!("stopped; the journal is consistent");
    // A panic of the watch stage first, then the workers' error (it says
    // what the journal could not record), then the watch stage's.
    let watched = ended.remove(&Stage::Watch).unwrap_or(Ok(()));
    if let Err(e @ DaemonError::Thread(_)) = watched {
        return Err(e);
    }
    ended.remove(&Stage::Workers).unwrap_or(Ok(()))?;
    watched
}
