//! `ingestd completions SHELL` and `ingestd manpage`: the shell completion
//! scripts and the manual page, both generated from the command line's own
//! definition (`main`'s `Cli`), so that they can never disagree with
//! `--help`. The Debian package ships their output (`.ci/deb`).
//!
//! The manual is one page, `ingestd(1)`: the overview clap_mangen renders
//! for the whole program, then one subsection per command (nested ones
//! too) with its synopsis and options, then what no argument definition
//! says (exit status, files, environment). One page rather than one per
//! command, because `man ingestd` is where an operator looks first.

use std::io::{self, Write};

use clap::Command;
use clap_complete::Shell;
use clap_mangen::Man;

/// Why a script or the page could not be printed. The I/O error is in
/// the message, not a `source()`: `main` prints the chain, once.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot write the {what} to standard output: {error}")]
    Write {
        what: &'static str,
        error: io::Error,
    },
    #[error("cannot render the manual page: {0}")]
    Render(io::Error),
}

/// Prints the completion script of `shell` for `cmd` (the whole command
/// line, `Cli::command()`).
pub fn completions(shell: Shell, mut cmd: Command) -> Result<(), GenerateError> {
    let name = cmd.get_name().to_owned();
    // Generated into memory first: clap_complete panics when its writer
    // fails, and a closed stdout must be an error, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    write_out(&script, "completion script")
}

/// Prints the manual page of `cmd` (roff, section 1).
pub fn manpage(cmd: Command) -> Result<(), GenerateError> {
    let page = render_manpage(cmd).map_err(GenerateError::Render)?;
    write_out(&page, "manual page")
}

fn write_out(bytes: &[u8], what: &'static str) -> Result<(), GenerateError> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|error| GenerateError::Write { what, error })
}

/// What the roff crate writes before every rendering: a string that makes
/// apostrophes print as apostrophes. Defined once, after `.TH` (which
/// must come first in a page, man-pages(7)); the copies are dropped.
const APOSTROPHE_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

fn render_manpage(cmd: Command) -> io::Result<Vec<u8>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd.clone()).manual("ingestd manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    let mut page = without_preamble(page);
    page.extend_from_slice(APOSTROPHE_PREAMBLE.as_bytes());
    for render in [
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ] {
        let mut section = Vec::new();
        render(&man, &mut section)?;
        page.extend(without_preamble(section));
    }
    page.extend_from_slice(b".SH COMMANDS\n");
    commands(&cmd, &mut page)?;
    page.extend_from_slice(STATIC_SECTIONS.as_bytes());
    let mut version = Vec::new();
    man.render_version_section(&mut version)?;
    page.extend(without_preamble(version));
    Ok(ascii_only(page))
}

/// The help texts' `…` and `→` as groff's named escapes (`\[u2026]`):
/// a page in plain ASCII formats the same with or without preconv(1).
fn ascii_only(page: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&page);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out.into_bytes()
}

/// One `.SS` subsection per visible subcommand of `parent`, depth first:
/// its description, synopsis and own options. `--config` and `--help`,
/// which every command takes, are the top OPTIONS section's.
fn commands(parent: &Command, page: &mut Vec<u8>) -> io::Result<()> {
    for sub in parent.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        writeln!(page, ".SS \"{name}\"")?;
        let own = sub.clone().mut_args(|arg| {
            if arg.is_global_set() || arg.get_id() == "help" {
                arg.hide(true)
            } else {
                arg
            }
        });
        let man = Man::new(own);
        for render in [
            Man::render_description_section,
            Man::render_synopsis_section,
            Man::render_options_section,
        ] {
            let mut section = Vec::new();
            render(&man, &mut section)?;
            page.extend(as_paragraphs(without_preamble(section)));
        }
        commands(sub, page)?;
    }
    Ok(())
}

fn without_preamble(rendered: Vec<u8>) -> Vec<u8> {
    match rendered.strip_prefix(APOSTROPHE_PREAMBLE.as_bytes()) {
        Some(rest) => rest.to_vec(),
        None => rendered,
    }
}

/// A section rendered for a command of its own, made part of the
/// command's subsection: its `.SH` headings become paragraph breaks.
fn as_paragraphs(section: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(section.len());
    for line in section.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".SH ") {
            out.extend_from_slice(b".PP\n");
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// What the argument definitions cannot say: the README's exit codes,
/// files and environment.
const STATIC_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
0
Success.
.TP
1
A file failed (\fBupload\fR, \fBrun \-\-once\fR), or a runtime error.
.TP
2
A command\-line usage error.
.TP
78
An invalid configuration (EX_CONFIG); \fBingestd check\-config\fR says which key and what to do.
.SH FILES
.TP
/etc/ingestd/config.toml
The configuration (the Debian package installs config.example.toml there: every key, its meaning and its default).
.TP
/etc/ingestd/upload\-token
The upload token alone, mode 0600, given to the service by systemd as a credential.
.TP
/var/lib/ingestd/journal.db
The journal under systemd: \fBjournal.path\fR if set, else \fB$STATE_DIRECTORY/journal.db\fR (this path for the units' \fBStateDirectory=ingestd\fR), else ./ingestd.db. With \fBDynamicUser=yes\fR, /var/lib/ingestd is a symbolic link to /var/lib/private/ingestd.
.SH ENVIRONMENT
.TP
INGESTD_CONFIG
The configuration file when \fB\-\-config\fR is not given.
.TP
INGESTD_\fISECTION\fR__\fIKEY\fR
Overrides one configuration key, for example \fBINGESTD_UPLOAD__CONCURRENCY=4\fR.
.TP
INGESTD_LOG
The log level (for example \fBdebug\fR).
.TP
INGESTD_API_KEY
The account's API key for \fBingestd token\fR (or \fB\-\-api\-key\-file\fR).
.TP
STATE_DIRECTORY, CREDENTIALS_DIRECTORY
Set by systemd: where the journal goes by default, and where the upload token is read from (\fBupload\-token\fR).
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.exec\fR(5)
"#;
