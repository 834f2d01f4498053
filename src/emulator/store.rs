//! Videos of the emulator: the per-video state machine (whole file, byte
//! ranges or parts), the `Content-Range` rules, and the files on disk.
//!
//! Layout under the data directory:
//! - `tmp/`: one file per request being received (removed when the request ends);
//! - `videos/<videoId>/source`: the video's file (byte ranges are written in
//!   place at their offset; parts are assembled into it on completion);
//! - `videos/<videoId>/parts/<n>`: the parts of a part-mode upload until it completes.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::catalogue::{self as cat, Problem};
use super::range::ContentRange;
use super::{UploadMode, VideoReport};

/// Smallest chunk allowed, except the last one (5 MiB).
pub const MIN_CHUNK: u64 = 5_242_880;
/// Largest request body (whole file, byte range or part): 200 MiB.
pub const MAX_CHUNK: u64 = 209_715_200;
/// Largest `to_byte`.
pub const MAX_TO_BYTE: u64 = 52_428_799_999;
/// Largest `total_bytes`.
pub const MAX_TOTAL_BYTES: u64 = 52_428_800_000;
/// Largest `part` and `total_parts`.
pub const MAX_PARTS: u64 = 10_000;

const COPY_BUF: usize = 1 << 20;

/// Locks a std mutex, ignoring poisoning (every critical section of this
/// module leaves its data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A file of `tmp/` that is deleted when dropped unless it was moved away.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    pub fn path(&self) -> &Path {
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
pub struct Chunk {
    pub tmp: TempFile,
    pub size: u64,
    pub file_name: Option<String>,
}

/// What an accepted request gets back.
#[derive(Debug)]
pub enum Accepted {
    /// The upload is not complete yet: `{"videoId": …}`.
    Intermediate(String),
    /// The upload is complete: the full Video.
    Complete(Value),
}

/// Running SHA-256 over the contiguous prefix of a byte-range upload.
#[derive(Clone, Debug, Default)]
struct HashCursor {
    hasher: Sha256,
    upto: u64,
}

/// The state of one video (guarded by its entry's async lock).
#[derive(Clone, Debug)]
struct Video {
    id: String,
    title: String,
    created_at: SystemTime,
    updated_at: SystemTime,
    mode: UploadMode,
    dir: PathBuf,
    /// Bytes mode: received ranges, `from → to` (inclusive), never overlapping.
    ranges: BTreeMap<u64, u64>,
    /// Bytes mode: the declared total; other modes: the final size.
    total: Option<u64>,
    /// Part mode: received parts, `part → size`.
    parts: BTreeMap<u64, u64>,
    total_parts: Option<u64>,
    received: u64,
    accepted: u32,
    complete: bool,
    sha256: Option<String>,
    cursor: HashCursor,
}

impl Video {
    fn new(id: String, title: String, mode: UploadMode, dir: PathBuf) -> Video {
        let now = SystemTime::now();
        Video {
            id,
            title,
            created_at: now,
            updated_at: now,
            mode,
            dir,
            ranges: BTreeMap::new(),
            total: None,
            parts: BTreeMap::new(),
            total_parts: None,
            received: 0,
            accepted: 0,
            complete: false,
            sha256: None,
            cursor: HashCursor::default(),
        }
    }

    fn source(&self) -> PathBuf {
        self.dir.join("source")
    }

    fn parts_dir(&self) -> PathBuf {
        self.dir.join("parts")
    }

