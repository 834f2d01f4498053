//! Following the configured folders: the watch stage run over the current
//! list, and restarted when a reload changes it. The first scan's report
//! is forwarded once, only from a round that really finished it.

use std::sync::Arc;

use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{run, ScanReport, WatchError, WatchOptions};
use crate::config::WatchSettings;
use crate::journal::JournalHandle;
use crate::roots::Shares;

/// Runs the watch stage over the folders `folders` holds until `stop`,
/// restarting it when they change; `ready` gets the first scan's report.
/// Ends with the stage's error, if it fails.
pub async fn follow(
    mut folders: watch::Receiver<Arc<Vec<WatchSettings>>>,
    journal: JournalHandle,
    work: Arc<Notify>,
    shares: Arc<Shares>,
    mut ready: Option<oneshot::Sender<ScanReport>>,
    stop: CancellationToken,
) -> Result<(), WatchError> {
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
        let run = run(watches, journal.clone(), work.clone(), opts, round.clone());
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
            Err(e) => return Err(e),
        }
    }
}
