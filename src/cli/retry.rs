//! `ingestd retry [ID…] [--failed]`: failed files queued again, and gone
//! files whose file is back as it was. Works beside a running daemon
//! (guarded transitions) but never migrates a journal another process holds.

use std::process::ExitCode;

use super::{exit_status, CommandError};
use crate::config::Settings;
use crate::journal::{lock_journal, FileState, Journal, JournalError, LockError, PgTarget};

/// Queues `ids` (or, with `failed`, every failed file) again; prints one
/// line per file.
pub fn retry(settings: &Settings, ids: &[i64], failed: bool) -> Result<ExitCode, CommandError> {
    // Never a new journal when the path is wrong. A running daemon holds the
    // lock: then the rows are changed beside it (guarded transitions make the
    // concurrent write safe) and it sees them at its next look, but the
    // journal is never migrated under it.
    let path = &settings.journal.path;
    let (mut journal, _lock) = match &settings.journal.postgres {
        // A shared journal is migrated under its own lock, nodes running or not.
        Some(p) => (Journal::open_postgres(&PgTarget::from(p))?, None),
        None => {
            if !path.exists() {
                return Err(JournalError::Missing { path: path.clone() }.into());
            }
            let lock = match lock_journal(path) {
                Ok(lock) => Some(lock),
                Err(LockError::Busy { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let journal = Journal::open_existing(path, lock.is_some())?;
            (journal, lock)
        }
    };
    let mut ok = true;
    // A gone file whose file is back as it was is queued again (with its
    // progress); one that is not back stays gone.
    let mut others = Vec::new();
    for id in ids {
        match journal.get(*id)? {
            Some(row) if row.state == FileState::Gone => match crate::watch::file_is_back(&row) {
                Ok(()) => {
                    journal.retry_gone(*id)?;
                    println!("{id}: its file is back as it was; queued again");
                }
                Err(why) => {
                    ok = false;
                    println!("{id}: still gone: {why}");
                }
            },
            _ => others.push(*id),
        }
    }
    let outcome = if failed || !others.is_empty() {
        journal.retry_failed((!failed).then_some(others.as_slice()))?
    } else {
        Vec::new()
    };
    for (id, r) in &outcome {
        match r {
            Ok(()) => println!("{id}: queued again"),
            Err(e) => {
                ok = false;
                println!("{id}: {e}");
            }
        }
    }
    if outcome.is_empty() && ids.is_empty() {
        println!("no failed files");
    }
    Ok(exit_status(ok))
}