    /// The byte-range rules, in the order of the protocol notes.
    fn check_bytes(
        &self,
        from: u64,
        to: u64,
        total: Option<u64>,
        size: u64,
    ) -> Result<(), Problem> {
        if from > to {
            return Err(cat::CR_BY_BYTES_FROM_BYTE_TOO_HIGH.into());
        }
        let len = (to - from).saturating_add(1);
        if size != len {
            return Err(Problem::new(cat::CR_BY_BYTES_RANGE_MISMATCH).detail(format!(
                "The size of the file you sent is {size} bytes but the range length you set is {len}."
            )));
        }
        if to > MAX_TO_BYTE {
            return Err(cat::CR_BY_BYTES_TO_BYTE_TOO_HIGH_ALLOWED.into());
        }
        if total == Some(0) {
            return Err(cat::CR_BY_BYTES_TOTAL_BYTES_ZERO.into());
        }
        if total.is_some_and(|t| t > MAX_TOTAL_BYTES) {
            return Err(cat::CR_BY_BYTES_TOTAL_BYTES_TOO_HIGH.into());
        }
        if len > MAX_CHUNK {
            return Err(cat::CR_BY_BYTES_RANGE_TOO_LARGE.into());
        }
        if let (Some(known), Some(t)) = (self.total, total) {
            if known != t {
                return Err(
                    Problem::new(cat::CR_BY_BYTES_DIFFERENT_TOTAL_BYTES).detail(format!(
                        "The \"total_bytes\" you already set for this video is {known}."
                    )),
                );
            }
        }
        let effective = total.or(self.total);
        if let Some(t) = effective {
            if to >= t {
                return Err(
                    Problem::new(cat::CR_BY_BYTES_TO_BYTE_TOO_HIGH_TOTAL).detail(format!(
                        "The \"total_bytes\" you set for this video is {t}."
                    )),
                );
            }
        }
        if let (None, Some(t)) = (self.total, total) {
            // Ranges never overlap: the one starting last ends last.
            if let Some((&f, &last)) = self.ranges.last_key_value() {
                if last >= t {
                    return Err(Problem::new(cat::CR_BY_BYTES_TOTAL_BYTES_TOO_LOW)
                        .detail(format!("You already sent the range {f}-{last}.")));
                }
            }
        }
        let is_last = effective.is_some_and(|t| to == t - 1);
        if len < MIN_CHUNK && !is_last {
            return Err(Problem::new(cat::CR_BY_BYTES_RANGE_TOO_SMALL).detail(format!(
                "The range length is {len} bytes; only the last range may be smaller than {MIN_CHUNK} bytes."
            )));
        }
        // Ranges never overlap, so the candidate is the one starting last at or before `to`.
        if let Some((&f, &t)) = self.ranges.range(..=to).next_back() {
            if t >= from {
                return Err(Problem::new(cat::CR_BY_BYTES_RANGE_OVERLAP).detail(format!(
                    "The range {from}-{to} overlaps with the range {f}-{t} you already sent."
                )));
            }
        }
        Ok(())
    }

    /// The part rules, in the order of the protocol notes.
    fn check_part(&self, part: u64, total: Option<u64>, size: u64) -> Result<(), Problem> {
        if part == 0 {
            return Err(cat::CR_BY_PART_PART_ZERO.into());
        }
        if part > MAX_PARTS {
            return Err(cat::CR_BY_PART_PART_TOO_HIGH_ALLOWED.into());
        }
        if total == Some(0) {
            return Err(cat::CR_BY_PART_TOTAL_PARTS_ZERO.into());
        }
        if total.is_some_and(|t| t > MAX_PARTS) {
            return Err(cat::CR_BY_PART_TOTAL_PARTS_TOO_HIGH.into());
        }
        if let (Some(known), Some(t)) = (self.total_parts, total) {
            if known != t {
                return Err(
                    Problem::new(cat::CR_BY_PART_DIFFERENT_TOTAL_PARTS).detail(format!(
                        "The \"total_parts\" you already set for this video is {known}."
                    )),
                );
            }
        }
        let effective = total.or(self.total_parts);
        if let Some(t) = effective {
            if part > t {
                return Err(
                    Problem::new(cat::CR_BY_PART_PART_TOO_HIGH_TOTAL).detail(format!(
                        "The \"total_parts\" you set for this video is {t}."
                    )),
                );
            }
        }
        if let (None, Some(t)) = (self.total_parts, total) {
            if let Some((&max, _)) = self.parts.last_key_value() {
                if t < max {
                    return Err(Problem::new(cat::CR_BY_PART_TOTAL_PARTS_TOO_LOW)
                        .detail(format!("The part number {max} has already been sent.")));
                }
            }
        }
        if self.parts.contains_key(&part) {
            return Err(Problem::new(cat::CR_BY_PART_PART_ALREADY_SENT)
                .detail(format!("The part number {part} has already been sent.")));
        }
        if size > MAX_CHUNK {
            return Err(Problem::new(cat::UPLOADED_FILE_TOO_LARGE)
                .name("file")
                .detail(format!("The maximum size is {MAX_CHUNK} bytes.")));
        }
        if size < MIN_CHUNK && effective != Some(part) {
            return Err(Problem::new(cat::CR_BY_PART_UPLOADED_FILE_TOO_SMALL).detail(format!(
                "The part is {size} bytes; only the last part may be smaller than {MIN_CHUNK} bytes."
            )));
        }
        Ok(())
    }

    fn report(&self) -> VideoReport {
        VideoReport {
            video_id: self.id.clone(),
            title: self.title.clone(),
            total: self.total,
            received_bytes: self.received,
            complete: self.complete,
            sha256: self.sha256.clone(),
            accepted_chunks: self.accepted,
            mode: self.mode,
            total_parts: self.total_parts,
            ranges: self.ranges.iter().map(|(&f, &t)| [f, t]).collect(),
            parts: self.parts.keys().copied().collect(),
            created_at: atom(self.created_at),
            path: self.source(),
        }
    }

