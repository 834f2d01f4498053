//! A session: the journal opened and locked for this process, interrupted
//! uploads put back in the queue, and the upload state every worker shares.
//! It opens; it runs nothing (see `workers`).

use std::fs::File;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::DaemonError;
use crate::apivideo::Client;
use crate::config::{InDoubt, Live, Settings};
use crate::journal::{
    lock_journal, lock_path, mark_lock, Journal, JournalError, JournalHandle, LockError, PgTarget,
};
use crate::upload::{
    interrupted_in_doubt, Metrics, Pacer, Throttle, TokenGate, Uploader, ONE_REQUEST_MAX,
};

/// The journal, opened and locked for this process, with the upload state
/// every worker shares.
pub struct Session {
    pub uploader: Uploader,
    pub concurrency: usize,
    /// Files this start marked failed as in doubt (`upload.in_doubt = "fail"`).
    pub failed_in_doubt: Vec<i64>,
    /// Held for the life of the session: one writer process per SQLite
    /// journal (a shared journal has its nodes and leases instead).
    _lock: Option<File>,
    /// In a shared journal: how often this node renews its leases.
    pub heartbeat: Option<std::time::Duration>,
}

impl Session {
    /// Once `shutdown` fires, journal writes stop waiting for space on a
    /// full disk, so the stop is never held up by it.
    pub(crate) fn stop_waiting_on(&self, shutdown: &CancellationToken) {
        let journal = self.uploader.journal.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            journal.disk().give_up();
        });
    }

    /// Opens and locks the journal (or connects to the shared one and
    /// registers this node), puts interrupted uploads back in the queue, and
    /// builds the client.
    pub async fn open(settings: &Settings) -> Result<Session, DaemonError> {
        let token = settings.require_token()?.clone();
        let path = settings.journal.path.clone();
        let shared = settings.journal.postgres.as_ref().map(PgTarget::from);
        let heartbeat = settings.journal.postgres.as_ref().map(|p| p.heartbeat);
        let in_doubt = settings.upload.in_doubt;
        let shares = Arc::new(crate::roots::Shares::default());
        let watches = settings.watches.clone();
        let remembered = shares.clone();
        let hooks = settings.hooks.clone();
        let watch_playable = !settings.upload.playable_timeout.is_zero();
        let (journal, lock, failed_in_doubt) =
            tokio::task::spawn_blocking(move || -> Result<_, DaemonError> {
                let shares = remembered;
                let (mut journal, lock) = match &shared {
                    Some(target) => {
                        let mut journal = Journal::open_postgres(target)?;
                        journal.register_node(&host_name(), std::process::id())?;
                        (journal, None)
                    }
                    None => {
                        // Lock first: a second process must not migrate or touch a
                        // journal another one is using.
                        let mut lock = lock_journal(&path)?;
                        let journal = Journal::open(&path)?;
                        mark_lock(&mut lock).map_err(|source| LockError::Lock {
                            lock: lock_path(&path),
                            source,
                        })?;
                        (journal, Some(lock))
                    }
                };
                // Before anything changes a row: the events of every change
                // of this run go to the outbox.
                journal.set_outbox(&hooks, watch_playable);
                let (failed, resumed) = sweep_interrupted(&mut journal, in_doubt)?;
                if resumed > 0 {
                    info!(resumed, "resuming uploads interrupted by a stop or a crash");
                }
                // What each watch root looked like when last seen available: a
                // worker that meets an unmounted share before any scan knows it.
                for w in &watches {
                    let root = w.root();
                    if let Some(record) = journal.root_record(&root)? {
                        shares.remember(&root, record);
                    }
                }
                Ok((journal, lock, failed))
            })
            .await
            .map_err(|e| DaemonError::Thread(std::io::Error::other(e.to_string())))??;
        let journal = JournalHandle::spawn(journal).map_err(DaemonError::Thread)?;
        let client = Client::new(settings.api.base_url.clone(), token)?;
        Ok(Session {
            uploader: Uploader {
                journal,
                client,
                chunk_size: settings.api.chunk_size,
                pacer: Arc::new(Pacer::default()),
                gate: TokenGate::default(),
                throttle: Arc::new(Throttle::new(settings.upload.bandwidth_limit.clone())),
                work: Arc::new(Notify::new()),
                watches: Live::new(settings.watches.clone()),
                slots: Arc::new(tokio::sync::watch::channel(settings.upload.concurrency.max(1)).0),
                metrics: Arc::new(Metrics::default()),
                outage: Arc::default(),
                in_doubt,
                sha256: settings.upload.sha256,
                shares,
            },
            concurrency: settings.upload.concurrency.max(1),
            failed_in_doubt,
            _lock: lock,
            heartbeat,
        })
    }
}

/// Puts interrupted uploads back in the queue, each with its progress: at
/// start-up every one this process's journal holds (in a shared journal,
/// this node's own and those of nodes silent past their lease), then, in a
/// shared journal, those of nodes that went silent. With `upload.in_doubt =
/// "fail"`, a file sent in one request that may have been on its way is
/// failed instead, for a person to check. The ids failed, and how many resume.
pub(super) fn sweep_interrupted(
    journal: &mut Journal,
    in_doubt: InDoubt,
) -> Result<(Vec<i64>, usize), JournalError> {
    let failed = if in_doubt == InDoubt::Fail {
        journal.fail_interrupted_in_doubt(ONE_REQUEST_MAX, &interrupted_in_doubt)?
    } else {
        Vec::new()
    };
    for id in &failed {
        error!(
            id,
            "in doubt: ingestd stopped while this file's one request was on its way; \
            marked failed (upload.in_doubt = \"fail\"): check api.video, then `ingestd retry {id}`"
        );
    }
    let resumed = journal.requeue_interrupted()?;
    Ok((failed, resumed))
}

/// This machine's host name, for the journal's list of nodes.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
