//! What happens to a file once it is uploaded: keep it, delete it, or move
//! it under `move_to`; with keep and move, optionally a sidecar
//! `NAME.ingestd.json` saying where the video went (`sidecar`).
//!
//! Used by the upload workers right after a file is done, and by the watch
//! stage's catch-up scan for files done while it could not act. Synchronous
//! (renames, hashing): run it on a blocking thread. It acts only on a `done`
//! row whose file is still exactly the file that was uploaded, and it never
//! touches the journal.

mod sidecar;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{RenameFlags, CWD};
use tracing::{info, warn};

use crate::config::{journal_root, AfterUpload, WatchSettings};
use crate::display::show_path;
use crate::journal::{FileIdentity, FileRow, FileState};
use sidecar::{sidecar_names, Sidecar};

pub use sidecar::{sidecar_path, SIDECAR_SUFFIX};

/// Why an after-upload action was refused or failed. Nothing is lost
/// either way: the file stays where it is, done.
#[derive(Debug, thiserror::Error)]
pub enum AfterUploadError {
    #[error("file {id} is {state}, not done: the after-upload action is refused")]
    NotDone { id: i64, state: FileState },
    #[error(
        "file {id} ({}) does not belong to watch folder {}",
        show_path(path),
        show_path(folder)
    )]
    NotInFolder {
        id: i64,
        path: PathBuf,
        folder: PathBuf,
    },
    #[error("after upload: cannot {op} {}: {source}", show_path(path))]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "after upload: cannot move to {}: that name and its numbered variants are all taken",
        show_path(path)
    )]
    NoFreeName { path: PathBuf },
}

/// The watch folder a journal row belongs to, whose action applies to it.
pub(crate) fn folder_of<'a>(
    watches: &'a [WatchSettings],
    row: &FileRow,
) -> Option<&'a WatchSettings> {
    watches.iter().find(|w| w.root() == row.identity.root)
}

/// Whether the file at `row`'s path, now `meta`, is still the row's: its
/// size and mtime, and its hints or, when they changed (a remount) or with
/// `always_sample`, its content sample. The error says what differs.
pub(crate) fn same_file(
    row: &FileRow,
    meta: &fs::Metadata,
    always_sample: bool,
) -> Result<(), String> {
    let path = row.path();
    if !meta.is_file() || !row.identity.matches(meta) {
        return Err(format!(
            "{} is not the file journaled (its size or mtime differs: {} bytes now, {} journaled); \
             a new file there is journaled by the next scan",
            show_path(&path),
            meta.len(),
            row.identity.size
        ));
    }
    let now = FileIdentity::from_metadata(&row.identity.root, &row.identity.rel_path, meta);
    if !always_sample && row.identity.same_hints(&now) {
        return Ok(());
    }
    let Some(stored) = row.sample else {
        // Nothing to compare with: certain only with equal hints.
        return if always_sample || row.identity.same_hints(&now) {
            Ok(())
        } else {
            Err(format!(
                "{} has new hints and no sample to compare",
                show_path(&path)
            ))
        };
    };
    let sample = File::open(&path)
        .and_then(|f| crate::sample::Sample::of_file(&f, row.identity.size))
        .map_err(|e| format!("cannot read {}: {e}", show_path(&path)))?;
    if sample != stored {
        return Err(format!(
            "{} has the journaled size and mtime but other content",
            show_path(&path)
        ));
    }
    Ok(())
}

/// Nothing is deleted or moved unless it is the file that was uploaded.
pub(crate) fn still_uploaded(row: &FileRow, meta: &fs::Metadata) -> bool {
    same_file(row, meta, false).is_ok()
}

/// How many `name (N).ext` candidates are tried before giving up.
const MAX_SUFFIX: u32 = 10_000;

