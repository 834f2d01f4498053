//! One attempt at a file: the send loop, which asks the decision table
//! ([`decide::next`]) what each chunk's result means and carries it out in
//! the journal, the logs and the counters. Every journal write of an
//! attempt happens here, in the order crash safety needs: a chunk is
//! recorded before the next one is sent. The file's SHA-256 is taken from
//! the bodies sent (see `digest`) and stored when the file is done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::decide::{self, Attempt, Between, End, Step, Then};
use super::digest::{self, Tap};
use super::duplicate::Start;
use super::plan::{chunk_at, is_chunked};
use super::read::Buffers;
use super::retry::{backoff_delay, OUTAGE_PROBE};
use super::send::{display_name, ChunkResult};
use super::source::{self, Stop};
use super::tls_probe::TLS_PROBE_CAP;
use super::Turn;
use super::{Outcome, Uploader, WorkerError};
use crate::apivideo::{ByteRange, ErrorClass, RateInfo, MAX_TOTAL_BYTES};
use crate::display::show_path;
use crate::journal::{now_ms, FileRow};
use crate::sample::Sample;

/// The note of a file given back while the token is refused.
const PAUSED: &str = "paused: the upload token was refused";
/// The note of a file given back while TLS with the server is refused.
const PAUSED_TLS: &str = "paused: the TLS handshake with the server is refused";

/// What a done file's row says when earlier requests that would have
/// created its video ended in doubt.
fn doubt_note(in_doubt: u32, ranged: bool) -> Option<String> {
    (in_doubt > 0).then(|| {
        let what = if ranged {
            "an unfinished video (it never plays, and api.video may clean it up)"
        } else {
            "a duplicate video"
        };
        format!(
            "uploaded; {in_doubt} earlier request(s) ended without a reply (a lost connection or a \
             crash), so api.video may also hold {what} with this file's name"
        )
    })
}

/// Where an attempt stands after a stored chunk.
enum Next {
    /// Send the chunk at this offset.
    Send(u64),
    /// The attempt ended.
    Ended(Outcome),
}

/// A chunk the server holds, as [`Uploader::record_stored`] records it.
struct Stored {
    range: ByteRange,
    video_id: String,
    /// The Video object of the completing reply, as JSON.
    video: Option<String>,
    /// A reply came (not only an overlap): the server can be reached.
    reached: bool,
    ranged: bool,
    /// The whole file's SHA-256, with its last chunk (when it could be had).
    sha256: Option<String>,
}

