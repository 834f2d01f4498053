//! `ingestd upload FILE…` and `ingestd run --once`: the report of a
//! foreground batch, one line per file, and its exit status. The batch
//! itself runs in `daemon::foreground`.

use std::process::ExitCode;

use super::{exit_status, CommandError, EXIT_CONFIG};
use crate::daemon::{DaemonError, UploadResult};
use crate::display::show_path;
use crate::journal::FileState;

/// Prints the outcome of `upload` / `run --once`; exit 0 only if all are done.
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
    for r in &results {
        all_ok &= r.ok();
        let path = show_path(&r.path);
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
    Ok(exit_status(all_ok))
}
