//! The owner thread of the journal and its async face, [`JournalHandle`]:
//! calls run one at a time on that thread, and a write refused for a full
//! disk waits for room ([`DiskState`]). It must not hold SQL of its own: it
//! only runs [`Journal`] methods.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::{now_ms, Journal, JournalError};

type Job = Box<dyn FnOnce(&mut Journal) + Send>;

/// How long a write waits between attempts while the journal's disk is full.
const FULL_RETRY_FIRST: Duration = Duration::from_millis(200);
const FULL_RETRY_MAX: Duration = Duration::from_secs(5);

/// Whether the journal's disk is full, shared by the journal thread (which
/// waits for space) and whoever reports health.
#[derive(Debug, Default)]
pub(crate) struct DiskState {
    /// When the current episode began (ms since the epoch), 0 when none.
    full_since: AtomicI64,
    /// Whether the current episode is the journal's database being away
    /// (unreachable, restarting) rather than its disk being full.
    away: AtomicBool,
    /// Shutting down: a call waiting for space or the database gives up (its rows resume
    /// at the next start), so a stop never hangs on a full disk.
    give_up: AtomicBool,
}

impl DiskState {
    /// From now on, writes stop waiting for space.
    pub(crate) fn give_up(&self) {
        self.give_up.store(true, Ordering::Relaxed);
    }

    /// Since when calls have been waiting for space, if they are.
    pub(crate) fn full_since(&self) -> Option<i64> {
        self.since().filter(|_| !self.away.load(Ordering::Relaxed))
    }

    /// Since when calls have been waiting for the journal's database to
    /// answer again, if they are.
    pub(crate) fn away_since(&self) -> Option<i64> {
        self.since().filter(|_| self.away.load(Ordering::Relaxed))
    }

    /// Since when calls have been waiting, for space or for the database.
    pub(crate) fn waiting_since(&self) -> Option<i64> {
        self.since()
    }

    fn since(&self) -> Option<i64> {
        Some(self.full_since.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// True when this starts an episode.
    fn enter(&self, away: bool) -> bool {
        self.away.store(away, Ordering::Relaxed);
        self.full_since
            .compare_exchange(0, now_ms().max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The start of the episode this ends, if one was going on.
    fn leave(&self) -> Option<i64> {
        Some(self.full_since.swap(0, Ordering::Relaxed)).filter(|&t| t != 0)
    }
}

/// The async face of the journal: a dedicated thread owns the connection and
/// runs the closures sent to it in order, so the runtime never blocks on SQLite.
#[derive(Clone)]
pub struct JournalHandle {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    disk: Arc<DiskState>,
}

impl fmt::Debug for JournalHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl JournalHandle {
    /// Moves `journal` to its own thread; it closes when the last handle drops.
    pub fn spawn(mut journal: Journal) -> std::io::Result<JournalHandle> {
        let (tx, rx) = mpsc::channel::<Job>();
        let path = journal.path.clone();
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut journal);
                }
            })?;
        Ok(JournalHandle {
            jobs: tx,
            path,
            disk: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether writes are waiting for space on the journal's disk.
    pub(crate) fn disk(&self) -> &DiskState {
        &self.disk
    }

    /// Runs `f` on the journal thread and returns its result.
    ///
    /// A write that fails because the disk is full is made again, every few
    /// seconds, until there is room: everything that needs the journal waits
    /// (and says so once), nothing is lost or half-written, and work resumes
    /// by itself when space is freed. `f` must therefore be safe to run again
    /// after a disk-full error, which holds for every [`Journal`] method (each
    /// is one transaction, rolled back on error).
    pub async fn call<R, F>(&self, mut f: F) -> Result<R, JournalError>
    where
        F: FnMut(&mut Journal) -> Result<R, JournalError> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let disk = self.disk.clone();
        self.jobs
            .send(Box::new(move |j: &mut Journal| {
                let mut wait = FULL_RETRY_FIRST;
                let mut waited = false;
                let mut last_refusal: Option<String> = None;
                let r = loop {
                    match f(j) {
                        // Nobody waits for the answer any more, or ingestd is
                        // stopping: stop trying.
                        Err(e)
                            if (e.is_disk_full() || e.is_unreachable())
                                && !tx.is_closed()
                                && !disk.give_up.load(Ordering::Relaxed) =>
                        {
                            waited = true;
                            let away = e.is_unreachable();
                            if disk.enter(away) {
                                if away {
                                    tracing::error!(
                                        "{e}; everything that needs the journal waits for its \
                                         database (no file is claimed meanwhile), trying again \
                                         every few seconds"
                                    );
                                } else {
                                    tracing::error!(
                                        "{e}; everything that needs the journal waits for space, \
                                         trying again every few seconds"
                                    );
                                }
                            }
                            std::thread::sleep(wait);
                            wait = (wait * 2).min(FULL_RETRY_MAX);
                            if !away {
                                j.truncate_wal();
                            }
                            if away {
                                // Said again only when the cause changes (a
                                // server back but refusing the password, say).
                                if let Err(e) = j.reconnect() {
                                    let cause = e.to_string();
                                    if last_refusal.as_deref() != Some(cause.as_str()) {
                                        tracing::error!("{cause}; trying again every few seconds");
                                        last_refusal = Some(cause);
                                    }
                                }
                            }
                        }
                        r => break r,
                    }
                };
                // Calls run one at a time: this one was the one waiting.
                if waited {
                    let away = disk.away.load(Ordering::Relaxed);
                    if let Some(since) = disk.leave() {
                        let waited_s = (now_ms() - since).max(0) / 1000;
                        if r.is_ok() && away {
                            tracing::warn!(
                                waited_s,
                                "the journal's database answers again; resuming"
                            );
                        } else if r.is_ok() {
                            tracing::warn!(waited_s, "the journal's disk has room again; resuming");
                        } else {
                            tracing::warn!(
                                waited_s,
                                "stopped waiting for room on the journal's disk"
                            );
                        }
                    }
                }
                // The caller may have gone away (cancelled); nothing to do then.
                let _ = tx.send(r);
            }))
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }
}
