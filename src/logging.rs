//! Log output: text for people, journald-friendly lines under systemd, or
//! JSON for log shippers. The level comes from `$INGESTD_LOG` (or
//! `$RUST_LOG`). The HTTP stack's own `log` records are not bridged in, so
//! no request URL (which holds the token) can reach the output.

use std::fmt;
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Whether stderr is the systemd journal: `$JOURNAL_STREAM` names the
/// device and inode of the stream systemd connected (see systemd.exec(5)).
pub(crate) fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Resolves `auto` for this process.
pub(crate) fn effective(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        other => other,
    }
}

/// Lines as systemd's journal wants them from a service's stderr: a
/// `<N>` syslog priority prefix, no timestamp (the journal adds one).
struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the global subscriber; `default` is the level filter used when
/// neither `$INGESTD_LOG` nor `$RUST_LOG` is set.
pub fn init(format: LogFormat, default: &str) {
    let filter = std::env::var("INGESTD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        // A failed write is otherwise reported with `eprintln!`, which
        // panics when stderr itself is gone (journald restarted, a closed
        // pipe): the logging thread would die mid-task.
        .log_internal_errors(false);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match effective(format) {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Journald => builder.with_ansi(false).event_format(Journald).try_init(),
        _ => builder.try_init(),
    };
}
