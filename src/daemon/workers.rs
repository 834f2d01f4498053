//! The worker-slot pool: `concurrency` upload workers in one `JoinSet`,
//! grown or shrunk on reload, stopped together on the first fatal error or
//! at the shutdown deadline. What a worker does is `upload`'s business.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{DaemonError, Session};
use crate::upload::{Batch, SHUTDOWN_DEADLINE};

impl Session {
    /// Runs `concurrency` workers until `cancel` (or, with `only`, until
    /// those files are finished). A worker's journal error stops them all.
    pub(crate) async fn run_workers(
        &self,
        only: Option<Vec<i64>>,
        cancel: &CancellationToken,
    ) -> Result<(), DaemonError> {
        let batch = match only {
            Some(ids) => {
                self.uploader
                    .journal
                    .call(move |j| j.set_batch(&ids))
                    .await?;
                Some(Arc::new(Batch::default()))
            }
            None => None,
        };
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