/// What `after_upload` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterUploadOutcome {
    /// `keep`: the file stays; the sidecar written, if any.
    Kept {
        sidecar: Option<PathBuf>,
    },
    Deleted {
        path: PathBuf,
    },
    Moved {
        from: PathBuf,
        to: PathBuf,
        sidecar: Option<PathBuf>,
    },
    /// The file is no longer where it was uploaded from (already moved or
    /// deleted, by us before a crash or by someone): nothing to do.
    Vanished {
        path: PathBuf,
    },
    /// The file changed since it was uploaded: it is left alone (it will be
    /// journaled as a new file).
    Changed {
        path: PathBuf,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> AfterUploadError + 'a {
    move |source| AfterUploadError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Applies the folder's `after_upload` to a file whose upload is `done`.
///
/// Refuses a row that is not `done` or not of this folder. Re-checks the
/// file's identity first: a file that vanished or changed since its upload
/// is left alone. `sidecar` writes `NAME.ingestd.json` (keep and move).
/// `video_json` is the Video object of the completing reply (for the player
/// URL); `None` is fine. `sha256` is the one the journal stored for the
/// file: a sidecar takes it as is, and hashes the file only when there is
/// none (a file done by an older ingestd).
pub fn apply(
    watch: &WatchSettings,
    row: &FileRow,
    video_json: Option<&str>,
    sha256: Option<&str>,
    sidecar: bool,
) -> Result<AfterUploadOutcome, AfterUploadError> {
    if row.state != FileState::Done {
        return Err(AfterUploadError::NotDone {
            id: row.id,
            state: row.state,
        });
    }
    let root = watch.root();
    if row.identity.root != root {
        return Err(AfterUploadError::NotInFolder {
            id: row.id,
            path: row.path(),
            folder: root,
        });
    }
    let path = row.path();
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            info!(id = row.id, path = %show_path(&path), "uploaded file is already gone from the watch folder");
            return Ok(AfterUploadOutcome::Vanished { path });
        }
        Err(e) => return Err(io_err("inspect", &path)(e)),
    };
    if !still_uploaded(row, &meta) {
        warn!(id = row.id, path = %show_path(&path),
            "the file changed after it was uploaded; leaving it in place (it will be uploaded as a new file)");
        return Ok(AfterUploadOutcome::Changed { path });
    }
    match &watch.after_upload {
        AfterUpload::Keep => {
            let written = if sidecar {
                let meta = Sidecar::describe(row, video_json, sha256, &path)?;
                let Some(meta) = meta else {
                    return Ok(AfterUploadOutcome::Changed { path });
                };
                let side = sidecar_path(&path);
                meta.write(&side)?;
                Some(side)
            } else {
                None
            };
            Ok(AfterUploadOutcome::Kept { sidecar: written })
        }
        AfterUpload::Delete => {
            // Checked again as late as possible: a rewrite since is kept.
            let meta = fs::metadata(&path).map_err(io_err("inspect", &path))?;
            if !still_uploaded(row, &meta) {
                warn!(id = row.id, path = %show_path(&path), "the file changed after it was uploaded; not deleting it");
                return Ok(AfterUploadOutcome::Changed { path });
            }
            fs::remove_file(&path).map_err(io_err("delete", &path))?;
            info!(id = row.id, path = %show_path(&path), "uploaded file deleted");
            Ok(AfterUploadOutcome::Deleted { path })
        }
        AfterUpload::Move(move_to) => move_file(row, &root, move_to, video_json, sha256, sidecar),
    }
}

/// Notes in the sidecar of a done file (beside it, or beside where
/// `after_upload = "move"` put it) when its video became playable. The
/// sidecar written, if there is one; a file without one is fine.
pub fn note_playable(
    watch: &WatchSettings,
    row: &FileRow,
    playable_at: &str,
) -> Result<Option<PathBuf>, AfterUploadError> {
    if !watch.sidecar {
        return Ok(None);
    }
    let mut places = vec![row.path()];
    if let AfterUpload::Move(move_to) = &watch.after_upload {
        let dest = move_target(&watch.root(), move_to).join(&row.identity.rel_path);
        // A move takes the first free numbered name: the file is at one
        // of the names taken before the first free one.
        places.extend(
            (0..=MAX_SUFFIX)
                .map(|n| numbered(&dest, n))
                .take_while(|p| fs::symlink_metadata(p).is_ok()),
        );
    }
    for place in places {
        let side = sidecar_path(&place);
        if sidecar::add_playable(&side, row.video_id.as_deref(), playable_at)? {
            return Ok(Some(side));
        }
    }
    Ok(None)
}

/// The directory `move_to` names: relative means under the watch root.
pub(crate) fn move_target(root: &Path, move_to: &Path) -> PathBuf {
    journal_root(&root.join(move_to))
}

fn move_file(
    row: &FileRow,
    root: &Path,
    move_to: &Path,
    video_json: Option<&str>,
    sha256: Option<&str>,
    sidecar: bool,
) -> Result<AfterUploadOutcome, AfterUploadError> {
    let from = row.path();
    let dest = move_target(root, move_to).join(&row.identity.rel_path);
    let dest_dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    fs::create_dir_all(&dest_dir).map_err(io_err("create the move_to directory", &dest_dir))?;
    let side_meta = if sidecar {
        match Sidecar::describe(row, video_json, sha256, &from)? {
            Some(m) => Some(m),
            None => return Ok(AfterUploadOutcome::Changed { path: from }),
        }
    } else {
        None
    };
    let video_id = side_meta.as_ref().map(|m| m.video_id.clone());
    for n in 0..=MAX_SUFFIX {
        let candidate = numbered(&dest, n);
        if fs::symlink_metadata(&candidate).is_ok() {
            continue;
        }
        let side = sidecar_path(&candidate);
        // A sidecar without its file is taken, unless it is ours from an
        // attempt interrupted between the sidecar and the rename.
        let side_exists = fs::symlink_metadata(&side).is_ok();
        if side_exists && !sidecar_names(&side, video_id.as_deref()) {
            continue;
        }
        if let Some(m) = &side_meta {
            m.write(&side)?;
        }
        // Last look before the rename: a file rewritten since is kept.
        let meta = match fs::metadata(&from) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                remove_ours(side_meta.is_some() && !side_exists, &side);
                return Ok(AfterUploadOutcome::Vanished { path: from });
            }
            Err(e) => return Err(io_err("inspect", &from)(e)),
        };
        if !still_uploaded(row, &meta) {
            remove_ours(side_meta.is_some() && !side_exists, &side);
            warn!(id = row.id, path = %show_path(&from), "the file changed after it was uploaded; not moving it");
            return Ok(AfterUploadOutcome::Changed { path: from });
        }
        match rename_no_replace(&from, &candidate, &row.identity) {
            Ok(()) => {
                info!(id = row.id, from = %show_path(&from), to = %show_path(&candidate), "uploaded file moved");
                return Ok(AfterUploadOutcome::Moved {
                    from,
                    to: candidate,
                    sidecar: side_meta.map(|_| side),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                remove_ours(side_meta.is_some() && !side_exists, &side);
                continue;
            }
            Err(e) => {
                remove_ours(side_meta.is_some() && !side_exists, &side);
                return Err(io_err("move", &from)(e));
            }
        }
    }
    Err(AfterUploadError::NoFreeName { path: dest })
}

