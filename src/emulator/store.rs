//! Videos of the emulator: the index of videos, applying one received chunk
//! (whole file, byte range or part) under the video's lock, what the public
//! assets ask of a video (when it completed), and the data directory. The
//! per-video rules live in `video`, the file work in `disk`. Imports nothing
//! from the product.
//!
//! The index lives in memory: a restarted emulator starts with no videos
//! (their files stay under `videos/`), so no completion time is kept on disk.
//!
//! Layout under the data directory:
//! - `tmp/`: one file per request being received (removed when the request ends);
//! - `videos/<videoId>/source`: the video's file (byte ranges are written in
//!   place at their offset; parts are assembled into it on completion);
//! - `videos/<videoId>/parts/<n>`: the parts of a part-mode upload until it completes.

mod disk;
mod video;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use serde_json::Value;

use self::disk::{assemble, blocking, create_dir, finish_hash, hash_file, write_range};
use self::video::{new_video_id, title_of, Video};
use super::catalogue::{self as cat, Problem};
use super::range::ContentRange;
use super::{UploadMode, VideoReport};

/// Smallest chunk allowed, except the last one (5 MiB).
pub(crate) const MIN_CHUNK: u64 = 5_242_880;
/// Largest request body (whole file, byte range or part): 200 MiB.
pub(crate) const MAX_CHUNK: u64 = 209_715_200;
/// Largest `to_byte`.
pub(crate) const MAX_TO_BYTE: u64 = 52_428_799_999;
/// Largest `total_bytes`.
pub(crate) const MAX_TOTAL_BYTES: u64 = 52_428_800_000;
/// Largest `part` and `total_parts`.
pub(crate) const MAX_PARTS: u64 = 10_000;

/// Locks a std mutex, ignoring poisoning (every critical section of this
/// module leaves its data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A file of `tmp/` that is deleted when dropped unless it was moved away.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The file part of one request, fully received into a temporary file.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) tmp: TempFile,
    pub(crate) size: u64,
    pub(crate) file_name: Option<String>,
}

/// What an accepted request gets back.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// The upload is not complete yet: `{"videoId": …}`.
    Intermediate(String),
    /// The upload is complete: the full Video.
    Complete(Value),
}

/// ATOM date with an explicit offset, e.g. `2024-05-28T11:15:07+00:00`.
pub(super) fn atom(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => s,
    }
}

struct Entry {
    seq: u64,
    state: tokio::sync::Mutex<Video>,
    report: Mutex<VideoReport>,
    /// Set once, when the upload completes; read by the public assets
    /// without waiting for the video's lock (a chunk may be storing).
    completed_at: OnceLock<SystemTime>,
    manifest_requests: AtomicU64,
}

impl Entry {
    fn new(seq: u64, video: Video) -> Entry {
        let completed_at = OnceLock::new();
        if let Some(at) = video.completed_at {
            let _ = completed_at.set(at);
        }
        Entry {
            seq,
            report: Mutex::new(video.report()),
            state: tokio::sync::Mutex::new(video),
            completed_at,
            manifest_requests: AtomicU64::new(0),
        }
    }

    fn report(&self) -> VideoReport {
        let mut report = lock(&self.report).clone();
        report.manifest_requests = self.manifest_requests.load(Ordering::Relaxed);
        report
    }
}

/// What the public assets know of a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Playback {
    Unknown,
    /// Created, not all chunks stored yet.
    Uploading,
    /// The last chunk was stored at this time.
    Completed(SystemTime),
}

#[derive(Default)]
struct Index {
    by_id: HashMap<String, Arc<Entry>>,
}

/// All videos, and the data directory.
pub(crate) struct Store {
    root: PathBuf,
    index: Mutex<Index>,
    seq: AtomicU64,
    tmp_seq: AtomicU64,
    created: AtomicU64,
    accepted_chunks: AtomicU64,
    accepted_bytes: AtomicU64,
}