impl Uploader {
    /// Uploads one claimed file as far as it goes.
    pub async fn upload(
        &self,
        row: FileRow,
        cancel: &CancellationToken,
    ) -> Result<Outcome, WorkerError> {
        let id = row.id;
        let path = row.path();
        let shown = show_path(&path);
        let size = row.identity.size;
        let (file, sample) = match self.open_checked(&row, &shown).await? {
            Ok(opened) => opened,
            Err(outcome) => return Ok(outcome),
        };
        // The chunk plan, fixed in the journal just before the first request
        // of this attempt (see below).
        let mut plan: Option<(u64, bool)> = None;
        let mut offset = row.bytes_uploaded;
        let mut at = Attempt {
            id,
            name: display_name(&path),
            base: self.client.base_url().to_string(),
            video_id: row.video_id.clone(),
            // A resumed upload may have had its chunk at `offset` stored just
            // before the process died, so an overlap reply means "stored".
            maybe_stored: row.video_id.is_some(),
            ranged: false,
            in_doubt: self.in_doubt,
        };
        let mut last_log = Instant::now();
        // The chunks' read buffers, used again from one chunk to the next.
        let buffers = Arc::new(Buffers::default());
        if offset > 0 {
            info!(id, path = %shown, video_id = at.video_id.as_deref().unwrap_or(""), offset, size, "resuming upload");
        }
        let mut digest = match self.start_digest(&row, &file, sample, cancel).await? {
            // `upload.sha256 = false`: nothing hashed, none stored.
            Start::Go(_) if !self.sha256 => None,
            Start::Go(digest) => digest,
            Start::Ended(outcome) => return Ok(outcome),
        };

        while offset < size {
            let (turn, generation) = match self.before_chunk(&row, &file, cancel).await? {
                Ok(ready) => ready,
                Err(outcome) => return Ok(outcome),
            };
            // Fixing the plan also notes, when there is no videoId yet, that
            // a request that may create one is about to go: as late as this,
            // so a crash while waiting for a turn puts nothing in doubt.
            let (chunk_size, ranged) = match plan {
                Some(p) if at.video_id.is_some() => p,
                _ => {
                    let wanted = self.chunk_size;
                    let chunk_size = self
                        .journal
                        .call(move |j| j.set_chunk_size(id, wanted))
                        .await?;
                    *plan.insert((chunk_size, is_chunked(size, chunk_size)))
                }
            };
            at.ranged = ranged;
            let range = chunk_at(offset, size, chunk_size);
            let tap = digest.as_ref().and_then(|d| d.tap(range.offset, range.len));
            let feed = tap.as_ref().map(Tap::feed);
            let (result, body_out) = self
                .send_chunk(&file, &at, range, feed, &buffers, cancel)
                .await;
            // A reply, read or not: once its chunk is recorded, the files
            // waiting for the server may go (see `server_reached`).
            let reached = matches!(result, ChunkResult::Stored(_));
            if let ChunkResult::Stored(reply) = &result {
                self.metrics.chunk_acked(range.len);
                self.pacer.observe(turn, &reply.rate, false);
            }
            if matches!(result, ChunkResult::Abandoned) {
                info!(id, path = %shown, "shutting down: chunk in flight abandoned; it will resume");
            }
            let (vid, reply) = match decide::next(&at, result, body_out) {
                Step::Stored {
                    video_id,
                    reply,
                    other_id,
                } => {
                    if let Some(got) = other_id {
                        warn!(id, known = %video_id, got = %got, "the server answered with another videoId; keeping ours");
                    }
                    if reply.is_none() {
                        info!(id, path = %shown, video_id = at.video_id.as_deref().unwrap_or(""), range = %range.content_range(), "the server already had this chunk (sent before an interruption); moving on");
                    }
                    (video_id, reply)
                }
                Step::RateLimited {
                    retry_after,
                    not_creating,
                } => {
                    self.rate_limited(&row, &shown, &at, turn, retry_after, not_creating)
                        .await?;
                    continue;
                }
                Step::End(end) => return self.end(&row, &shown, &at, generation, end).await,
            };
            at.maybe_stored = false;
            at.video_id = Some(vid.clone());
            let end = range.offset + range.len;
            digest = digest::after_chunk(&row, digest, tap, &file, end).await;
            let sha256 = if end == size {
                self.sha256_of(&row, digest.take(), &file, cancel).await
            } else {
                None
            };
            let stored = Stored {
                range,
                video_id: vid,
                video: reply.and_then(|r| r.video).map(|v| v.to_string()),
                reached,
                ranged,
                sha256,
            };
            match self.record_stored(&row, &shown, &file, stored).await? {
                Next::Send(next) => offset = next,
                Next::Ended(outcome) => return Ok(outcome),
            }
            if last_log.elapsed() >= Duration::from_secs(5) || offset == range.len {
                last_log = Instant::now();
                info!(
                    id,
                    path = %shown,
                    video_id = %at.video_id.as_deref().unwrap_or(""),
                    "uploaded {} of {} ({}%)",
                    bytesize::ByteSize(offset),
                    bytesize::ByteSize(size),
                    offset * 100 / size
                );
            }
        }
        // Reached only if the journal already counts every byte as
        // acknowledged (progress is never recorded at the full size, but a
        // journal edited by hand could say so): finish the row.
        let v = at.video_id.clone();
        let sha256 = self.sha256_of(&row, digest, &file, cancel).await;
        self.journal
            .call(move |j| j.mark_done_hashed(id, v.as_deref(), None, None, sha256.as_deref()))
            .await?;
        Ok(Outcome::Done {
            video_id: at.video_id.unwrap_or_default(),
        })
    }

    /// The whole file's SHA-256 once its last chunk is stored (see
    /// [`digest::finish`]); none with `upload.sha256 = false`.
    async fn sha256_of(
        &self,
        row: &FileRow,
        digest: Option<digest::Running>,
        file: &tokio::fs::File,
        cancel: &CancellationToken,
    ) -> Option<String> {
        if !self.sha256 {
            return None;
        }
        digest::finish(row, digest, file, cancel).await
    }

