//! ingestd: a watch-folder daemon that journals every new file in SQLite and
//! uploads each finished file to api.video with a delegated upload token, in
//! resumable byte-range chunks.
//!
//! # Layout: one module per stage
//!
//! ```text
//!  config ──Settings──▶ daemon ──spawns──▶ upload workers ──HTTP──▶ api.video (or emulator)
//!                          │                    │   ▲
//!                          │ claim / progress   ▼   │ rows
//!                          └──────────────▶ journal (SQLite, the only queue)
//! ```
//!
//! - [`config`]: figment (defaults → TOML → `INGESTD_*` env) into validated [`config::Settings`].
//! - [`journal`]: the SQLite journal; every SQL statement of the project lives there.
//!   It has one owner thread; async code talks to it through [`journal::JournalHandle`].
//! - [`apivideo`]: the wire protocol: multipart requests, `Content-Range`,
//!   problem-JSON replies classified into typed errors.
//! - [`upload`]: the chunk plan, streaming chunks from disk, retry with persisted
//!   backoff, global rate-limit pacing, the token gate that pauses all work on a 401.
//! - [`daemon`]: wiring: workers in a `JoinSet`, cancellation, signals.
//! - [`token`]: upload-token management (create, list, show, delete) with the
//!   account's API key.
//! - [`service`]: life under systemd: sd_notify (ready, status, watchdog), the
//!   upload counters, and the optional `/metrics` and `/healthz` endpoint.
//! - [`emulator`]: a local api.video-compatible upload endpoint for tests and `demo`.
//!
//! Crash safety comes from the journal: after every acknowledged chunk the
//! offset and the videoId are committed before the next chunk is sent, so a
//! `kill -9` at any instant loses at most the chunk in flight.

pub mod after_upload;
pub mod apivideo;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod display;
pub mod doctor;
pub mod emulator;
pub mod journal;
pub mod logging;
pub mod roots;
pub mod sample;
pub mod service;
pub mod token;
pub mod upload;
pub mod watch;
