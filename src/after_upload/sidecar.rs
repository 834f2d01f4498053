//! The sidecar `NAME.ingestd.json`: what it holds (videoId, player URL,
//! size, SHA-256, upload time, and once known when it became playable), and writing it atomically. It names the
//! file; it never moves or deletes one.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::warn;

use super::{io_err, still_uploaded, temp_beside, AfterUploadError};
use crate::display::show_path;
use crate::journal::{rfc3339, FileRow};

/// The suffix of sidecar files (ignored by every watch folder).
pub const SIDECAR_SUFFIX: &str = ".ingestd.json";

/// `NAME.ingestd.json` beside `file`.
pub fn sidecar_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(SIDECAR_SUFFIX);
    PathBuf::from(s)
}

/// Whether the sidecar at `side` is about `video_id`.
pub(super) fn sidecar_names(side: &Path, video_id: Option<&str>) -> bool {
    let Some(video_id) = video_id else {
        return false;
    };
    fs::read(side)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("videoId").and_then(|v| v.as_str().map(str::to_owned)))
        .is_some_and(|v| v == video_id)
}

/// The content of a sidecar.
#[derive(Debug)]
pub(super) struct Sidecar {
    pub(super) video_id: String,
    json: serde_json::Value,
}

impl Sidecar {
    /// Describes the uploaded file, with `sha256`, the SHA-256 the journal
    /// stored for it, or, without one (a file done by an older ingestd),
    /// hashing it; `None` if it changed meanwhile.
    pub(super) fn describe(
        row: &FileRow,
        video_json: Option<&str>,
        sha256: Option<&str>,
        path: &Path,
    ) -> Result<Option<Sidecar>, AfterUploadError> {
        let video: Option<serde_json::Value> =
            video_json.and_then(|j| serde_json::from_str(j).ok());
        let video_id = row
            .video_id
            .clone()
            .or_else(|| {
                video
                    .as_ref()
                    .and_then(|v| v.get("videoId")?.as_str().map(str::to_owned))
            })
            .unwrap_or_default();
        let player = video
            .as_ref()
            .and_then(|v| v.pointer("/assets/player")?.as_str().map(str::to_owned));
        let sha256 = match sha256 {
            Some(known) => known.to_owned(),
            None => hash_file(path).map_err(io_err("hash", path))?,
        };
        let meta = fs::metadata(path).map_err(io_err("inspect", path))?;
        if !still_uploaded(row, &meta) {
            warn!(id = row.id, path = %show_path(path), "the file changed after it was uploaded; leaving it alone");
            return Ok(None);
        }
        let uploaded_at = row.done_at.map(rfc3339);
        let json = serde_json::json!({
            "videoId": video_id,
            "player": player,
            "file": String::from_utf8_lossy(
                row.identity.rel_path.file_name().map(OsStrExt::as_bytes).unwrap_or_default()
            ),
            "size": row.identity.size,
            "sha256": sha256,
            "uploadedAt": uploaded_at,
        });
        Ok(Some(Sidecar { video_id, json }))
    }

    /// Writes the sidecar atomically: a hidden temp, flushed, renamed.
    pub(super) fn write(&self, side: &Path) -> Result<(), AfterUploadError> {
        let tmp = temp_beside(side, "write");
        let result = (|| {
            let mut f = File::options().write(true).create_new(true).open(&tmp)?;
            let mut bytes = serde_json::to_vec_pretty(&self.json).map_err(io::Error::other)?;
            bytes.push(b'\n');
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, side)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io_err("write the sidecar", side))
    }
}

/// Adds `playableAt` (RFC 3339) to the sidecar at `side`, if it is the
/// sidecar of `video_id`; whether it did.
pub(super) fn add_playable(
    side: &Path,
    video_id: Option<&str>,
    playable_at: &str,
) -> Result<bool, AfterUploadError> {
    if !sidecar_names(side, video_id) {
        return Ok(false);
    }
    let bytes = fs::read(side).map_err(io_err("read the sidecar", side))?;
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(false);
    };
    json["playableAt"] = serde_json::Value::from(playable_at);
    let sidecar = Sidecar {
        video_id: video_id.unwrap_or_default().to_owned(),
        json,
    };
    sidecar.write(side)?;
    Ok(true)
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(crate::display::hex(&hasher.finalize()))
}
