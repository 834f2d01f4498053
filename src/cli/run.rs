//! `ingestd upload FILE…` and `ingestd run --once`: the report of a
//! foreground batch, one line per file, and its exit status. The batch
//! itself runs in `daemon::foreground`.

use std::process::ExitCode;

use super::{exit_status, CommandError, EXIT_CONFIG};
use crate::daemon::{DaemonError, UploadResult};
use crate::display::show_path;
use crate::journal::FileState;

/// Prints the outcome of `upload` / `run --once`; exit 0 only if all are
/// done (or, in `run --once`, not ready yet: left for the next run).
pub fn finish_batch(
    results: Result<Vec<UploadResult>, DaemonError>,
) -> Result<ExitCode, CommandError> {
    let results = match results {
        Ok(r) => r,
        Err(DaemonError::Config(e)) => {
            eprintln!("ingestd: invalid configuration: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        Err(e) => return Err(e.into()),
    };
    let mut all_ok = true;
    let mut not_ready = 0;
    for r in &results {
        all_ok &= r.ok();
        let path = show_path(&r.path);
        if r.not_ready {
            not_ready += 1;
            println!(
                "not ready {path}  {}",
                r.note.as_deref().unwrap_or("still being written")
            );
            continue;
        }
        match (&r.row, &r.note) {
            (Some(row), _) if row.state == FileState::Done => println!(
                "done      {path}  videoId {}",
                row.video_id.as_deref().unwrap_or("?")
            ),
            (Some(row), _) => println!(
                "{:<9} {path}  {}",
                row.state.as_str(),
                row.last_error.as_deref().unwrap_or("")
            ),
            (None, note) => println!(
                "skipped   {path}  {}",
                note.as_deref().unwrap_or("not journaled")
            ),
        }
    }
    if not_ready > 0 {
        println!(
            "{not_ready} file{} not ready yet: left settling for the next run (so are files that arrived after the scan)",
            if not_ready == 1 { "" } else { "s" }
        );
    }
    Ok(exit_status(all_ok))
}