fn remove_ours(ours: bool, side: &Path) {
    if ours {
        let _ = fs::remove_file(side);
    }
}

/// `name.ext`, then `name (1).ext`, `name (2).ext`…
pub(crate) fn numbered(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(OsStrExt::as_bytes).unwrap_or_default();
    let mut name = stem.to_vec();
    name.extend_from_slice(format!(" ({n})").as_bytes());
    if let Some(ext) = path.extension() {
        name.push(b'.');
        name.extend_from_slice(ext.as_bytes());
    }
    path.with_file_name(OsString::from_vec(name))
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`). Falls
/// back to a copy when they are on different filesystems.
fn rename_no_replace(from: &Path, to: &Path, identity: &FileIdentity) -> io::Result<()> {
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::XDEV) => copy_then_remove(from, to, identity),
        // The filesystem has no RENAME_NOREPLACE (some network ones): a
        // hard link cannot replace either; then a check and a plain rename.
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            match fs::hard_link(from, to) {
                Ok(()) => fs::remove_file(from),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
                Err(_) => {
                    if fs::symlink_metadata(to).is_ok() {
                        return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                    }
                    fs::rename(from, to)
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// A move across filesystems: copy to a hidden temp beside the target,
/// flush, rename into place without replacing, then remove the source if it
/// did not change during the copy.
fn copy_then_remove(from: &Path, to: &Path, identity: &FileIdentity) -> io::Result<()> {
    let tmp = temp_beside(to, "move");
    let result = (|| {
        let mut src = File::open(from)?;
        let mut dst = File::options().write(true).create_new(true).open(&tmp)?;
        io::copy(&mut src, &mut dst)?;
        dst.sync_all()?;
        if !identity.matches(&fs::metadata(from)?) {
            return Err(io::Error::other("the file changed while it was copied"));
        }
        match rustix::fs::renameat_with(CWD, &tmp, CWD, to, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
                if fs::symlink_metadata(to).is_ok() {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                fs::rename(&tmp, to)
            }
            Err(e) => Err(e.into()),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    fs::remove_file(from)
}

/// A hidden (so never watched) unique temp name in `target`'s directory.
pub(crate) fn temp_beside(target: &Path, what: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(OsStrExt::as_bytes)
        .unwrap_or_default();
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(name);
    tmp.extend_from_slice(
        format!(
            ".{what}-{}-{:08x}.tmp",
            std::process::id(),
            fastrand::u32(..)
        )
        .as_bytes(),
    );
    target.with_file_name(OsString::from_vec(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names() {
        let p = Path::new("/d/clip.mp4");
        assert_eq!(numbered(p, 0), PathBuf::from("/d/clip.mp4"));
        assert_eq!(numbered(p, 1), PathBuf::from("/d/clip (1).mp4"));
        assert_eq!(
            numbered(Path::new("/d/README"), 2),
            PathBuf::from("/d/README (2)")
        );
        assert_eq!(
            numbered(Path::new("/d/a.tar.gz"), 1),
            PathBuf::from("/d/a.tar (1).gz")
        );
        let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"/d/caf\xe9.mp4"));
        assert_eq!(
            numbered(&odd, 3).as_os_str().as_bytes(),
            b"/d/caf\xe9 (3).mp4"
        );
    }

    #[test]
    fn move_target_is_under_the_root_when_relative() {
        assert_eq!(
            move_target(Path::new("/srv/in"), Path::new("done")),
            PathBuf::from("/srv/in/done")
        );
        assert_eq!(
            move_target(Path::new("/srv/in"), Path::new("/srv/done/")),
            PathBuf::from("/srv/done")
        );
    }
}
