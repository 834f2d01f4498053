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
//!   Whether and when to try again is the stage's business.

// The hooks stage (outbox → deliveries) calls into it; until that stage is
// wired into the daemon, only the tests do.
#[allow(dead_code)]
pub(crate) mod deliver;