    /// Opens the row's file and checks it is still the row's, and that it can
    /// be uploaded at all; with its content sample. `Err` is how the attempt
    /// ends instead.
    async fn open_checked(
        &self,
        row: &FileRow,
        shown: &str,
    ) -> Result<Result<(tokio::fs::File, Sample), Outcome>, WorkerError> {
        let (id, size) = (row.id, row.identity.size);
        let file = match source::open(&self.shares, row).await {
            Ok(f) => f,
            Err(stop) => return self.stop(row, stop).await.map(Err),
        };
        let sample = match source::verify_start(&self.shares, &self.journal, row, &file).await {
            Ok(sample) => sample,
            Err(stop) => return self.stop(row, stop).await.map(Err),
        };
        if size == 0 {
            let why = "the file is empty: nothing to upload";
            self.journal.call(move |j| j.mark_failed(id, why)).await?;
            return Ok(Err(Outcome::Failed));
        }
        if size > MAX_TOTAL_BYTES {
            let why = format!(
                "the file is {size} bytes, over api.video's limit of {MAX_TOTAL_BYTES} bytes"
            );
            error!(id, path = %shown, "{why}");
            self.journal.call(move |j| j.mark_failed(id, &why)).await?;
            return Ok(Err(Outcome::Failed));
        }
        Ok(Ok((file, sample)))
    }

    /// Before each chunk: not shutting down, the file still the row's, a
    /// turn of the pacer, the token not refused, no scheduled pause.
    /// Returns the turn and the token's generation it is sent with, or how
    /// the attempt ends.
    async fn before_chunk(
        &self,
        row: &FileRow,
        file: &tokio::fs::File,
        cancel: &CancellationToken,
    ) -> Result<Result<(Turn, u64), Outcome>, WorkerError> {
        let id = row.id;
        if cancel.is_cancelled() {
            return self.give_back(id, None, Outcome::Released).await.map(Err);
        }
        if let Err(stop) = source::check_chunk(&self.shares, row, file).await {
            return self.stop(row, stop).await.map(Err);
        }
        let turn = self.pacer.wait_turn(cancel).await;
        if cancel.is_cancelled() {
            return self.give_back(id, None, Outcome::Released).await.map(Err);
        }
        let gate = self.gate.state();
        if gate.closed() {
            let note = if gate.refused.is_some() {
                PAUSED
            } else {
                PAUSED_TLS
            };
            return self
                .give_back(id, Some(note.to_owned()), Outcome::Paused)
                .await
                .map(Err);
        }
        // A scheduled pause: the file goes back to the queue with its
        // progress (not a failure), and no worker claims until it ends.
        if let Some(note) = self.throttle.paused() {
            return self
                .give_back(id, Some(note), Outcome::Paused)
                .await
                .map(Err);
        }
        let generation = gate.generation;
        Ok(Ok((turn, generation)))
    }

    /// A 429: the pacer holds every worker until the window resets; the same
    /// chunk goes again at the next turn.
    async fn rate_limited(
        &self,
        row: &FileRow,
        shown: &str,
        at: &Attempt,
        turn: Turn,
        retry_after: Duration,
        not_creating: bool,
    ) -> Result<(), WorkerError> {
        let id = row.id;
        let rate = RateInfo {
            retry_after: Some(retry_after.as_secs()),
            ..RateInfo::default()
        };
        self.pacer.observe(turn, &rate, true);
        self.metrics.error(ErrorClass::Retry);
        if not_creating {
            // Refused, so not stored: nothing in flight while this waits
            // for its turn.
            self.journal.call(move |j| j.not_creating(id)).await?;
        }
        info!(
            id,
            path = %shown,
            video_id = at.video_id.as_deref().unwrap_or(""),
            retry_after_s = retry_after.as_secs(),
            "rate limited; waiting"
        );
        Ok(())
    }