    /// The Video object of the api.video API.
    fn json(&self) -> Value {
        let id = &self.id;
        let created = atom(self.created_at);
        json!({
            "videoId": id,
            "createdAt": created,
            "title": self.title,
            "description": "",
            "publishedAt": created,
            "updatedAt": atom(self.updated_at),
            "discarded": false,
            "discardedAt": null,
            "deletesAt": null,
            "tags": [],
            "metadata": [],
            "source": { "uri": format!("/videos/{id}/source") },
            "assets": {
                "iframe": format!(
                    "<iframe src=\"https://embed.api.video/vod/{id}\" width=\"100%\" height=\"100%\" frameborder=\"0\" scrolling=\"no\" allowfullscreen=\"true\"></iframe>"
                ),
                "player": format!("https://embed.api.video/vod/{id}"),
                "hls": format!("https://vod.api.video/vod/{id}/hls/manifest.m3u8"),
                "thumbnail": format!("https://vod.api.video/vod/{id}/thumbnail.jpg"),
                "mp4": format!("https://vod.api.video/vod/{id}/mp4/source.mp4"),
            },
            "public": true,
            "panoramic": false,
            "mp4Support": true,
        })
    }
}

/// ATOM date with an explicit offset, e.g. `2024-05-28T11:15:07+00:00`.
pub(super) fn atom(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => s,
    }
}

/// `vi` + 22 alphanumerics.
fn new_video_id() -> String {
    let mut id = String::with_capacity(24);
    id.push_str("vi");
    for _ in 0..22 {
        id.push(fastrand::alphanumeric());
    }
    id
}

/// The title of a new video: the file name without its extension.
fn title_of(file_name: Option<&str>) -> String {
    let name = file_name.unwrap_or_default();
    // Some clients send a full path; keep its last component.
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match base.rfind('.') {
        Some(dot) if dot > 0 => base[..dot].to_owned(),
        _ => base.to_owned(),
    }
}

struct Entry {
    seq: u64,
    state: tokio::sync::Mutex<Video>,
    report: Mutex<VideoReport>,
}

#[derive(Default)]
struct Index {
    by_id: HashMap<String, Arc<Entry>>,
}

/// All videos, and the data directory.
pub struct Store {
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
    pub fn open(root: PathBuf) -> io::Result<Store> {
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

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A new temporary file for an incoming body.
    pub async fn temp_file(&self) -> io::Result<(TempFile, tokio::fs::File)> {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self
            .tmp_dir()
            .join(format!("{n}-{:08x}.upload", fastrand::u32(..)));
        let file = tokio::fs::File::create(&path).await?;
        Ok((TempFile { path, armed: true }, file))
    }

    pub fn videos_created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    pub fn accepted_chunks(&self) -> u64 {
        self.accepted_chunks.load(Ordering::Relaxed)
    }

    pub fn accepted_bytes(&self) -> u64 {
        self.accepted_bytes.load(Ordering::Relaxed)
    }

    /// Reports of every video, oldest first.
    pub fn reports(&self) -> Vec<VideoReport> {
        let entries: Vec<Arc<Entry>> = lock(&self.index).by_id.values().cloned().collect();
        let mut reports: Vec<(u64, VideoReport)> = entries
            .iter()
            .map(|e| (e.seq, lock(&e.report).clone()))
            .collect();
        reports.sort_by_key(|(seq, _)| *seq);
        reports.into_iter().map(|(_, r)| r).collect()
    }

    /// Applies one received chunk (whole file, byte range or part) to a new
    /// video or to `video_id`. Runs the checks and the completion under the
    /// video's lock; a rejected chunk changes nothing.
    pub async fn apply(
        &self,
        video_id: Option<&str>,
        range: Option<ContentRange>,
        chunk: Chunk,
    ) -> Result<Accepted, Problem> {
        match video_id {
            Some(id) => self.apply_existing(id, range, chunk).await,
            None => self.apply_new(range, chunk).await,
        }
    }

    async fn apply_existing(
        &self,
        id: &str,
        range: Option<ContentRange>,
        chunk: Chunk,
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
        Ok(reply_of(&video))
    }

    async fn apply_new(
        &self,
        range: Option<ContentRange>,
        chunk: Chunk,
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
        let reply = reply_of(&next);
        let id = next.id.clone();
        let entry = Arc::new(Entry {
            seq,
            report: Mutex::new(next.report()),
            state: tokio::sync::Mutex::new(next),
        });
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
        self.accepted_chunks.fetch_add(1, Ordering::Relaxed);
        self.accepted_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(next)
    }
}

fn reply_of(video: &Video) -> Accepted {
    if video.complete {
        Accepted::Complete(video.json())
    } else {
        Accepted::Intermediate(video.id.clone())
    }
}

fn io_problem(e: &io::Error) -> Problem {
    tracing::error!(error = %e, "emulator storage failed");
    Problem::new(cat::SERVER_ERROR).detail(e.to_string())
}

async fn create_dir(dir: &Path) -> Result<(), Problem> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io_problem(&e))
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(io_problem(&e)),
        Err(e) => Err(io_problem(&io::Error::other(e))),
    }
}

