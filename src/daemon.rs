//! Wiring: opens the journal (one process at a time), builds the shared
//! upload state, runs the workers in a `JoinSet` and stops them on the
//! cancellation token. `run` is the daemon; `upload_files` is `ingestd upload`.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::apivideo::{ApiError, Client};
use crate::config::{self, ConfigError, Settings, WatchSettings};
use crate::journal::{FileIdentity, FileRow, FileState, Journal, JournalError, JournalHandle};
use crate::service::{self, MetricsServer, Notifier, ServiceError, Vitals};
use crate::upload::{Batch, Pacer, Throttle, TokenGate, Uploader, WorkerError, SHUTDOWN_DEADLINE};
use crate::watch::{self, WatchError, WatchOptions};

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
    #[error("the journal {} is in use by another ingestd process (lock {}); stop it first, or let it upload these files", journal.display(), lock.display())]
    Busy { journal: PathBuf, lock: PathBuf },
    #[error("the journal {} is gone or empty, but it was in use before (its lock file {} says so): it was deleted, moved or truncated. Starting a new journal would upload every file again. Put it back; or, to start afresh on purpose, delete {}", journal.display(), lock.display(), lock.display())]
    JournalVanished { journal: PathBuf, lock: PathBuf },
    #[error("cannot inspect the journal {}: {source}; check the permissions of its directory", journal.display())]
    Inspect {
        journal: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock the journal ({}): {source}", lock.display())]
    Lock {
        lock: PathBuf,
        source: std::io::Error,
    },
    #[error("the upload token was refused by the server: {0}. Files keep their state; give a valid token and run again")]
    TokenRefused(String),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// The journal, opened and locked for this process, with the upload state
/// every worker shares.
pub struct Session {
    pub uploader: Uploader,
    pub concurrency: usize,
    /// Files this start marked failed as in doubt (`upload.in_doubt = "fail"`).
    pub failed_in_doubt: Vec<i64>,
    /// Held for the life of the session: one writer process per journal.
    _lock: File,
}

/// The lock file beside the journal; `status` does not need it.
fn lock_path(journal: &Path) -> PathBuf {
    let mut s = journal.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// What the lock file holds once its journal exists.
const LOCK_MARK: &[u8] = b"ingestd journal lock: this journal holds files\n";
/// What a new lock file holds until then.
const LOCK_PENDING: &[u8] = b"ingestd journal lock: no journal yet\n";

/// Marks the (held) lock file: a journal exists beside it from now on.
pub fn mark_lock(lock: &mut File) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let mut held = Vec::new();
    std::io::Read::read_to_end(lock, &mut held)?;
    if held.starts_with(LOCK_MARK) {
        return Ok(());
    }
    lock.set_len(0)?;
    lock.rewind()?;
    lock.write_all(LOCK_MARK)?;
    lock.sync_all()
}

/// Takes the journal's lock (held while the returned file is open), creating
/// the journal's directory if needed.
pub fn lock_journal(journal: &Path) -> Result<File, DaemonError> {
    if let Some(dir) = journal.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| {
            DaemonError::Journal(JournalError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })
        })?;
    }
    let lock_file = lock_path(journal);
    // The lock file outlives every run. It says "no journal yet" when made,
    // and is marked once a journal exists beside it (older versions left it
    // empty, beside a journal). A lock that knew a journal, beside a missing
    // or empty one, means the journal was deleted, moved or truncated while
    // ingestd was stopped: starting a new one would upload every file again.
    // Refuse, and say what to do.
    let held = match std::fs::read(&lock_file) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(DaemonError::Lock {
                lock: lock_file,
                source,
            })
        }
    };
    let journal_len = match std::fs::metadata(journal) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => {
            return Err(DaemonError::Inspect {
                journal: journal.to_path_buf(),
                source,
            })
        }
    };
    let knew_a_journal = match &held {
        Some(bytes) => bytes.starts_with(LOCK_MARK) || (bytes.is_empty() && journal_len == 0),
        None => false,
    };
    if knew_a_journal && journal_len == 0 {
        return Err(DaemonError::JournalVanished {
            journal: journal.to_path_buf(),
            lock: lock_file,
        });
    }
    let mut lock = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_file)
        .map_err(|source| DaemonError::Lock {
            lock: lock_file.clone(),
            source,
        })?;
    if held.is_none() {
        use std::io::Write;
        // Best effort: an empty lock only makes a later start stricter.
        let _ = lock.write_all(LOCK_PENDING);
    }
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::Busy {
            journal: journal.to_path_buf(),
            lock: lock_file,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(DaemonError::Lock {
            lock: lock_file,
            source,
        }),
    }
}

