//! The file an attempt reads. One descriptor is kept for the whole attempt,
//! so a file replaced at its path can never contribute bytes of two
//! versions. Before the first byte the descriptor is checked against the
//! journal's identity (size, mtime, and the content sample unless every
//! hint, ctime included, is as journaled; an old row gets its sample here), and before every chunk again (size and mtime on the
//! descriptor, still linked). Device and inode are not compared: a
//! remounted share changes them, not the file. An error that may be the
//! share's (ENOENT, ENOTCONN, EIO, ESTALE…) asks the watch root first: a
//! root that is away pauses the upload, it does not abandon it.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use crate::journal::{FileIdentity, FileRow, JournalHandle};
use crate::roots::{self, Shares};
use crate::sample::Sample;

/// Why an attempt cannot go on with this file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The file is not the journaled one any more (vanished, changed).
    Gone(String),
    /// Its watch folder is unavailable: wait for it, progress kept.
    Away(String),
    /// Try again later (an I/O error, or a root ingestd does not watch).
    Retry(String),
    /// A person must act (permissions).
    Failed(String),
}

/// Looks at the row's root after `e`: `Away` if the root is unavailable and
/// watched (the watch stage brings it back), `Retry` if unavailable and not
/// watched, `None` if it is fine (the error is the file's).
async fn share_stop(shares: &Arc<Shares>, row: &FileRow, e: &io::Error) -> Option<Stop> {
    if !roots::may_be_share(e) {
        return None;
    }
    let root = row.identity.root.clone();
    let watched = shares.record(&root).is_some();
    let shares = shares.clone();
    let away = tokio::task::spawn_blocking(move || shares.check_now(&root))
        .await
        .ok()
        .flatten()?;
    Some(if watched {
        Stop::Away(away)
    } else {
        Stop::Retry(away)
    })
}

/// Opens the row's file for this attempt.
pub(crate) async fn open(shares: &Arc<Shares>, row: &FileRow) -> Result<tokio::fs::File, Stop> {
    let id = row.id;
    match tokio::fs::File::open(row.path()).await {
        Ok(f) => Ok(f),
        Err(e) => {
            if let Some(stop) = share_stop(shares, row, &e).await {
                return Err(stop);
            }
            Err(match e.kind() {
                io::ErrorKind::NotFound => {
                    Stop::Gone("the file vanished before it was uploaded".to_owned())
                }
                io::ErrorKind::PermissionDenied => Stop::Failed(format!(
                    "cannot read the file: {e}; fix its permissions, then `ingestd retry {id}`"
                )),
                _ => Stop::Retry(format!("cannot open the file: {e}")),
            })
        }
    }
}

/// Before the first byte of an attempt: the open file is the journaled one,
/// content included. Returns its content sample.
pub(crate) async fn verify_start(
    shares: &Arc<Shares>,
    journal: &JournalHandle,
    row: &FileRow,
    file: &tokio::fs::File,
) -> Result<Sample, Stop> {
    let meta = checked(shares, row, file).await?;
    // Every hint as journaled, the ctime included: no write can have
    // happened since the sample was taken (a `touch -r` after an edit still
    // moves the ctime), so it is not read again.
    let now = FileIdentity::from_metadata(&row.identity.root, &row.identity.rel_path, &meta);
    if let Some(stored) = row.sample {
        if row.identity.ctime_ns.is_some() && row.identity.same_hints(&now) {
            return Ok(stored);
        }
    }
    let size = row.identity.size;
    let dup = match file.try_clone().await {
        Ok(f) => f.into_std().await,
        Err(e) => return Err(Stop::Retry(format!("cannot read the file: {e}"))),
    };
    let sampled = tokio::task::spawn_blocking(move || Sample::of_file(&dup, size))
        .await
        .map_err(|e| Stop::Retry(format!("cannot read the file: {e}")))?;
    let sample = match sampled {
        Ok(s) => s,
        Err(e) => {
            if let Some(stop) = share_stop(shares, row, &e).await {
                return Err(stop);
            }
            return Err(match e.kind() {
                io::ErrorKind::UnexpectedEof => Stop::Gone(
                    "the file shrank since it was journaled (its new content is journaled as a new file)"
                        .to_owned(),
                ),
                _ => Stop::Retry(format!("cannot read the file for its content sample: {e}")),
            });
        }
    };
    match row.sample {
        Some(stored) if stored == sample => Ok(sample),
        Some(_) => Err(Stop::Gone(
            "the file's content changed since it was journaled (same size and mtime, other bytes \
             at its head or tail); its new content is journaled as a new file"
                .to_owned(),
        )),
        None => {
            // A row from an older ingestd: sampled the first time it is needed.
            let id = row.id;
            journal
                .call(move |j| j.set_sample(id, sample))
                .await
                .map(|()| sample)
                .map_err(|e| Stop::Retry(format!("cannot store the content sample: {e}")))
        }
    }
}

/// Before each chunk: the descriptor still holds the journaled size and
/// mtime, is still linked, and the watch folder is still there.
pub(crate) async fn check_chunk(
    shares: &Arc<Shares>,
    row: &FileRow,
    file: &tokio::fs::File,
) -> Result<(), Stop> {
    checked(shares, row, file).await.map(|_| ())
}

/// [`check_chunk`], returning what the descriptor's stat said.
async fn checked(
    shares: &Arc<Shares>,
    row: &FileRow,
    file: &tokio::fs::File,
) -> Result<std::fs::Metadata, Stop> {
    if shares.is_away(&row.identity.root) {
        return Err(Stop::Away(format!(
            "watch folder {} is unavailable",
            crate::display::show_path(&row.identity.root)
        )));
    }
    let meta = match file.metadata().await {
        Ok(m) => m,
        Err(e) => {
            if let Some(stop) = share_stop(shares, row, &e).await {
                return Err(stop);
            }
            // A stale handle on a share that answers (ESTALE after a
            // remount): the next attempt opens the path again and its
            // sample says whether it is still the same file.
            return Err(Stop::Retry(format!(
                "the open file cannot be read any more ({e}); it is opened again"
            )));
        }
    };
    let mtime_ns = meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec();
    if meta.len() != row.identity.size || mtime_ns != row.identity.mtime_ns {
        return Err(Stop::Gone(format!(
            "the file changed since it was journaled (size {} → {}, or its mtime)",
            row.identity.size,
            meta.len()
        )));
    }
    if meta.nlink() == 0 {
        // Unlinked: our descriptor still reads the old bytes, but they are
        // nobody's file any more.
        let replaced = tokio::fs::symlink_metadata(row.path()).await.is_ok();
        return Err(Stop::Gone(if replaced {
            "the file was replaced by another one at the same path during the upload".to_owned()
        } else {
            "the file was unlinked (deleted or renamed over) during the upload".to_owned()
        }));
    }
    Ok(meta)
}