fn hex(digest: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Copies `src` into `dst` at `offset`, extending the running hash when the
/// range continues the hashed prefix.
fn write_range(
    src: &Path,
    dst: &Path,
    offset: u64,
    mut cursor: HashCursor,
) -> io::Result<HashCursor> {
    let mut input = File::open(src)?;
    let mut output = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dst)?;
    output.seek(SeekFrom::Start(offset))?;
    let hashing = cursor.upto == offset;
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        output.write_all(&buf[..n])?;
        if hashing {
            cursor.hasher.update(&buf[..n]);
            cursor.upto += n as u64;
        }
    }
    output.flush()?;
    Ok(cursor)
}

/// Hashes the rest of a complete byte-range upload.
fn finish_hash(path: &Path, mut cursor: HashCursor, total: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(cursor.upto))?;
    let mut rest = file.take(total - cursor.upto.min(total));
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            break;
        }
        cursor.hasher.update(&buf[..n]);
        cursor.upto += n as u64;
    }
    if cursor.upto != total {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("video file holds {} bytes, expected {total}", cursor.upto),
        ));
    }
    Ok(hex(&cursor.hasher.finalize()))
}

/// Concatenates parts `1..=n` of `dir` into `dst`; returns the SHA-256 and the
/// size. The parts are removed only once the file is complete.
fn assemble(dir: &Path, dst: &Path, n: u64) -> io::Result<(String, u64)> {
    let mut output = File::create(dst)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; COPY_BUF];
    for part in 1..=n {
        let mut input = File::open(dir.join(part.to_string()))?;
        loop {
            let k = input.read(&mut buf)?;
            if k == 0 {
                break;
            }
            output.write_all(&buf[..k])?;
            hasher.update(&buf[..k]);
            size += k as u64;
        }
    }
    output.flush()?;
    std::fs::remove_dir_all(dir)?;
    Ok((hex(&hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn video(mode: UploadMode) -> Video {
        Video::new(
            "vi1".into(),
            "t".into(),
            mode,
            PathBuf::from("/nonexistent"),
        )
    }

    fn slug(r: Result<(), Problem>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(p) => p.error.slug.unwrap_or("null"),
        }
    }

    #[test]
    fn titles() {
        assert_eq!(title_of(Some("clip.mp4")), "clip");
        assert_eq!(title_of(Some("a.b.mov")), "a.b");
        assert_eq!(title_of(Some("dir/x/clip.mp4")), "clip");
        assert_eq!(title_of(Some(".hidden")), ".hidden");
        assert_eq!(title_of(Some("noext")), "noext");
        assert_eq!(title_of(None), "");
    }

    #[test]
    fn ids_and_dates() {
        let id = new_video_id();
        assert_eq!(id.len(), 24);
        assert!(id.starts_with("vi") && id.chars().all(|c| c.is_ascii_alphanumeric()));
        let d = atom(SystemTime::UNIX_EPOCH);
        assert_eq!(d, "1970-01-01T00:00:00+00:00");
    }

    #[test]
    fn bytes_rules() {
        let mut v = video(UploadMode::Bytes);
        let t = Some(12 * MIB);
        assert_eq!(slug(v.check_bytes(0, 5 * MIB - 1, t, 5 * MIB)), "ok");
        assert_eq!(
            slug(v.check_bytes(10, 9, t, 5 * MIB)),
            "video-content-range-by-bytes-from-byte-too-high"
        );
        let mismatch = v.check_bytes(0, 5 * MIB - 1, t, 5 * MIB - 1).err();
        assert_eq!(
            mismatch.and_then(|p| p.detail),
            Some("The size of the file you sent is 5242879 bytes but the range length you set is 5242880.".into())
        );
        assert_eq!(
            slug(v.check_bytes(MAX_TO_BYTE - 4, MAX_TO_BYTE + 1, None, 6)),
            "video-content-range-by-bytes-to-byte-too-high-allowed"
        );
        assert_eq!(
            slug(v.check_bytes(0, 9, Some(0), 10)),
            "video-content-range-by-bytes-total-bytes-zero"
        );
        assert_eq!(
            slug(v.check_bytes(0, 9, Some(MAX_TOTAL_BYTES + 1), 10)),
            "video-content-range-by-bytes-total-bytes-too-high"
        );
        assert_eq!(
            slug(v.check_bytes(0, MAX_CHUNK, None, MAX_CHUNK + 1)),
            "video-content-range-by-bytes-range-too-large"
        );
        assert_eq!(
            slug(v.check_bytes(0, 99, Some(50), 100)),
            "video-content-range-by-bytes-to-byte-too-high-total"
        );
        assert_eq!(
            slug(v.check_bytes(0, 99, None, 100)),
            "video-content-range-by-bytes-range-too-small"
        );
        // A short last chunk, even as the only one.
        assert_eq!(slug(v.check_bytes(0, 99, Some(100), 100)), "ok");

        v.ranges.insert(5 * MIB, 10 * MIB - 1);
        assert_eq!(
            slug(v.check_bytes(0, 10 * MIB - 1, Some(10 * MIB), 10 * MIB)),
            "video-content-range-by-bytes-range-overlap"
        );
        assert_eq!(
            slug(v.check_bytes(9 * MIB, 15 * MIB - 1, None, 6 * MIB)),
            "video-content-range-by-bytes-range-overlap"
        );
        assert_eq!(slug(v.check_bytes(0, 5 * MIB - 1, None, 5 * MIB)), "ok");
        assert_eq!(
            slug(v.check_bytes(0, 5 * MIB - 1, Some(10 * MIB - 1), 5 * MIB)),
            "video-content-range-by-bytes-total-bytes-too-low"
        );
        v.total = Some(12 * MIB);
        assert_eq!(
            slug(v.check_bytes(0, 5 * MIB - 1, Some(13 * MIB), 5 * MIB)),
            "video-content-range-by-bytes-different-total-bytes"
        );
        // The stored total makes a `*` range the last one.
        assert_eq!(
            slug(v.check_bytes(10 * MIB, 12 * MIB - 1, None, 2 * MIB)),
            "ok"
        );
        assert_eq!(
            slug(v.check_bytes(10 * MIB, 12 * MIB, None, 2 * MIB + 1)),
            "video-content-range-by-bytes-to-byte-too-high-total"
        );
    }

    #[test]
    fn part_rules() {
        let mut v = video(UploadMode::Part);
        assert_eq!(
            slug(v.check_part(0, None, MIB)),
            "video-content-range-by-part-part-zero"
        );
        assert_eq!(
            slug(v.check_part(10_001, None, 5 * MIB)),
            "video-content-range-by-part-part-too-high-allowed"
        );
        assert_eq!(
            slug(v.check_part(1, Some(0), 5 * MIB)),
            "video-content-range-by-part-total-parts-zero"
        );
        assert_eq!(
            slug(v.check_part(1, Some(10_001), 5 * MIB)),
            "video-content-range-by-part-total-parts-too-high"
        );
        assert_eq!(
            slug(v.check_part(3, Some(2), 5 * MIB)),
            "video-content-range-by-part-part-too-high-total"
        );
        assert_eq!(
            slug(v.check_part(1, None, 5 * MIB - 1)),
            "video-content-range-by-part-uploaded-file-too-small"
        );
        assert_eq!(slug(v.check_part(1, Some(1), 10)), "ok");
        assert_eq!(
            slug(v.check_part(1, None, MAX_CHUNK + 1)),
            "uploaded-file-too-large"
        );
        v.parts.insert(3, 5 * MIB);
        assert_eq!(
            slug(v.check_part(3, None, 5 * MIB)),
            "video-content-range-by-part-part-already-sent"
        );
        assert_eq!(
            slug(v.check_part(1, Some(2), 5 * MIB)),
            "video-content-range-by-part-total-parts-too-low"
        );
        // `part 3/*`, `part 2/*`, then `part 1/3` works.
        assert_eq!(slug(v.check_part(1, Some(3), 5 * MIB)), "ok");
        v.total_parts = Some(3);
        assert_eq!(
            slug(v.check_part(2, Some(4), 5 * MIB)),
            "video-content-range-by-part-different-total-parts"
        );
        assert_eq!(
            slug(v.check_part(4, None, 5 * MIB)),
            "video-content-range-by-part-part-too-high-total"
        );
        assert_eq!(slug(v.check_part(2, None, 5 * MIB)), "ok");
    }
}