impl Session {
    /// Once `shutdown` fires, journal writes stop waiting for space on a
    /// full disk, so the stop is never held up by it.
    pub fn stop_waiting_on(&self, shutdown: &CancellationToken) {
        let journal = self.uploader.journal.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            journal.disk().give_up();
        });
    }

    /// Opens and locks the journal, puts interrupted uploads back in the
    /// queue, and builds the client.
    pub async fn open(settings: &Settings) -> Result<Session, DaemonError> {
        let token = settings.require_token()?.clone();
        let path = settings.journal.path.clone();
        let in_doubt = settings.upload.in_doubt;
        let shares = Arc::new(crate::roots::Shares::default());
        let watches = settings.watches.clone();
        let remembered = shares.clone();
        let (journal, lock, failed_in_doubt) = tokio::task::spawn_blocking(move || -> Result<_, DaemonError> {
            let shares = remembered;
            // Lock first: a second process must not migrate or touch a
            // journal another one is using.
            let mut lock = lock_journal(&path)?;
            let mut journal = Journal::open(&path)?;
            mark_lock(&mut lock).map_err(|source| DaemonError::Lock {
                lock: lock_path(&path),
                source,
            })?;
            let failed = if in_doubt == crate::config::InDoubt::Fail {
                journal.fail_interrupted_in_doubt()?
            } else {
                Vec::new()
            };
            for id in &failed {
                error!(id, "in doubt: ingestd stopped while this file's one request was on its way; \
                    marked failed (upload.in_doubt = \"fail\"): check api.video, then `ingestd retry {id}`");
            }
            let resumed = journal.requeue_interrupted()?;
            if resumed > 0 {
                info!(resumed, "resuming uploads interrupted by a stop or a crash");
            }
            // What each watch root looked like when last seen available: a
            // worker that meets an unmounted share before any scan knows it.
            for w in &watches {
                let root = watch::journal_root(&w.path);
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
                throttle: Arc::new(Throttle::new(settings.upload.bandwidth_limit)),
                work: Arc::new(Notify::new()),
                watches: Arc::new(
                    tokio::sync::watch::channel(Arc::new(settings.watches.clone())).0,
                ),
                slots: Arc::new(tokio::sync::watch::channel(settings.upload.concurrency.max(1)).0),
                metrics: Arc::new(service::Metrics::default()),
                outage: Arc::default(),
                in_doubt,
                shares,
            },
            concurrency: settings.upload.concurrency.max(1),
            failed_in_doubt,
            _lock: lock,
        })
    }

    /// Runs `concurrency` workers until `cancel` (or, with `only`, until
    /// those files are finished). A worker's journal error stops them all.
    pub async fn run_workers(
        &self,
        only: Option<Vec<i64>>,
        cancel: &CancellationToken,
    ) -> Result<(), DaemonError> {
        let batch = only.map(|ids| Arc::new(Batch::new(ids)));
        let stop = cancel.child_token();
        let mut set = JoinSet::new();
        // Which slot each running worker holds; a reload may add slots.
        let mut slots: std::collections::HashMap<tokio::task::Id, usize> = Default::default();
        let spawn = |set: &mut JoinSet<_>, slot: usize| {
            let uploader = self.uploader.clone();
            let batch = batch.clone();
            let stop = stop.clone();
            set.spawn(async move { uploader.worker(batch, slot, stop).await })
                .id()
        };
        for slot in 0..*self.uploader.slots.borrow() {
            let id = spawn(&mut set, slot);
            slots.insert(id, slot);
        }
        let mut target = self.uploader.slots.subscribe();
        let mut first_err = None;
        let deadline = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_DEADLINE).await;
        };
        tokio::pin!(deadline);
        loop {
            let res = tokio::select! {
                res = set.join_next_with_id() => match res {
                    None => break,
                    Some(r) => r,
                },
                _ = &mut deadline => {
                    warn!(stuck = set.len(), "workers still busy after the shutdown deadline (stuck in I/O?): dropping them; their files resume at the next start");
                    set.abort_all();
                    while set.join_next().await.is_some() {}
                    break;
                }
                // Only the daemon grows its pool; a batch keeps its workers.
                Ok(()) = target.changed(), if batch.is_none() && !stop.is_cancelled() => {
                    let want = *target.borrow_and_update();
                    for slot in 0..want {
                        if !slots.values().any(|s| *s == slot) {
                            let id = spawn(&mut set, slot);
                            slots.insert(id, slot);
                        }
                    }
                    continue;
                }
            };
            let res = match res {
                Ok((id, r)) => {
                    slots.remove(&id);
                    r.map_err(DaemonError::from)
                }
                Err(e) => {
                    slots.remove(&e.id());
                    Err(DaemonError::Thread(std::io::Error::other(format!(
                        "a worker panicked: {e}"
                    ))))
                }
            };
            if let Err(e) = res {
                error!("stopping: {e}");
                stop.cancel();
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Applies a reloaded configuration to running workers: a new token reopens
/// the gate; the bandwidth limit and the number of workers change at once;
/// a new list of watch folders restarts the watch stage. The journal, the
/// server and the chunk size stay as they were (a restart changes them).
pub fn apply_reload(uploader: &Uploader, settings: &Settings) -> Result<(), DaemonError> {
    let token = settings.require_token()?.clone();
    uploader.client.set_token(token);
    uploader.gate.replaced();
    uploader.throttle.set_rate(settings.upload.bandwidth_limit);
    uploader
        .slots
        .send_replace(settings.upload.concurrency.max(1));
    let folders = Arc::new(settings.watches.clone());
    uploader.watches.send_if_modified(|current| {
        let changed = **current != *folders;
        if changed {
            *current = folders;
        }
        changed
    });
    uploader.work.notify_waiters();
    Ok(())
}

/// `ingestd run`: resumes and uploads whatever the journal holds, until
/// `shutdown`. SIGHUP re-reads the configuration from `config_path`.
pub async fn run(
    settings: Settings,
    config_path: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    // Listen for SIGHUP before anything else: its default action kills.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
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
        hup,
        config_path,
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
        let mut folders = session.uploader.watches.subscribe();
        let mut ready = Some(ready_tx);
        tokio::spawn(async move {
            // However this task ends (a panic included), the daemon stops:
            // uploading without watching would look healthy and do half.
            let _stop_on_exit = stop.clone().drop_guard();
            'rounds: loop {
                let watches = folders.borrow_and_update().as_ref().clone();
                let round = stop.child_token();
                // Each round reports to its own channel; only a round that
                // really finished its first scan is forwarded.
                let (round_tx, mut round_rx) = tokio::sync::oneshot::channel();
                let mut round_pending = ready.is_some();
                let opts = WatchOptions {
                    ready: round_pending.then_some(round_tx),
                    shares: shares.clone(),
                    ..WatchOptions::default()
                };
                let run = watch::run(watches, journal.clone(), work.clone(), opts, round.clone());
                tokio::pin!(run);
                let ended = loop {
                    tokio::select! {
                        r = &mut run => break r,
                        r = &mut round_rx, if round_pending => {
                            round_pending = false;
                            if let (Ok(report), Some(tx)) = (r, ready.take()) {
                                let _ = tx.send(report);
                            }
                        }
                        Ok(()) = folders.changed() => {
                            info!("watch folders changed: restarting the watch stage");
                            round.cancel();
                            match run.await {
                                Ok(()) => continue 'rounds,
                                Err(e) => break Err(e),
                            }
                        }
                    }
                };
                if round_pending && !round.is_cancelled() {
                    if let (Ok(report), Some(tx)) = (round_rx.try_recv(), ready.take()) {
                        let _ = tx.send(report);
                    }
                }
                match ended {
                    // No folder to watch (none configured, or a reload
                    // removed them all): wait for a list that has some.
                    Ok(()) if !stop.is_cancelled() => {
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            r = folders.changed() => if r.is_err() { return Ok(()) },
                        }
                    }
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        error!("the watch stage stopped: {e}");
                        watchers.stopped(e.to_string());
                        stop.cancel();
                        return Err(e);
                    }
                }
            }
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

/// The settings a reload cannot apply that differ from those ingestd
/// started with.
fn needs_restart(started: &Settings, new: &Settings) -> Vec<&'static str> {
    [
        ("api.base_url", started.api.base_url != new.api.base_url),
        (
            "api.chunk_size",
            started.api.chunk_size != new.api.chunk_size,
        ),
        ("journal.path", started.journal.path != new.journal.path),
        ("metrics.listen", started.metrics != new.metrics),
        ("log.format", started.log.format != new.log.format),
        (
            "upload.in_doubt",
            started.upload.in_doubt != new.upload.in_doubt,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Re-reads the configuration on SIGHUP; a bad one is logged and ignored.
fn spawn_reloader(
    session: &Session,
    hup: std::io::Result<tokio::signal::unix::Signal>,
    config_path: Option<PathBuf>,
    started: Settings,
    notifier: Option<Notifier>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let uploader = session.uploader.clone();
    tokio::spawn(async move {
        let mut hup = match hup {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot listen for SIGHUP, reloading is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = shutdown.cancelled() => return,
            }
            info!("SIGHUP: reloading the configuration");
            if let Some(n) = &notifier {
                n.reloading();
            }
            let path = config_path.clone();
            let loaded = tokio::task::spawn_blocking(move || config::load(path.as_deref())).await;
            let applied = match loaded {
                Ok(Ok(settings)) => {
                    let ignored = needs_restart(&started, &settings);
                    if !ignored.is_empty() {
                        warn!(
                            "changed in the configuration but applied only by a restart: {}; \
                             ingestd keeps using the values it started with",
                            ignored.join(", ")
                        );
                    }
                    apply_reload(&uploader, &settings).map_err(|e| e.to_string())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("reloading failed: {e}")),
            };
            match applied {
                Ok(()) => info!("configuration reloaded; uploads resume"),
                Err(e) => error!("the new configuration is refused, the old one stays: {e}"),
            }
            // Ends the reload for systemd, whatever its outcome.
            if let Some(n) = &notifier {
                n.ready();
            }
        }
    })
}

/// What happened to one file given to `ingestd upload`.
#[derive(Debug, Clone)]
pub struct UploadResult {
    pub path: PathBuf,
    /// The journal row, when the file was journaled.
    pub row: Option<FileRow>,
    /// Why it was not journaled or not uploaded, when so.
    pub note: Option<String>,
}

impl UploadResult {
    pub fn ok(&self) -> bool {
        self.row
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
        let root = watch::journal_root(&w.path);
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

/// `ingestd upload FILE…`: journals the files and uploads them in the
/// foreground. Files already uploaded are not uploaded again.
pub async fn upload_files(
    settings: &Settings,
    paths: &[PathBuf],
    shutdown: CancellationToken,
) -> Result<Vec<UploadResult>, DaemonError> {
    let session = Session::open(settings).await?;
    session.stop_waiting_on(&shutdown);
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
                });
            }
            Err(note) => {
                warn!(path = %show_path(p), "not uploading: {note}");
                results.push(UploadResult {
                    path: p.clone(),
                    row: None,
                    note: Some(note),
                });
            }
        }
    }
    let journal = session.uploader.journal.clone();
    let to_add = idents.clone();
    let added = journal
        .call(move |j| j.add_files(&to_add, FileState::Queued))
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
    let refused = session.uploader.gate.state().refused;
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
    if let Some(why) = refused {
        return Err(DaemonError::TokenRefused(why));
    }
    Ok(results)
}