    /// A stored chunk: the file checked again, then the chunk recorded (or
    /// the file finished) before anything else is sent.
    async fn record_stored(
        &self,
        row: &FileRow,
        shown: &str,
        file: &tokio::fs::File,
        stored: Stored,
    ) -> Result<Next, WorkerError> {
        let id = row.id;
        let size = row.identity.size;
        let Stored {
            range,
            video_id: vid,
            video,
            reached,
            ranged,
            sha256,
        } = stored;
        let offset = range.offset + range.len;
        let check = source::check_chunk(&self.shares, row, file).await;
        match decide::between(check, offset == size) {
            Between::Go => {}
            Between::Abandon(why) => {
                let why = format!("{why}; the upload to video {vid} was abandoned");
                // The videoId first, so the abandoned video is counted as an
                // orphan with its id.
                let (v, at) = (vid.clone(), range.offset);
                self.journal
                    .call(move |j| j.record_progress(id, &v, at))
                    .await?;
                return self.gone(row, &why).await.map(Next::Ended);
            }
            Between::Stop(stop) => {
                // The chunk was stored: record it before waiting.
                let v = vid.clone();
                self.journal
                    .call(move |j| j.record_progress(id, &v, offset))
                    .await?;
                return self.stop(row, stop).await.map(Next::Ended);
            }
        }
        if offset == size {
            let v = vid.clone();
            let note = doubt_note(row.sends_in_doubt, ranged);
            if let Some(note) = &note {
                warn!(id, path = %shown, video_id = %vid, "{note}");
            }
            self.journal
                .call(move |j| {
                    let (video, note) = (video.as_deref(), note.as_deref());
                    j.mark_done_hashed(id, Some(&v), video, note, sha256.as_deref())
                })
                .await?;
            if reached {
                self.server_reached(id).await?;
            }
            info!(id, path = %shown, video_id = %vid, size, "upload done");
            return Ok(Next::Ended(Outcome::Done { video_id: vid }));
        }
        self.journal
            .call(move |j| j.record_progress(id, &vid, offset))
            .await?;
        if reached {
            self.server_reached(id).await?;
        }
        Ok(Next::Send(offset))
    }

    /// Carries out how the attempt ends.
    async fn end(
        &self,
        row: &FileRow,
        shown: &str,
        at: &Attempt,
        generation: u64,
        end: End,
    ) -> Result<Outcome, WorkerError> {
        let id = row.id;
        let video_id = row.video_id.as_deref().unwrap_or("");
        if let Some(why) = &end.doubt {
            self.journal
                .call(move |j| j.count_send_in_doubt(id))
                .await?;
            let ranged = at.ranged;
            warn!(id, path = %shown, ranged, "the request failed after it may have been stored ({why}); it will be sent again, which can leave a {} video on api.video", if ranged { "partial" } else { "duplicate" });
        }
        if let Some(class) = end.error {
            self.metrics.error(class);
        }
        match end.then {
            Then::Retry {
                why,
                unreachable: true,
            } => self.schedule_retry(row, &why, true).await,
            Then::Retry { why, .. } => self.retry_later(row, &why).await,
            Then::TokenRefused { why } => {
                if self.gate.refuse(generation, why.clone()) {
                    error!(
                        "UPLOADS PAUSED: {why}. Every file keeps its place. Fix it (a valid token in \
                         api.token, api.token_file or $CREDENTIALS_DIRECTORY/upload-token; the right \
                         api.base_url), then send SIGHUP or restart ingestd."
                    );
                }
                self.give_back(id, Some(PAUSED.to_owned()), Outcome::Paused)
                    .await
            }
            Then::TlsRefused { why } => {
                if self.gate.tls_refused(generation, why.clone()) {
                    error!(
                        "UPLOADS PAUSED: {why}. Every file keeps its place; ingestd tries the \
                         handshake again (every {}s at first, then up to every {}s, reading the trust \
                         store again each time), resumes by itself once it works, and at once after SIGHUP.",
                        OUTAGE_PROBE.as_secs(),
                        TLS_PROBE_CAP.as_secs()
                    );
                }
                self.give_back(id, Some(PAUSED_TLS.to_owned()), Outcome::Paused)
                    .await
            }
            Then::RejectedRestart { why } => {
                error!(id, path = %shown, video_id, "upload failed permanently: {why}");
                self.journal
                    .call(move |j| j.mark_failed_restart(id, &why))
                    .await?;
                Ok(Outcome::Failed)
            }
            Then::Rejected { why } => {
                error!(id, path = %shown, video_id, "upload failed permanently: {why}");
                self.journal.call(move |j| j.mark_failed(id, &why)).await?;
                Ok(Outcome::Failed)
            }
            Then::Failed { why } => {
                error!(id, path = %shown, "{why}");
                self.journal.call(move |j| j.mark_failed(id, &why)).await?;
                Ok(Outcome::Failed)
            }
            Then::FailedInDoubt { why } => {
                error!(id, path = %shown, "{why}");
                self.journal
                    .call(move |j| j.fail_in_doubt(id, &why))
                    .await?;
                Ok(Outcome::Failed)
            }
            Then::Release => self.give_back(id, None, Outcome::Released).await,
        }
    }

