//! "Playable": after a file is done, its video's public HLS manifest is
//! watched until it answers 200. Here: starting the watch when a file is
//! done (or saying why it is not watched), claiming the watches that are
//! due, and the two ends (`playable`, `not_playable`), each with its event.
//! No I/O besides SQL: the requests are the playable stage's.

use serde_json::Value as Json;

use super::sql::args;
use super::{now_ms, Journal, JournalError};
use crate::config::HookEvent;

/// Each file's playable time (Unix ms) and note, by id.
pub type PlayableStates = std::collections::HashMap<i64, (Option<i64>, Option<String>)>;

/// A done video to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayableWatch {
    pub id: i64,
    /// The public manifest (no token in it).
    pub hls_url: String,
    pub done_at: i64,
}

/// Where a completion reply says the manifest is, or why it is not watched.
fn manifest_of(video_json: Option<&str>) -> Result<String, &'static str> {
    let Some(text) = video_json else {
        return Err("not watched for playable: the completion reply was not kept");
    };
    let video: Json = serde_json::from_str(text)
        .map_err(|_| "not watched for playable: the completion reply is not JSON")?;
    if video["public"] == Json::Bool(false) {
        return Err("not watched for playable: a private video (its assets need a private token)");
    }
    match video["assets"]["hls"].as_str() {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Ok(url.to_owned())
        }
        _ => Err("not watched for playable: the completion reply has no HLS URL (assets.hls)"),
    }
}

impl Journal {
    /// The file `id` is done (inside that transaction): watch its video
    /// from now on, or note why it is not watched.
    pub(super) fn start_playable_watch(&mut self, id: i64) -> Result<(), JournalError> {
        if !self.outbox.watch_playable {
            return Ok(());
        }
        const OP: &str = "start watching for playable";
        let json = self
            .row(OP, "SELECT video_json FROM files WHERE id = ?1", args![id])?
            .map(|r| r.opt_text(0))
            .transpose()
            .map_err(self.query_err(OP))?
            .flatten();
        match manifest_of(json.as_deref()) {
            Ok(_) => self.exec(
                OP,
                "UPDATE files SET playable_poll_at = ?2, playable_note = NULL WHERE id = ?1",
                args![id, now_ms()],
            )?,
            Err(note) => self.exec(
                OP,
                "UPDATE files SET playable_poll_at = NULL, playable_note = ?2 WHERE id = ?1",
                args![id, note],
            )?,
        };
        Ok(())
    }

    /// Up to `limit` watches due at `now`, each held until `now + hold_ms`
    /// (another node, or this one's next round, does not look meanwhile).
    pub(crate) fn claim_playable(
        &mut self,
        now: i64,
        hold_ms: i64,
        limit: usize,
    ) -> Result<Vec<PlayableWatch>, JournalError> {
        const OP: &str = "claim playable watches";
        let rows = self.rows(
            OP,
            "UPDATE files SET playable_poll_at = ?2 \
             WHERE id IN (SELECT id FROM files WHERE playable_poll_at <= ?1 AND state = 'done' \
               ORDER BY playable_poll_at LIMIT ?3) \
             AND playable_poll_at <= ?1 AND state = 'done' \
             RETURNING id, video_json, coalesce(done_at, updated_at)",
            args![
                now,
                now.saturating_add(hold_ms),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
        )?;
        let claimed = self.map_rows(OP, rows, |r| Ok((r.i64(0)?, r.opt_text(1)?, r.i64(2)?)))?;
        let mut out = Vec::with_capacity(claimed.len());
        for (id, json, done_at) in claimed {
            match manifest_of(json.as_deref()) {
                Ok(hls_url) => out.push(PlayableWatch {
                    id,
                    hls_url,
                    done_at,
                }),
                // The reply changed under the watch (an older row): stop.
                Err(note) => {
                    self.exec(
                        OP,
                        "UPDATE files SET playable_poll_at = NULL, playable_note = ?2 WHERE id = ?1",
                        args![id, note],
                    )?;
                }
            }
        }
        out.sort_by_key(|w| w.id);
        Ok(out)
    }

    /// The manifest answered 200 at `at`: recorded, with its event. False
    /// when it was already recorded (another node saw it first).
    pub(crate) fn mark_playable(&mut self, id: i64, at: i64) -> Result<bool, JournalError> {
        self.atomically(|j| {
            let n = j.exec(
                "record playable",
                "UPDATE files SET playable_at = ?2, playable_poll_at = NULL, playable_note = NULL \
                 WHERE id = ?1 AND state = 'done' AND playable_at IS NULL \
                 AND playable_poll_at IS NOT NULL",
                args![id, at],
            )?;
            if n == 1 {
                j.emit(id, HookEvent::Playable)?;
            }
            Ok(n == 1)
        })
    }

    /// Not yet: look again at `next`.
    pub(crate) fn playable_later(&mut self, id: i64, next: i64) -> Result<(), JournalError> {
        self.exec(
            "reschedule a playable watch",
            "UPDATE files SET playable_poll_at = ?2 \
             WHERE id = ?1 AND playable_at IS NULL AND playable_poll_at IS NOT NULL",
            args![id, next],
        )?;
        Ok(())
    }

    /// Still not playable at the timeout: the watch ends, with `note` and
    /// its event. False when it had already ended.
    pub(crate) fn mark_not_playable(&mut self, id: i64, note: &str) -> Result<bool, JournalError> {
        self.atomically(|j| {
            let n = j.exec(
                "record not playable",
                "UPDATE files SET playable_poll_at = NULL, playable_note = ?2 \
                 WHERE id = ?1 AND playable_at IS NULL AND playable_poll_at IS NOT NULL",
                args![id, note],
            )?;
            if n == 1 {
                j.emit(id, HookEvent::NotPlayable)?;
            }
            Ok(n == 1)
        })
    }

    /// Each file's playable time or note, for `status` (a journal of an
    /// older schema has none).
    pub fn playable_states(&self) -> Result<PlayableStates, JournalError> {
        const OP: &str = "read playable times";
        // The outbox and the playable columns came in one migration.
        if !self.has_outbox()? {
            return Ok(Default::default());
        }
        let rows = self.rows(
            OP,
            "SELECT id, playable_at, playable_note FROM files \
             WHERE playable_at IS NOT NULL OR playable_note IS NOT NULL OR playable_poll_at IS NOT NULL",
            &[],
        )?;
        let list = self.map_rows(OP, rows, |r| {
            Ok((r.i64(0)?, (r.opt_i64(1)?, r.opt_text(2)?)))
        })?;
        Ok(list.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::manifest_of;

    #[test]
    fn the_manifest_comes_from_the_completion_reply() {
        let public = r#"{"videoId":"vi1","public":true,"assets":{"hls":"https://vod.api.video/vod/vi1/hls/manifest.m3u8"}}"#;
        assert_eq!(
            manifest_of(Some(public)).unwrap(),
            "https://vod.api.video/vod/vi1/hls/manifest.m3u8"
        );
        let private = r#"{"public":false,"assets":{"hls":"https://vod.api.video/vod/vi1/token/x/hls/manifest.m3u8"}}"#;
        assert!(manifest_of(Some(private)).unwrap_err().contains("private"));
        assert!(manifest_of(Some(r#"{"assets":{}}"#))
            .unwrap_err()
            .contains("assets.hls"));
        assert!(manifest_of(Some(r#"{"assets":{"hls":"file:///etc/passwd"}}"#)).is_err());
        assert!(manifest_of(None).unwrap_err().contains("not kept"));
        assert!(manifest_of(Some("not json")).is_err());
    }
}
