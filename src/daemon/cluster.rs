//! A node of a journal shared by several nodes (PostgreSQL): on its own
//! timer, every heartbeat, it renews the leases of the files it uploads,
//! takes or renews the lead of the watch folders no live node scans (the
//! watch stage of this node follows only those), and takes over the uploads
//! of nodes that went silent past their lease (an upload whose creating
//! request was in flight is in doubt, as after a crash). Every node uploads;
//! one scans each folder.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::session::sweep_interrupted;
use crate::config::{Live, WatchSettings};
use crate::display::show_path;
use crate::upload::Uploader;

/// The watch folders this node leads, out of every configured one.
fn led_folders(all: &[WatchSettings], led: &[std::path::PathBuf]) -> Vec<WatchSettings> {
    all.iter()
        .filter(|w| led.contains(&w.root()))
        .cloned()
        .collect()
}

/// Runs until `stop`: leases, leads and takeovers, every `heartbeat`.
/// `scanned` is what this node's watch stage follows.
pub(super) async fn keep(
    uploader: Uploader,
    scanned: Live<Vec<WatchSettings>>,
    heartbeat: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let in_doubt = uploader.in_doubt;
    let journal = uploader.journal.clone();
    let mut complained = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let all = uploader.watches.get();
        let roots: Vec<_> = all.iter().map(WatchSettings::root).collect();
        let round = journal
            .call(move |j| {
                let lost = j.renew_leases()?;
                let led = j.lead_roots(&roots)?;
                let swept = sweep_interrupted(j, in_doubt)?;
                Ok((lost, led, swept))
            })
            .await;
        let (lost, led, (failed, resumed)) = match round {
            Ok(r) => {
                complained = false;
                r
            }
            Err(e) => {
                if !complained {
                    complained = true;
                    warn!("cannot renew this node's leases: {e}; trying again every heartbeat");
                }
                continue;
            }
        };
        for id in lost {
            warn!(
                id,
                "this node's lease on the file was lost (it was silent longer than \
                 journal.lease, and another node took the file over): its upload here stops \
                 before its next chunk"
            );
        }
        let before = scanned.get();
        let now = led_folders(&all, &led);
        if scanned.set(now.clone()) {
            let was: Vec<_> = before.iter().map(WatchSettings::root).collect();
            for w in &now {
                if !was.contains(&w.root()) {
                    info!(folder = %show_path(&w.root()), "this node now scans the folder");
                }
            }
            for root in was.iter().filter(|r| !led.contains(r)) {
                info!(folder = %show_path(root), "another node scans the folder now");
            }
        }
        if resumed > 0 || !failed.is_empty() {
            info!(
                resumed,
                failed_in_doubt = failed.len(),
                "took over the uploads of a node that went silent past its lease"
            );
            uploader.work.notify_waiters();
        }
    }
    // A clean stop hands the folders over at once.
    let _ = journal.call(|j| j.resign()).await;
}

/// For a foreground run on a shared journal (`run --once`, `upload`):
/// renews this node's leases every `heartbeat` until the guard drops, so a
/// long upload is not taken over by a daemon node. It leads no folder and
/// takes over nothing.
pub(super) fn renew_while_running(
    journal: crate::journal::JournalHandle,
    heartbeat: Option<Duration>,
) -> Option<tokio_util::sync::DropGuard> {
    let heartbeat = heartbeat?;
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match journal.call(|j| j.renew_leases()).await {
                Ok(lost) => {
                    for id in lost {
                        warn!(
                            id,
                            "this node's lease on the file was lost: its upload here stops"
                        );
                    }
                }
                Err(e) => warn!("cannot renew this node's leases: {e}"),
            }
        }
    });
    Some(guard)
}
