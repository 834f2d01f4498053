//! ingestd: a watch-folder daemon that journals every new file in SQLite and
//! uploads each finished file to api.video with a delegated upload token, in
//! resumable byte-range chunks.
//!
//! # Layout: the folder list is the pipeline
//!
//! ```text
//!  watch ──rows──▶ journal (SQLite, the only queue) ──Notify──▶ upload ──▶ after_upload
//!    ▲                                                             │
//!    └──────────────── supervised by daemon (service reports) ─────┘
//! ```
//!
//! Stages, in pipeline order:
//! - [`watch`]: watch folders (inotify or polling), reconcile scans, settling,
//!   root availability; journals new files and queues finished ones.
//! - [`journal`]: the queue: rows, guarded transitions, claims, the lock file;
//!   every SQL statement of the project lives there.
//! - [`upload`]: the workers: chunk plan, the attempt and its pure decision
//!   table, pacing, the token gate, retries.
//! - `after_upload`: keep, delete or move an uploaded file, and its sidecar.
//! - [`playable`]: watch done videos until their HLS manifest answers.
//! - [`hooks`]: deliver the outbox's events to commands and webhooks.
//! - [`daemon`]: wires the stages (session, worker pool, reload, the
//!   foreground runs) and stops them together.
//! - [`service`]: what systemd and monitoring see: sd_notify, `/metrics`,
//!   `/healthz`. It reads shared state and imports no stage internals.
//!
//! Below the stages: [`config`] (raw → validated settings once; [`config::Live`]
//! for what a reload changes), [`apivideo`] (every wire fact), `roots` (is
//! a watch root there, or a share away), [`sample`] (content samples),
//! `display` and [`logging`]. Above them: [`cli`], one file per command.
//! [`emulator`] is an island: a local api.video for tests and `demo` that
//! imports nothing from the product.
//!
//! Stages import downward only (`daemon` → `watch`/`upload`/`after_upload` →
//! `journal`/`apivideo`/`config`), and a module is `pub(crate)` unless the
//! binary, `tests/` or `benches/` need it.
//!
//! Crash safety comes from the journal: after every acknowledged chunk the
//! offset and the videoId are committed before the next chunk is sent, so a
//! `kill -9` at any instant loses at most the chunk in flight.

/// Standard output that may be closed (`ingestd upload … | head`): these
/// shadow std's `println!` and `print!` in every module below, so that a
/// write error loses the output instead of panicking, and the command goes
/// on to its usual exit status.
macro_rules! println {
    () => {
        $crate::print_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::print_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// See [`println!`].
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::print_out(format_args!($($arg)*))
    };
}

/// Writes to standard output, ignoring a closed or failing stdout (the
/// reader went away: the output is lost, the work is not).
pub fn print_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_fmt(args);
}

pub(crate) mod after_upload;
pub mod apivideo;
pub mod cli;
pub mod config;
pub mod daemon;
pub(crate) mod display;
pub mod emulator;
pub(crate) mod hooks;
pub mod journal;
pub mod logging;
pub mod playable;
pub(crate) mod roots;
pub mod sample;
pub mod service;

pub mod upload;
pub mod watch;
