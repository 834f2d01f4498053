//! Upload workers: claim a file from the journal, send it chunk by chunk
//! (streamed from disk), commit each acknowledged chunk before the next, and
//! turn every failure into a journal state: retrying (persisted backoff),
//! failed (permanent), gone (the source changed), or back to the queue (token
//! trouble, shutdown).
//!
//! Shared by all workers: the [`Pacer`] (api.video's rate limit is per
//! account, not per file), the [`TokenGate`] (a refused token pauses every
//! upload), the [`Throttle`] (`upload.bandwidth_limit`) and the [`Outage`]
//! (files waiting because the server could not be reached).
//!
//! # Layout
//! - `plan`: the byte ranges a file is sent in (pure).
//! - `attempt`: one attempt at a file: the send loop, and the pure decision
//!   table ([`attempt::next`]) of what each chunk result does to the file.
//! - `send`: one chunk on the wire, watched for stalls and shutdown.
//! - `read`: a chunk's bytes, read from the file in large blocks on a thread of its own.
//! - `source`: is the file on disk still the row's file (before and between chunks).
//! - `digest`: the file's SHA-256, from the chunk bodies as they are read.
//! - `duplicate`: where an attempt's hash starts; `duplicates = "skip"`.
//! - `retry`, `pacer`, `gate`, `throttle`: the state every worker shares.
//! - `worker`, `batch`: the claim loop, and the files of a foreground run.
//! - `counters`: the event counters `/metrics` shows.
//!
//! This stage imports only downward (journal, apivideo, config, roots,
//! after_upload); what watches folders or supervises the daemon is not its
//! business.

mod attempt;
mod batch;
mod counters;
mod decide;
mod digest;
mod duplicate;
mod gate;
mod pacer;
mod plan;
mod read;
mod retry;
mod send;
mod source;
mod throttle;
mod tls_probe;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::after_upload;
use crate::apivideo::Client;
use crate::config::{InDoubt, Live, WatchSettings};
use crate::display::show_path;
use crate::journal::{JournalError, JournalHandle};

pub use batch::Batch;
pub use counters::{Metrics, MetricsSnapshot};
pub(crate) use decide::interrupted_in_doubt;
pub use gate::{GateState, TokenGate};
pub use pacer::{Pacer, Turn};
pub use plan::{chunk_at, chunk_plan, is_chunked, ONE_REQUEST_MAX};
pub use retry::{backoff_delay, Outage, BACKOFF_BASE, BACKOFF_CAP, OUTAGE_PROBE};
pub use throttle::{BandwidthNow, Clock, SystemClock, Throttle};

/// In the foreground (`upload`, `run --once`), a file that failed this many
/// times in a row is left `retrying` for the next run instead of blocking the
/// command's exit.
pub const FOREGROUND_ATTEMPTS: u32 = 5;
/// On shutdown, the longest the workers may take in all: past it, a worker
/// stuck in I/O (a dead network mount) is dropped. Its row stays `uploading`
/// and is resumed at the next start, as after a crash.
pub(crate) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(35);

/// The current watch folders; a reload sends a new list.
pub(crate) type Folders = Live<Vec<WatchSettings>>;

/// Everything a worker needs, shared by all of them.
#[derive(Debug, Clone)]
pub struct Uploader {
    /// Where every claim, chunk and outcome is recorded before the next step.
    pub(crate) journal: JournalHandle,
    /// The api.video upload client (its token replaced on reload).
    pub(crate) client: Client,
    /// `api.chunk_size`, fixed per file at its first request.
    pub(crate) chunk_size: u64,
    /// api.video's rate limit is per account: one pacer for every worker.
    pub(crate) pacer: Arc<Pacer>,
    /// A refused token pauses every worker.
    pub(crate) gate: TokenGate,
    /// `upload.bandwidth_limit`, shared by every upload.
    pub(crate) throttle: Arc<Throttle>,
    /// Signalled when new work may be in the journal.
    pub(crate) work: Arc<Notify>,
    /// The watch folders (replaced on reload), for the after-upload action
    /// of their files.
    pub(crate) watches: Folders,
    /// How many workers should run (changed on reload).
    pub(crate) slots: Arc<watch::Sender<usize>>,
    /// Counters for `/metrics`.
    pub(crate) metrics: Arc<Metrics>,
    /// Files waiting because the server could not be reached.
    pub(crate) outage: Arc<Outage>,
    /// `upload.in_doubt`: resend, or fail, a one-request file in doubt.
    pub(crate) in_doubt: InDoubt,
    /// `upload.sha256`: whether each upload's SHA-256 is computed.
    pub(crate) sha256: bool,
    /// Watch roots that are unavailable: their files wait.
    pub(crate) shares: Arc<crate::roots::Shares>,
}

/// How one attempt at a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done {
        video_id: String,
    },
    /// With the journal's count of failures since the last progress.
    Retrying {
        attempts: u32,
    },
    Failed,
    Gone,
    /// Given back to the queue: the token was refused, or a scheduled
    /// pause began.
    Paused,
    /// Given back to the queue: shutting down.
    Released,
    /// Given back to the queue: its watch folder is unavailable.
    Waiting,
}

/// Errors that stop a worker: the journal cannot record what happened, so
/// continuing could lose track of what the server holds.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl Uploader {
    /// Keeps, deletes or moves a file whose upload is done, as its watch
    /// folder says. A failure here loses nothing (the file stays where it
    /// is, done): it is logged, and the next reconcile scan tries again.
    async fn after_upload(&self, id: i64) {
        let row = match self.journal.call(move |j| j.get(id)).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                warn!(id, "after upload: cannot read the journal: {e}");
                return;
            }
        };
        let folders = self.watches.get();
        let Some(watch) = after_upload::folder_of(&folders, &row).cloned() else {
            return;
        };
        let read = self
            .journal
            .call(move |j| Ok((j.video_json(id)?, j.sha256(id)?)))
            .await;
        let (json, sha256) = match read {
            Ok(both) => both,
            Err(e) => {
                warn!(id, "after upload: cannot read the journal: {e}");
                (None, None)
            }
        };
        let path = show_path(&row.path());
        let done = tokio::task::spawn_blocking(move || {
            let (json, sha256) = (json.as_deref(), sha256.as_deref());
            after_upload::apply(&watch, &row, json, sha256, watch.sidecar)
        })
        .await;
        match done {
            Ok(Ok(outcome)) => info!(id, path = %path, "after upload: {outcome:?}"),
            Ok(Err(e)) => warn!(id, path = %path, "after upload: {e}; the next scan tries again"),
            Err(e) => warn!(id, path = %path, "after upload failed: {e}"),
        }
    }
}