/// A path for humans: lossy for names that are not UTF-8, control
/// characters escaped so a name cannot forge a line.
pub fn show_path(p: &Path) -> String {
    String::from_utf8_lossy(p.as_os_str().as_bytes())
        .escape_debug()
        .to_string()
}

/// `ingestd run --once`: uploads everything the journal has ready, then
/// returns. (Watch-folder scanning joins this with the watch stage.)
pub async fn run_once(
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<Vec<UploadResult>, DaemonError> {
    let session = Session::open(settings).await?;
    session.stop_waiting_on(&shutdown);
    let journal = session.uploader.journal.clone();
    // A folder that could not be scanned (an unmounted share) makes the run
    // fail: a job that uploaded nothing from it must not look successful.
    let mut unavailable: Vec<UploadResult> = Vec::new();
    let mut failed_early: Vec<i64> = Vec::new();
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
        unavailable = report
            .unavailable
            .iter()
            .map(|e| UploadResult {
                path: e.path().map_or_else(PathBuf::new, Path::to_path_buf),
                row: None,
                note: Some(format!("watch folder not scanned: {e}")),
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
    let refused = session.uploader.gate.state().refused;
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
    if let Some(why) = refused {
        return Err(DaemonError::TokenRefused(why));
    }
    Ok(rows
        .into_iter()
        .flatten()
        .map(|row| UploadResult {
            path: row.path(),
            row: Some(row),
            note: None,
        })
        .chain(unavailable)
        .collect())
}
