//! The commands, one file each: what a command does with its arguments and
//! what it prints. Parsing, signals and exit statuses of a whole process
//! are `main`'s; the work itself is the stages' (`daemon`, `journal`, …).
//!
//! - `run`: `ingestd run`, `run --once`, `upload FILE…` (their report).
//! - `status`, `retry`, `check_config`, `token`, `demo`.
//! - `export`: `ingestd journal export` (a SQLite journal into a shared one).
//! - `generate`: `ingestd completions SHELL`, `ingestd manpage`.

pub mod check_config;
pub mod demo;
pub mod export;
pub mod generate;
pub(crate) mod hooks_status;
pub mod retry;
pub mod run;
pub mod status;
pub mod token;

use std::process::ExitCode;

use crate::daemon::DaemonError;
use crate::journal::{JournalError, LockError};

/// EX_CONFIG from sysexits.h: the configuration is invalid.
pub const EXIT_CONFIG: u8 = 78;

/// Why a command could not do its work (its message says what to do).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// 0 when `ok`, else 1.
pub fn exit_status(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