impl Store {
    /// Prepares the data directory (`tmp/` is emptied).
    pub(crate) fn open(root: PathBuf) -> io::Result<Store> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(root.join("videos"))?;
        Ok(Store {
            root,
            index: Mutex::new(Index::default()),
            seq: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
            created: AtomicU64::new(0),
            accepted_chunks: AtomicU64::new(0),
            accepted_bytes: AtomicU64::new(0),
        })
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A new temporary file for an incoming body.
    pub(crate) async fn temp_file(&self) -> io::Result<(TempFile, tokio::fs::File)> {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self
            .tmp_dir()
            .join(format!("{n}-{:08x}.upload", fastrand::u32(..)));
        let file = tokio::fs::File::create(&path).await?;
        Ok((TempFile { path, armed: true }, file))
    }

    pub(crate) fn videos_created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    pub(crate) fn accepted_chunks(&self) -> u64 {
        self.accepted_chunks.load(Ordering::Relaxed)
    }

    pub(crate) fn accepted_bytes(&self) -> u64 {
        self.accepted_bytes.load(Ordering::Relaxed)
    }

    /// Reports of every video, oldest first.
    pub(crate) fn reports(&self) -> Vec<VideoReport> {
        let entries: Vec<Arc<Entry>> = lock(&self.index).by_id.values().cloned().collect();
        let mut reports: Vec<(u64, VideoReport)> =
            entries.iter().map(|e| (e.seq, e.report())).collect();
        reports.sort_by_key(|(seq, _)| *seq);
        reports.into_iter().map(|(_, r)| r).collect()
    }

    /// Counts one request of the video's HLS manifest and says where the
    /// video is.
    pub(crate) fn manifest_request(&self, id: &str) -> Playback {
        let Some(entry) = lock(&self.index).by_id.get(id).cloned() else {
            return Playback::Unknown;
        };
        entry.manifest_requests.fetch_add(1, Ordering::Relaxed);
        match entry.completed_at.get() {
            Some(&at) => Playback::Completed(at),
            None => Playback::Uploading,
        }
    }

    /// Applies one received chunk (whole file, byte range or part) to a new
    /// video or to `video_id`. Runs the checks and the completion under the
    /// video's lock; a rejected chunk changes nothing. A completed Video's
    /// assets are on `origin`.
    pub(crate) async fn apply(
        &self,
        video_id: Option<&str>,
        range: Option<ContentRange>,
        chunk: Chunk,
        origin: &str,
    ) -> Result<Accepted, Problem> {
        match video_id {
            Some(id) => self.apply_existing(id, range, chunk, origin).await,
            None => self.apply_new(range, chunk, origin).await,
        }
    }

    async fn apply_existing(
        &self,
        id: &str,
        range: Option<ContentRange>,
        chunk: Chunk,
        origin: &str,
    ) -> Result<Accepted, Problem> {
        let entry = lock(&self.index).by_id.get(id).cloned();
        let Some(entry) = entry else {
            return Err(Problem::new(cat::RESOURCE_NOT_FOUND).name("videoId"));
        };
        let mut video = entry.state.lock().await;
        if video.complete {
            return Err(Problem::new(cat::VIDEO_SOURCE_ALREADY_UPLOADED)
                .name("file")
                .detail(format!("The video {id} has already been uploaded.")));
        }
        match (range, video.mode) {
            (None, _) => return Err(cat::CR_ALREADY_INITIATED.into()),
            (Some(ContentRange::Bytes { .. }), UploadMode::Part) => {
                return Err(cat::CR_STARTED_WITH_PART.into())
            }
            (Some(ContentRange::Part { .. }), UploadMode::Bytes) => {
                return Err(cat::CR_STARTED_WITH_BYTES.into())
            }
            _ => {}
        }
        let next = self.accept(&video, range, chunk).await?;
        *video = next;
        *lock(&entry.report) = video.report();
        if let Some(at) = video.completed_at {
            let _ = entry.completed_at.set(at);
        }
        Ok(reply_of(&video, origin))
    }

