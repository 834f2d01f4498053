//! `ingestd journal export --to URL [--from PATH] [--password-file FILE]`:
//! a single-node SQLite journal copied into an empty shared (PostgreSQL)
//! journal, so a site that grows to several nodes keeps its history and
//! sends nothing again. The copy itself is `Journal::export_into`; this
//! file finds the two journals, refuses a source a daemon holds, and says
//! what was copied. The password is never printed (only the redacted URL).

use std::path::PathBuf;
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::config::{self, PgJournalSettings, Settings};
use crate::journal::{lock_journal, ExportReport, Journal, JournalError, LockError, PgTarget};

/// `ingestd journal …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum JournalCommand {
    /// Copy this machine's SQLite journal into an empty PostgreSQL journal
    /// (stop the daemon first), to move to a journal shared by several nodes
    Export(ExportArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The empty shared journal, postgresql://USER@HOST/DATABASE [default: the configured journal.url]
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// The SQLite journal to copy [default: the configured journal.path]
    #[arg(long, value_name = "PATH")]
    pub from: Option<PathBuf>,
    /// The file holding the PostgreSQL password [default: the one in the URL,
    /// else $CREDENTIALS_DIRECTORY/journal-password]
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// The name the export's connection gives the server (it takes no lease).
const EXPORT_NODE: &str = "journal-export";

/// Runs `ingestd journal …`: 0 when exported, 1 when refused or failed,
/// [`EXIT_CONFIG`] for bad arguments. Blocks (call it off the runtime).
pub fn run(settings: &Settings, command: JournalCommand) -> ExitCode {
    match command {
        JournalCommand::Export(args) => export(settings, &args),
    }
}

fn export(settings: &Settings, args: &ExportArgs) -> ExitCode {
    let target = match target(settings, args) {
        Ok(target) => target,
        Err(message) => {
            eprintln!("ingestd: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let shown = target.redacted_url();
    let from = args.from.as_ref().unwrap_or(&settings.journal.path);
    match copy(from, &target) {
        Ok(report) => {
            crate::print_out(format_args!("{}", summary(&report, &shown)));
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("ingestd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The shared journal to export into: `--to` (with `--password-file`),
/// else the configured `[journal] url`. An error is a bad argument.
fn target(settings: &Settings, args: &ExportArgs) -> Result<PgJournalSettings, String> {
    let configured = settings.journal.postgres.as_ref();
    if args.to.is_none() && args.password_file.is_none() {
        if let Some(p) = configured {
            return Ok(p.clone());
        }
    }
    let Some(url) = args.to.as_deref().or(configured.map(|p| p.url.as_str())) else {
        return Err(
            "give the shared journal to export into: --to postgresql://USER@HOST/DATABASE \
             (or set [journal] url in the configuration)"
                .to_string(),
        );
    };
    config::pg_journal_from_args(url, args.password_file.as_deref(), EXPORT_NODE)
        .map_err(|e| format!("invalid arguments: {e}"))
}

/// Copies the journal at `from` into `target`, holding its lock.
fn copy(from: &std::path::Path, target: &PgJournalSettings) -> Result<ExportReport, String> {
    if !from.exists() {
        return Err(JournalError::Missing {
            path: from.to_path_buf(),
        }
        .to_string());
    }
    // Held until the copy is committed: no daemon starts on it meanwhile.
    let _lock = lock_journal(from).map_err(|e| match e {
        LockError::Busy { journal, lock } => format!(
            "refusing: the journal {} is in use by a running ingestd (it holds {}); stop the \
             daemon first, so that nothing changes while it is copied, then export again",
            journal.display(),
            lock.display()
        ),
        e => e.to_string(),
    })?;
    let source = Journal::open_read_only(from).map_err(|e| e.to_string())?;
    let mut shared = Journal::open_postgres(&PgTarget::from(target)).map_err(|e| e.to_string())?;
    source.export_into(&mut shared).map_err(|e| e.to_string())
}

/// What was exported and what to do next.
fn summary(r: &ExportReport, shown: &str) -> String {
    let other = if r.other > 0 {
        format!(", {} settling or gone", r.other)
    } else {
        String::new()
    };
    let mut out = format!(
        "exported {} files ({} done, {} failed, {} queued/retrying, {} half-uploaded{other}), \
         {} orphans, {} roots into {shown}\n",
        r.files, r.done, r.failed, r.waiting, r.half_uploaded, r.orphans, r.roots
    );
    if r.interrupted > 0 {
        out.push_str(&format!(
            "{} uploads the daemon left under way were queued again with their progress \
             (they resume on their videoId)",
            r.interrupted
        ));
        if r.in_doubt > 0 {
            out.push_str(&format!(
                "; {} of them may have created a video whose reply never came: counted as \
                 sent in doubt (see `ingestd status --orphans`)",
                r.in_doubt
            ));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "start the nodes with [journal] url = \"{shown}\" (and remove journal.path), each with \
         its own journal.node; do not start the single-node daemon on the old journal again\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_every_kind_and_says_what_next() {
        let r = ExportReport {
            files: 7,
            done: 3,
            failed: 1,
            waiting: 1,
            half_uploaded: 1,
            other: 1,
            interrupted: 1,
            in_doubt: 0,
            orphans: 2,
            roots: 1,
        };
        let s = summary(&r, "postgresql://ingestd@db/ingestd");
        assert!(
            s.starts_with(
                "exported 7 files (3 done, 1 failed, 1 queued/retrying, 1 half-uploaded, \
                 1 settling or gone), 2 orphans, 1 roots into postgresql://ingestd@db/ingestd\n"
            ),
            "{s}"
        );
        assert!(s.contains("1 uploads the daemon left under way"), "{s}");
        assert!(!s.contains("in doubt"), "{s}");
        assert!(s.contains("[journal] url = \"postgresql://ingestd@db/ingestd\""));
    }
}
