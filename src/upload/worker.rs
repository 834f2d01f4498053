//! A worker: claims the next due file from the journal, uploads it, counts
//! the outcome, and naps when nothing is due. Decides nothing about a file.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Batch, Outcome, Uploader, WorkerError, BACKOFF_CAP};
use crate::journal::{now_ms, JournalError, Scope};

impl Uploader {
    /// A worker: claims files and uploads them until cancelled, or, in the
    /// foreground (`batch`), until every file of the batch is finished or has
    /// failed [`FOREGROUND_ATTEMPTS`] times in this run.
    pub async fn worker(
        &self,
        batch: Option<Arc<Batch>>,
        slot: usize,
        cancel: CancellationToken,
    ) -> Result<(), WorkerError> {
        let scope = match batch {
            Some(_) => Scope::Batch,
            None => Scope::All,
        };
        loop {
            // Retire when the concurrency was lowered below this slot.
            if cancel.is_cancelled() || slot >= *self.slots.borrow() {
                return Ok(());
            }
            let gate = self.gate.state();
            if gate.closed() {
                if batch.is_some() {
                    // In the foreground there is nobody to replace the
                    // token or trust the server's certificate.
                    return Ok(());
                }
                // One probe stands for every worker: the first slot's.
                let open = if slot == 0 && gate.refused.is_none() {
                    self.probe_tls(&cancel).await
                } else {
                    self.gate.wait_open(&cancel).await
                };
                if !open {
                    return Ok(());
                }
                continue;
            }
            // A scheduled pause (upload.bandwidth_limit): nothing is claimed
            // until it ends, in the foreground too (it is planned).
            if self.throttle.paused().is_some() {
                if !self.throttle.wait_unpaused(&cancel).await {
                    return Ok(());
                }
                continue;
            }
            // Register interest before looking, so a notify between the
            // claim and the wait is not lost.
            let notified = self.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // In the foreground, a file of an unavailable folder is claimed
            // and leaves the batch; the daemon leaves it queued meanwhile.
            let away = match batch {
                Some(_) => Vec::new(),
                None => self.shares.away_roots(),
            };
            let claimed = self
                .journal
                .call(move |j| j.claim_next_skipping(now_ms(), BACKOFF_CAP, scope, &away))
                .await?;
            if let Some(row) = claimed {
                let id = row.id;
                let outcome = match self.upload(row, &cancel).await {
                    Ok(o) => o,
                    // Someone else moved this row (the watch stage saw the
                    // file vanish, say): this file is no longer ours.
                    Err(WorkerError::Journal(
                        e @ (JournalError::WrongState { .. } | JournalError::LeaseLost { .. }),
                    )) => {
                        warn!(id, "dropping this upload: {e}");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                // Counted as soon as the journal has it, before the
                // after-upload action (which may hash or move a large file).
                self.metrics.outcome(&outcome);
                if let Outcome::Done { .. } = outcome {
                    self.after_upload(id).await;
                }
                // A file of an unavailable folder waits for the next run,
                // as does one that failed too often in this one.
                let leaves = match (&batch, &outcome) {
                    (Some(b), Outcome::Retrying { attempts }) => b.failed_once(id, *attempts),
                    (Some(_), Outcome::Waiting) => true,
                    _ => false,
                };
                if leaves {
                    self.journal.call(move |j| j.leave_batch(id)).await?;
                }
                if matches!(
                    outcome,
                    Outcome::Done { .. } | Outcome::Failed | Outcome::Gone
                ) {
                    // A slot freed: another worker waiting on an idle journal may go.
                    self.work.notify_waiters();
                }
                continue;
            }
            let (unfinished, next_retry) = self
                .journal
                .call(move |j| Ok((j.unfinished(scope)?, j.next_retry_at(scope)?)))
                .await?;
            if batch.is_some() && unfinished == 0 {
                return Ok(());
            }
            // Nothing to claim now: sleep until a retry is due, new work is
            // signalled, or a while passes (another process may add work).
            let until_retry = next_retry
                .map(|at| Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)))
                .unwrap_or(Duration::from_secs(2));
            let nap = until_retry
                .min(Duration::from_secs(2))
                .max(Duration::from_millis(20));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(nap) => {}
                _ = cancel.cancelled() => return Ok(()),
            }
        }
    }
}
