//! The daemon's stages in one named `JoinSet`: each task is spawned with the
//! [`Stage`] it is, so a panic or an error says which part of the daemon
//! failed; the first of the watch stage or the workers stops the others
//! (through `stop`), a reporting stage's is logged. The
//! metrics endpoint is told to end only once nothing else is left, so it
//! shows the drain. What a stage does is its own module's business.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::DaemonError;

/// A long-running part of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Stage {
    Watch,
    Workers,
    Supervisor,
    FirstScan,
    Reload,
    Metrics,
    Leases,
    Playable,
    Hooks,
}

impl Stage {
    /// Whether the daemon can go on without it: the uploads do not depend
    /// on the reporting stages, so their failure is logged, not fatal.
    fn is_critical(self) -> bool {
        matches!(self, Stage::Watch | Stage::Workers | Stage::Leases)
    }

    fn name(self) -> &'static str {
        match self {
            Stage::Watch => "watch stage",
            Stage::Workers => "worker pool",
            Stage::Supervisor => "supervisor",
            Stage::FirstScan => "first-scan report",
            Stage::Reload => "reloader",
            Stage::Metrics => "metrics endpoint",
            Stage::Leases => "lease keeper",
            Stage::Playable => "playable watch",
            Stage::Hooks => "hook deliveries",
        }
    }
}

/// The running stages.
#[derive(Default)]
pub(super) struct Stages {
    set: JoinSet<Result<(), DaemonError>>,
    /// Which stage each task is (a `JoinError` has only the id).
    running: HashMap<Id, Stage>,
}

impl Stages {
    /// Runs `task` as `stage`; it cannot fail (only panic).
    pub(super) fn spawn(&mut self, stage: Stage, task: impl Future<Output = ()> + Send + 'static) {
        self.spawn_fallible(stage, async move {
            task.await;
            Ok(())
        });
    }

    /// Runs `task` as `stage`; its error stops the daemon.
    pub(super) fn spawn_fallible(
        &mut self,
        stage: Stage,
        task: impl Future<Output = Result<(), DaemonError>> + Send + 'static,
    ) {
        let id = self.set.spawn(task).id();
        self.running.insert(id, stage);
    }

    /// Waits for every stage. The first error or panic of a critical stage
    /// cancels `stop`; once only the metrics endpoint is left, `metrics_stop`
    /// ends it. Returns how each critical stage ended.
    pub(super) async fn wait(
        mut self,
        stop: &CancellationToken,
        metrics_stop: &CancellationToken,
    ) -> HashMap<Stage, Result<(), DaemonError>> {
        let mut ended = HashMap::new();
        loop {
            if self.running.values().all(|s| *s == Stage::Metrics) {
                metrics_stop.cancel();
            }
            let Some(joined) = self.set.join_next_with_id().await else {
                return ended;
            };
            let id = match &joined {
                Ok((id, _)) => *id,
                Err(e) => e.id(),
            };
            // Every task is recorded as it is spawned, before it can end.
            let Some(stage) = self.running.remove(&id) else {
                continue;
            };
            let result = joined.map_or_else(
                |e| {
                    let why = format!("the {} panicked: {e}", stage.name());
                    Err(DaemonError::Thread(std::io::Error::other(why)))
                },
                |(_, result)| result,
            );
            match result {
                Err(e) if !stage.is_critical() => error!("{e}; the daemon goes on without it"),
                result => {
                    if result.is_err() {
                        stop.cancel();
                    }
                    ended.insert(stage, result);
                }
            }
        }
    }
}
