//! The journal's lock file: one writer process per journal, and a mark
//! that says a journal existed, so a deleted journal is not silently
//! started afresh (which would upload every file again).

use std::fs::File;
use std::path::{Path, PathBuf};

use super::JournalError;

/// Why the journal's lock cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the journal {} is in use by another ingestd process (lock {}); stop it first, or let it upload these files", journal.display(), lock.display())]
    Busy { journal: PathBuf, lock: PathBuf },
    #[error("the journal {} is gone or empty, but it was in use before (its lock file {} says so): it was deleted, moved or truncated. Starting a new journal would upload every file again. Put it back; or, to start afresh on purpose, delete {}", journal.display(), lock.display(), lock.display())]
    JournalVanished { journal: PathBuf, lock: PathBuf },
    #[error("cannot inspect the journal {}: {source}; check the permissions of its directory", journal.display())]
    Inspect {
        journal: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock the journal ({}): {source}", lock.display())]
    Lock {
        lock: PathBuf,
        source: std::io::Error,
    },
}

/// The lock file beside the journal; `status` does not need it.
pub fn lock_path(journal: &Path) -> PathBuf {
    let mut s = journal.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// What the lock file holds once its journal exists.
const LOCK_MARK: &[u8] = b"ingestd journal lock: this journal holds files\n";
/// What a new lock file holds until then.
const LOCK_PENDING: &[u8] = b"ingestd journal lock: no journal yet\n";

/// Marks the (held) lock file: a journal exists beside it from now on.
pub fn mark_lock(lock: &mut File) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let mut held = Vec::new();
    std::io::Read::read_to_end(lock, &mut held)?;
    if held.starts_with(LOCK_MARK) {
        return Ok(());
    }
    lock.set_len(0)?;
    lock.rewind()?;
    lock.write_all(LOCK_MARK)?;
    lock.sync_all()
}

/// Takes the journal's lock (held while the returned file is open), creating
/// the journal's directory if needed.
pub fn lock_journal(journal: &Path) -> Result<File, LockError> {
    if let Some(dir) = journal.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| {
            LockError::Journal(JournalError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })
        })?;
    }
    let lock_file = lock_path(journal);
    // The lock file outlives every run. It says "no journal yet" when made,
    // and is marked once a journal exists beside it (older versions left it
    // empty, beside a journal). A lock that knew a journal, beside a missing
    // or empty one, means the journal was deleted, moved or truncated while
    // ingestd was stopped: starting a new one would upload every file again.
    // Refuse, and say what to do.
    let held = match std::fs::read(&lock_file) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(LockError::Lock {
                lock: lock_file,
                source,
            })
        }
    };
    let journal_len = match std::fs::metadata(journal) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => {
            return Err(LockError::Inspect {
                journal: journal.to_path_buf(),
                source,
            })
        }
    };
    let knew_a_journal = match &held {
        Some(bytes) => bytes.starts_with(LOCK_MARK) || (bytes.is_empty() && journal_len == 0),
        None => false,
    };
    if knew_a_journal && journal_len == 0 {
        return Err(LockError::JournalVanished {
            journal: journal.to_path_buf(),
            lock: lock_file,
        });
    }
    let mut lock = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_file)
        .map_err(|source| LockError::Lock {
            lock: lock_file.clone(),
            source,
        })?;
    if held.is_none() {
        use std::io::Write;
        // Best effort: an empty lock only makes a later start stricter.
        let _ = lock.write_all(LOCK_PENDING);
    }
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Busy {
            journal: journal.to_path_buf(),
            lock: lock_file,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Lock {
            lock: lock_file,
            source,
        }),
    }
}