    /// Gives the file back to the queue with its progress (and `note`):
    /// the attempt ends as `outcome`.
    pub(super) async fn give_back(
        &self,
        id: i64,
        note: Option<String>,
        outcome: Outcome,
    ) -> Result<Outcome, WorkerError> {
        self.journal
            .call(move |j| j.release(id, note.as_deref()))
            .await?;
        Ok(outcome)
    }

    /// Ends the attempt as `stop` says.
    async fn stop(&self, row: &FileRow, stop: Stop) -> Result<Outcome, WorkerError> {
        let id = row.id;
        let shown = show_path(&row.path());
        match stop {
            Stop::Gone(why) => self.gone(row, &why).await,
            Stop::Away(why) => {
                warn!(id, path = %shown, offset = row.bytes_uploaded,
                    video_id = row.video_id.as_deref().unwrap_or(""),
                    "upload paused: {why}; it resumes where it stopped when the folder is back");
                self.give_back(id, Some(format!("waiting: {why}")), Outcome::Waiting)
                    .await
            }
            Stop::Retry(why) => self.retry_later(row, &why).await,
            Stop::Failed(why) => {
                error!(id, path = %shown, "{why}");
                self.journal.call(move |j| j.mark_failed(id, &why)).await?;
                Ok(Outcome::Failed)
            }
        }
    }

    async fn gone(&self, row: &FileRow, why: &str) -> Result<Outcome, WorkerError> {
        let id = row.id;
        warn!(id, path = %show_path(&row.path()), video_id = row.video_id.as_deref().unwrap_or(""), "abandoning the upload: {why}");
        let why = why.to_owned();
        self.journal.call(move |j| j.mark_gone(id, &why)).await?;
        Ok(Outcome::Gone)
    }

    async fn retry_later(&self, row: &FileRow, why: &str) -> Result<Outcome, WorkerError> {
        self.outage.forget(row.id);
        self.schedule_retry(row, why, false).await
    }

    /// Schedules the next attempt after a retryable failure; `unreachable`:
    /// nothing got through to the server (see [`Outage`]).
    async fn schedule_retry(
        &self,
        row: &FileRow,
        why: &str,
        unreachable: bool,
    ) -> Result<Outcome, WorkerError> {
        let id = row.id;
        // `row` is as claimed; progress in this call resets the attempts and
        // may have brought a videoId, so read it back.
        let now_row = self.journal.call(move |j| j.get(id)).await?;
        let attempts = now_row
            .as_ref()
            .map_or(row.attempts, |r| r.attempts)
            .saturating_add(1);
        let video_id = now_row
            .and_then(|r| r.video_id)
            .or_else(|| row.video_id.clone())
            .unwrap_or_default();
        let mut delay = backoff_delay(attempts);
        if unreachable {
            delay = self.outage.unreachable(id, delay);
        }
        let at = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        warn!(id, path = %show_path(&row.path()), video_id, attempts, retry_in_ms = delay.as_millis() as u64, "upload attempt failed, will retry: {why}");
        let why = why.to_owned();
        self.journal
            .call(move |j| j.mark_retrying(id, attempts, at, &why))
            .await?;
        self.work.notify_waiters();
        Ok(Outcome::Retrying { attempts })
    }

    /// A request of file `id` got through: files waiting only because the
    /// server could not be reached are due now.
    async fn server_reached(&self, id: i64) -> Result<(), WorkerError> {
        let waiting = self.outage.reached(id);
        if waiting.is_empty() {
            return Ok(());
        }
        let moved = self
            .journal
            .call(move |j| j.make_due(&waiting, now_ms()))
            .await?;
        if moved > 0 {
            info!(
                files = moved,
                "the server can be reached again: the files waiting for it are due now"
            );
            self.work.notify_waiters();
        }
        Ok(())
    }
}
