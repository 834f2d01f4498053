//! Hooks: what happens to a file (`uploaded`, `playable`, `not_playable`,
//! `failed`, `gone`) is told to the site's own tools. Each event is written
//! to the journal's outbox in the same transaction as the state change it
//! reports, then delivered at least once to each configured hook (a command
//! that reads the event's JSON on stdin, or a webhook that receives it as a
//! signed POST), retried with a backoff persisted in the journal. Hooks run
//! beside the pipeline and never slow uploads: a hook that fails, hangs or
//! floods its output costs only its own deliveries.
//!
//! - `deliver`: one delivery attempt to one hook and its outcome (the
//!   process or the HTTP request, timeouts, capped output, the signature).
//! - `program`: whether a command hook's program can run here.
//! - `stage`: the deliveries due, claimed from the outbox, run a few at a
//!   time per hook, and their outcome recorded (delivered, or retried).

pub(crate) mod deliver;
mod program;
mod stage;

pub(crate) use program::check_command;
pub use stage::{HookCounters, HookRunner};
