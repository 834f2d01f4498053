//! The start of an attempt's SHA-256, and `[[watch]] duplicates = "skip"`.
//!
//! Before the first byte of a file (no videoId, nothing sent), in a folder
//! that skips duplicates, the journal is asked for a done file with the
//! same size and content sample, a SHA-256 and a videoId. If there is one,
//! this file is hashed whole; if its SHA-256 is that one's too, it is
//! recorded done with that file's video and nothing is sent. Otherwise (or
//! when the file cannot be read for it) it is uploaded as any other, and a
//! hash read whole is kept as the upload's own. A resumed upload starts
//! from its prefix read again. With `upload.sha256 = false` (which refuses
//! "skip") no hash is started, and none is kept.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::digest::{self, HashError, Running};
use super::{Outcome, Uploader, WorkerError};
use crate::after_upload;
use crate::config::Duplicates;
use crate::display::show_path;
use crate::journal::FileRow;
use crate::sample::Sample;

/// How an attempt goes on once its hash is started.
pub(super) enum Start {
    /// Upload, from this hash (`None`: it could not be read; the file is
    /// read whole at the end).
    Go(Option<Running>),
    /// The attempt ended before anything was sent (a duplicate recorded
    /// done, or a shutdown).
    Ended(Outcome),
}

impl Uploader {
    /// Starts the attempt's hash for the file open as `file`, whose content
    /// sample is `sample`; a duplicate ends the attempt here, done.
    pub(super) async fn start_digest(
        &self,
        row: &FileRow,
        file: &tokio::fs::File,
        sample: Sample,
        cancel: &CancellationToken,
    ) -> Result<Start, WorkerError> {
        let offset = row.bytes_uploaded;
        if !self.sha256 && !self.skips_duplicates(row) {
            return Ok(Start::Go(None));
        }
        if offset == 0 && row.video_id.is_none() && self.skips_duplicates(row) {
            return self.skip_if_duplicate(row, file, sample, cancel).await;
        }
        match digest::resumed(row, file, offset, cancel).await {
            Ok(d) => Ok(Start::Go(d)),
            Err(_) => self.released(row).await,
        }
    }

    /// Whether the row's watch folder says `duplicates = "skip"`.
    fn skips_duplicates(&self, row: &FileRow) -> bool {
        let folders = self.watches.get();
        after_upload::folder_of(&folders, row).is_some_and(|w| w.duplicates == Duplicates::Skip)
    }

    async fn skip_if_duplicate(
        &self,
        row: &FileRow,
        file: &tokio::fs::File,
        sample: Sample,
        cancel: &CancellationToken,
    ) -> Result<Start, WorkerError> {
        let (id, size) = (row.id, row.identity.size);
        let shown = show_path(&row.path());
        let twins = self
            .journal
            .call(move |j| j.done_twins(id, size, sample))
            .await?;
        if twins.is_empty() {
            return Ok(Start::Go(Some(Running::new())));
        }
        info!(id, path = %shown, done_files = twins.len(),
            "a done file has this file's size and content sample: computing its whole SHA-256 to compare");
        let whole = match Running::new().read_to(file, size, Some(cancel)).await {
            Ok(d) => d,
            Err(HashError::Cancelled) => return self.released(row).await,
            Err(HashError::Io(e)) => {
                warn!(id, path = %shown, "cannot read the file to compare it with the done file(s) of the same sample ({e}); uploading it");
                return Ok(Start::Go(Some(Running::new())));
            }
        };
        let sha256 = whole.clone().hex();
        let twin = twins.into_iter().find(|t| t.sha256 == sha256);
        let Some((twin, video_id)) = twin.and_then(|t| {
            let v = t.row.video_id.clone()?;
            Some((t, v))
        }) else {
            info!(id, path = %shown, "same size and content sample as a done file, but not the same SHA-256: uploading it");
            return Ok(Start::Go(Some(whole)));
        };
        let note = format!(
            "duplicate of {} (id {}), same SHA-256: recorded with its video {video_id}, nothing sent",
            show_path(&twin.row.path()),
            twin.row.id
        );
        info!(id, path = %shown, video_id = %video_id, "{note}");
        let (v, json) = (video_id.clone(), twin.video_json);
        self.journal
            .call(move |j| {
                j.mark_done_hashed(id, Some(&v), json.as_deref(), Some(&note), Some(&sha256))
            })
            .await?;
        Ok(Start::Ended(Outcome::Done { video_id }))
    }

    /// Shutting down before anything was sent: the file goes back to the
    /// queue as it was.
    async fn released(&self, row: &FileRow) -> Result<Start, WorkerError> {
        self.give_back(row.id, None, Outcome::Released)
            .await
            .map(Start::Ended)
    }
}
