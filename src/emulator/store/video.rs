//! One video's state: the byte-range and part rules a chunk must pass (in
//! the order of the protocol notes), its [`VideoReport`] and its api.video
//! Video JSON. Pure: no file work (that is `disk`), no locking (that is the
//! store's). Imports nothing from the product.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::disk::HashCursor;
use super::{atom, MAX_CHUNK, MAX_PARTS, MAX_TOTAL_BYTES, MAX_TO_BYTE, MIN_CHUNK};
use crate::emulator::catalogue::{self as cat, Problem};
use crate::emulator::vod;
use crate::emulator::{UploadMode, VideoReport};

/// The state of one video (guarded by its entry's async lock).
#[derive(Clone, Debug)]
pub(super) struct Video {
    pub(super) id: String,
    pub(super) title: String,
    pub(super) created_at: SystemTime,
    pub(super) updated_at: SystemTime,
    /// When the last chunk was stored: the start of "encoding".
    pub(super) completed_at: Option<SystemTime>,
    pub(super) mode: UploadMode,
    pub(super) dir: PathBuf,
    /// Bytes mode: received ranges, `from → to` (inclusive), never overlapping.
    pub(super) ranges: BTreeMap<u64, u64>,
    /// Bytes mode: the declared total; other modes: the final size.
    pub(super) total: Option<u64>,
    /// Part mode: received parts, `part → size`.
    pub(super) parts: BTreeMap<u64, u64>,
    pub(super) total_parts: Option<u64>,
    pub(super) received: u64,
    pub(super) accepted: u32,
    pub(super) complete: bool,
    pub(super) sha256: Option<String>,
    pub(super) cursor: HashCursor,
}

impl Video {
    pub(super) fn new(id: String, title: String, mode: UploadMode, dir: PathBuf) -> Video {
        let now = SystemTime::now();
        Video {
            id,
            title,
            created_at: now,
            updated_at: now,
            completed_at: None,
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

    pub(super) fn source(&self) -> PathBuf {
        self.dir.join("source")
    }

    pub(super) fn parts_dir(&self) -> PathBuf {
        self.dir.join("parts")
    }

    /// The byte-range rules, in the order of the protocol notes.
    pub(super) fn check_bytes(
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
    pub(super) fn check_part(
        &self,
        part: u64,
        total: Option<u64>,
        size: u64,
    ) -> Result<(), Problem> {
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

    pub(super) fn report(&self) -> VideoReport {
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
            completed_at: self.completed_at.map(atom),
            // Counted by the store's entry, outside the video's lock.
            manifest_requests: 0,
            path: self.source(),
        }
    }

    /// The Video object of the api.video API; its assets are on `origin`
    /// (`http://host:port`).
    pub(super) fn json(&self, origin: &str) -> Value {
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
            "assets": vod::assets(origin, id),
            "public": true,
            "panoramic": false,
            "mp4Support": true,
        })
    }
}

/// `vi` + 22 alphanumerics.
pub(super) fn new_video_id() -> String {
    let mut id = String::with_capacity(24);
    id.push_str("vi");
    for _ in 0..22 {
        id.push(fastrand::alphanumeric());
    }
    id
}

/// The title of a new video: the whole file name, extension included (the
/// official Node.js and Go clients' sandbox tests upload `10m.mp4.part.a`
/// with a token and expect that title).
pub(super) fn title_of(file_name: Option<&str>) -> String {
    let name = file_name.unwrap_or_default();
    // Some clients send a full path; keep its last component.
    name.rsplit(['/', '\\']).next().unwrap_or(name).to_owned()
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
        assert_eq!(title_of(Some("clip.mp4")), "clip.mp4");
        assert_eq!(title_of(Some("10m.mp4.part.a")), "10m.mp4.part.a");
        assert_eq!(title_of(Some("dir/x/clip.mp4")), "clip.mp4");
        assert_eq!(title_of(Some("C:\\x\\clip.mov")), "clip.mov");
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
