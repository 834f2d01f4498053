//! The journal transitions the folder's three steps (reconcile, hints,
//! settle checks) share: rows marked gone and why, gone rows revived,
//! settling rows following their file; what each asks of the settle clocks
//! (`Absorbed`), and the log lines that say what happened to a row.
//!
//! The free functions run on the journal thread inside the caller's
//! transaction: they must not block on the disk nor touch the clocks.

use std::collections::HashSet;
use std::path::PathBuf;

use tracing::info;

use super::Folder;
use crate::journal::{FileIdentity, FileState, Journal, JournalError, Resettled};
use crate::watch::settle::Settling;
use crate::watch::show;

/// New files are journaled this many per transaction.
pub(super) const ADD_BATCH: usize = 1000;

pub(super) const VANISHED: &str = "the file vanished before it was uploaded";
pub(super) const CHANGED: &str =
    "the file changed before it was uploaded (its new content is journaled as a new file)";
pub(super) const EMPTY: &str = "the file is empty; it is journaled again once it has bytes";

/// What a journal step asks of the settle clocks.
#[derive(Debug, Default)]
pub(super) struct Absorbed {
    pub(super) track: Vec<Settling>,
    pub(super) journaled: Vec<(i64, PathBuf)>,
    /// Rows marked gone, with their path and why.
    pub(super) gone: Vec<(i64, PathBuf, &'static str)>,
    /// `gone` rows whose file came back.
    pub(super) revived: Vec<(i64, PathBuf)>,
}

impl Folder {
    pub(super) fn log_revived(&self, revived: &[(i64, PathBuf)]) {
        for (id, path) in revived {
            info!(id, path = %show(path),
                "the file is back as it was journaled; it is no longer gone and its upload resumes");
        }
        if !revived.is_empty() {
            self.work.notify_waiters();
        }
    }

    pub(super) fn log_gone(&self, gone: &[(i64, PathBuf, &'static str)]) {
        for (id, path, reason) in gone {
            info!(id, path = %show(path), "{reason}; marked gone");
        }
    }
}

/// Marks `files` gone in one transaction (on the journal thread).
pub(super) fn gone_many(
    j: &mut Journal,
    files: &[(i64, PathBuf)],
    reason: &'static str,
    out: &mut Absorbed,
) -> Result<(), JournalError> {
    if files.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = files.iter().map(|(id, _)| *id).collect();
    let changed: HashSet<i64> = j.mark_gone_many(&ids, reason)?.into_iter().collect();
    out.gone.extend(
        files
            .iter()
            .filter(|(id, _)| changed.contains(id))
            .map(|(id, path)| (*id, path.clone(), reason)),
    );
    Ok(())
}

/// A `gone` row whose file is back (on the journal thread): queued again,
/// or settling again (then its clock starts).
pub(super) fn revive_one(
    j: &mut Journal,
    id: i64,
    to: FileState,
    identity: &FileIdentity,
    out: &mut Absorbed,
) -> Result<(), JournalError> {
    match j.revive(id, to) {
        Ok(()) => {
            out.revived.push((id, identity.path()));
            if to == FileState::Settling {
                j.resettle(id, identity)?;
                out.track.push(Settling {
                    id,
                    identity: identity.clone(),
                });
            }
            Ok(())
        }
        // Someone else moved it on: not ours.
        Err(JournalError::WrongState { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A settling row follows its changed file (on the journal thread).
pub(super) fn follow(
    j: &mut Journal,
    id: i64,
    identity: &FileIdentity,
    out: &mut Absorbed,
) -> Result<(), JournalError> {
    match j.resettle(id, identity) {
        Ok(Resettled::Updated) => out.track.push(Settling {
            id,
            identity: identity.clone(),
        }),
        Ok(Resettled::Merged { into, state }) => {
            out.gone.push((
                id,
                identity.path(),
                "the file became identical to another journaled file",
            ));
            if state == FileState::Settling {
                out.track.push(Settling {
                    id: into,
                    identity: identity.clone(),
                });
            }
        }
        // No longer settling (someone else moved it on): not ours to follow.
        Err(JournalError::WrongState { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}
