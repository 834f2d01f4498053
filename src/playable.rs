//! Watching done videos until they play: after a file is done, its video's
//! public HLS manifest (`assets.hls` of the completion reply; no token in
//! the request) is fetched with a capped backoff until it answers 200,
//! which is recorded as `playable_at` (in the journal, with a `playable`
//! event, and in the sidecar). A video still not playable at
//! `upload.playable_timeout` gets a warning and a `not_playable` event.
//!
//! The watches live in the journal (`playable_poll_at`), so a restart goes
//! on where it stopped, and in a shared journal each node takes its share.
//! Nothing here touches an upload: a slow or dead CDN never slows one.

use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::after_upload;
use crate::config::{Live, WatchSettings};
use crate::display::show_path;
use crate::journal::{now_ms, rfc3339, JournalHandle, PlayableWatch};

/// How many manifests are fetched at once.
const AT_ONCE: usize = 8;
/// How long a claimed watch is held: past a fetch's timeout.
const HOLD: Duration = Duration::from_secs(60);
/// One fetch's timeout.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// The backoff's bounds: a quarter of the time since the upload, within.
const FIRST_LOOK: Duration = Duration::from_secs(1);
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// When to look again at a video done `since_done_ms` ago: soon at first
/// (encoding short files takes seconds), then less often, at most a minute
/// apart.
pub(crate) fn next_look(since_done_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(since_done_ms / 4).unwrap_or(0))
        .clamp(FIRST_LOOK, LONGEST_WAIT)
}

/// What one look found.
enum Look {
    Playable,
    NotYet(String),
}

/// What the stage needs.
#[derive(Clone)]
pub struct PlayableWatcher {
    pub journal: JournalHandle,
    pub http: reqwest::Client,
    pub watches: Live<Vec<WatchSettings>>,
    /// `upload.playable_timeout` (not zero: zero means no watcher).
    pub timeout: Duration,
}

impl PlayableWatcher {
    /// Runs until `stop`: every second, the watches that are due.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(FIRST_LOOK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut complained = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let round = tokio::select! {
                _ = stop.cancelled() => break,
                round = self.round() => round,
            };
            match round {
                Ok(_) => complained = false,
                Err(e) if !complained => {
                    warn!("playable watch: cannot read the journal: {e}; trying again");
                    complained = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Looks once at every watch due now; how many it looked at. One not
    /// playable yet is due again later than now: not looked at twice here.
    pub async fn round(&self) -> Result<usize, crate::journal::JournalError> {
        let mut looked = 0;
        let now = now_ms();
        loop {
            let hold = i64::try_from(HOLD.as_millis()).unwrap_or(i64::MAX);
            let due = self
                .journal
                .call(move |j| j.claim_playable(now, hold, AT_ONCE))
                .await?;
            if due.is_empty() {
                return Ok(looked);
            }
            looked += due.len();
            join_all(due.into_iter().map(|w| self.look(w))).await;
        }
    }

    async fn look(&self, watch: PlayableWatch) {
        let PlayableWatch {
            id,
            hls_url,
            done_at,
        } = watch;
        let look = self.fetch(&hls_url).await;
        let now = now_ms();
        let since_done = now.saturating_sub(done_at);
        let timeout = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let recorded = match look {
            Look::Playable => {
                let r = self.journal.call(move |j| j.mark_playable(id, now)).await;
                if let Ok(true) = r {
                    self.playable(id, now, since_done).await;
                }
                r.map(|_| ())
            }
            Look::NotYet(why) if since_done >= timeout => {
                let note = format!(
                    "not playable {} after its upload ({why}); no longer watched",
                    humantime::format_duration(Duration::from_secs(
                        u64::try_from(since_done / 1000).unwrap_or(0)
                    ))
                );
                let shown = note.clone();
                let r = self
                    .journal
                    .call(move |j| j.mark_not_playable(id, &note))
                    .await;
                if let Ok(true) = r {
                    warn!(
                        id,
                        "{shown}: check the video in the api.video dashboard (encoding may have failed)"
                    );
                }
                r.map(|_| ())
            }
            Look::NotYet(_) => {
                let next = now.saturating_add(
                    i64::try_from(next_look(since_done).as_millis()).unwrap_or(i64::MAX),
                );
                self.journal.call(move |j| j.playable_later(id, next)).await
            }
        };
        if let Err(e) = recorded {
            // The hold runs out and the watch is taken up again.
            warn!(
                id,
                "playable watch: cannot record what the manifest said: {e}"
            );
        }
    }

    /// One `GET` of the public manifest.
    async fn fetch(&self, url: &str) -> Look {
        let reply = self.http.get(url).timeout(FETCH_TIMEOUT).send().await;
        match reply {
            Ok(r) if r.status() == reqwest::StatusCode::OK => Look::Playable,
            Ok(r) => Look::NotYet(format!("the manifest answers {}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Look::NotYet("the manifest did not answer".into()),
            Err(_) => Look::NotYet("the manifest's server cannot be reached".into()),
        }
    }

    /// Logs it and notes it in the sidecar.
    async fn playable(&self, id: i64, at: i64, since_done: i64) {
        let row = match self.journal.call(move |j| j.get(id)).await {
            Ok(Some(row)) => row,
            _ => return,
        };
        info!(
            id,
            path = %show_path(&row.path()),
            after_ms = since_done,
            "playable: the video's HLS manifest answers"
        );
        let folders = self.watches.get();
        let Some(watch) = after_upload::folder_of(&folders, &row).cloned() else {
            return;
        };
        let at = rfc3339(at);
        let noted =
            tokio::task::spawn_blocking(move || after_upload::note_playable(&watch, &row, &at))
                .await;
        if let Ok(Err(e)) = noted {
            warn!(id, "playable: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_with_the_wait_and_is_capped() {
        assert_eq!(next_look(0), FIRST_LOOK);
        assert_eq!(next_look(2_000), FIRST_LOOK);
        assert_eq!(next_look(40_000), Duration::from_secs(10));
        assert_eq!(next_look(7_200_000), LONGEST_WAIT);
        assert_eq!(next_look(-5), FIRST_LOOK);
    }
}