    async fn apply_new(
        &self,
        range: Option<ContentRange>,
        chunk: Chunk,
        origin: &str,
    ) -> Result<Accepted, Problem> {
        let mode = match range {
            None => UploadMode::Whole,
            Some(ContentRange::Bytes { .. }) => UploadMode::Bytes,
            Some(ContentRange::Part { .. }) => UploadMode::Part,
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = loop {
            let id = new_video_id();
            if !lock(&self.index).by_id.contains_key(&id) {
                break id;
            }
        };
        let dir = self.root.join("videos").join(&id);
        let video = Video::new(id, title_of(chunk.file_name.as_deref()), mode, dir);
        let next = self.accept(&video, range, chunk).await;
        let next = match next {
            Ok(next) => next,
            Err(problem) => {
                if video.dir.exists() {
                    let _ = tokio::fs::remove_dir_all(&video.dir).await;
                }
                return Err(problem);
            }
        };
        let reply = reply_of(&next, origin);
        let id = next.id.clone();
        let entry = Arc::new(Entry::new(seq, next));
        lock(&self.index).by_id.insert(id, entry);
        self.created.fetch_add(1, Ordering::Relaxed);
        Ok(reply)
    }

    /// Checks and stores one chunk; returns the video's next state.
    async fn accept(
        &self,
        video: &Video,
        range: Option<ContentRange>,
        mut chunk: Chunk,
    ) -> Result<Video, Problem> {
        let size = chunk.size;
        let mut next = video.clone();
        match range {
            None => {
                if size > MAX_CHUNK {
                    return Err(Problem::new(cat::UPLOADED_FILE_TOO_LARGE)
                        .name("file")
                        .detail(format!("The maximum size is {MAX_CHUNK} bytes.")));
                }
                create_dir(&next.dir).await?;
                let (src, dst) = (chunk.tmp.path().to_owned(), next.source());
                let sha = blocking(move || {
                    std::fs::rename(&src, &dst)?;
                    hash_file(&dst)
                })
                .await?;
                chunk.tmp.disarm();
                next.total = Some(size);
                next.received = size;
                next.complete = true;
                next.sha256 = Some(sha);
            }
            Some(ContentRange::Bytes { from, to, total }) => {
                video.check_bytes(from, to, total, size)?;
                create_dir(&next.dir).await?;
                let (src, dst, cursor) = (
                    chunk.tmp.path().to_owned(),
                    next.source(),
                    next.cursor.clone(),
                );
                next.cursor = blocking(move || write_range(&src, &dst, from, cursor)).await?;
                next.ranges.insert(from, to);
                next.total = total.or(next.total);
                next.received += size;
                if next.total == Some(next.received) {
                    let (dst, cursor, total) = (next.source(), next.cursor.clone(), next.received);
                    next.sha256 = Some(blocking(move || finish_hash(&dst, cursor, total)).await?);
                    next.complete = true;
                }
            }
            Some(ContentRange::Part { part, total }) => {
                video.check_part(part, total, size)?;
                let parts = next.parts_dir();
                create_dir(&parts).await?;
                let (src, dst) = (chunk.tmp.path().to_owned(), parts.join(part.to_string()));
                let part_file = dst.clone();
                blocking(move || std::fs::rename(&src, &dst)).await?;
                chunk.tmp.disarm();
                next.parts.insert(part, size);
                next.total_parts = total.or(next.total_parts);
                next.received += size;
                if next.total_parts == Some(next.parts.len() as u64) {
                    let (dir, dst, n) = (parts.clone(), next.source(), next.parts.len() as u64);
                    match blocking(move || assemble(&dir, &dst, n)).await {
                        Ok((sha, len)) => {
                            next.sha256 = Some(sha);
                            next.total = Some(len);
                            next.complete = true;
                        }
                        Err(problem) => {
                            let _ = tokio::fs::remove_file(&part_file).await;
                            return Err(problem);
                        }
                    }
                }
            }
        }
        next.accepted += 1;
        next.updated_at = SystemTime::now();
        if next.complete {
            next.completed_at = Some(next.updated_at);
        }
        self.accepted_chunks.fetch_add(1, Ordering::Relaxed);
        self.accepted_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(next)
    }
}

fn reply_of(video: &Video, origin: &str) -> Accepted {
    if video.complete {
        Accepted::Complete(video.json(origin))
    } else {
        Accepted::Intermediate(video.id.clone())
    }
}
