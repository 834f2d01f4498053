//! The watch stage's error type: what failed, on which folder or file,
//! and what to do about it.
//!
//! Only the type and its messages: nothing here decides or retries.

use std::path::{Path, PathBuf};

use super::show;
use crate::after_upload::AfterUploadError;
use crate::journal::JournalError;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "watch folder {} does not exist: create or mount it, or fix watch.path",
        show(path)
    )]
    Missing { path: PathBuf },
    #[error(
        "watch folder {} is not a directory: point watch.path at a directory",
        show(path)
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "cannot read watch folder {}: {source}; check its permissions for the user ingestd runs as",
        show(path)
    )]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("watch folder {} is unavailable: {why}", show(path))]
    Away { path: PathBuf, why: String },
    #[error(
        "watch folder {} was replaced under ingestd (remounted or restored); watching it again",
        show(path)
    )]
    Remounted { path: PathBuf },
    #[error("invalid pattern {pattern:?} in watch.include or watch.exclude: {source}")]
    Glob {
        pattern: String,
        source: globset::Error,
    },
    #[error(
        "watch folder {} is configured twice; keep one [[watch]] entry for it",
        show(path)
    )]
    Duplicate { path: PathBuf },
    #[error("cannot watch {} with inotify: the limit {sysctl} is reached, so this folder is polled instead. Raise the limit with `sysctl -w {sysctl}={suggested}` (persist it in /etc/sysctl.d/90-ingestd.conf)", show(path))]
    InotifyLimit {
        path: PathBuf,
        sysctl: &'static str,
        suggested: u32,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    // The after-upload errors, one variant each (the catch-up scan reports
    // them as the watch stage's).
    #[error(transparent)]
    NotDone { source: AfterUploadError },
    #[error(transparent)]
    NotInFolder { source: AfterUploadError },
    #[error(transparent)]
    AfterUpload { source: AfterUploadError },
    #[error(transparent)]
    NoFreeName { source: AfterUploadError },
    #[error("a watch task failed: {0}")]
    Task(String),
}

impl WatchError {
    /// The folder or file the error is about, when it names one.
    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            WatchError::Missing { path }
            | WatchError::NotADirectory { path }
            | WatchError::Unreadable { path, .. }
            | WatchError::Away { path, .. }
            | WatchError::Remounted { path }
            | WatchError::Duplicate { path }
            | WatchError::InotifyLimit { path, .. }
            | WatchError::NotInFolder {
                source: AfterUploadError::NotInFolder { path, .. },
            }
            | WatchError::AfterUpload {
                source: AfterUploadError::Io { path, .. },
            }
            | WatchError::NoFreeName {
                source: AfterUploadError::NoFreeName { path },
            } => Some(path),
            _ => None,
        }
    }
}

impl From<AfterUploadError> for WatchError {
    fn from(source: AfterUploadError) -> Self {
        match source {
            AfterUploadError::NotDone { .. } => WatchError::NotDone { source },
            AfterUploadError::NotInFolder { .. } => WatchError::NotInFolder { source },
            AfterUploadError::Io { .. } => WatchError::AfterUpload { source },
            AfterUploadError::NoFreeName { .. } => WatchError::NoFreeName { source },
        }
    }
}
