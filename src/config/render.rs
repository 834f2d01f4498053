//! The effective configuration as TOML, for `ingestd check-config`. The
//! output loads back into the same settings; the token is never in it, nor
//! the shared journal's password (a password in `journal.url` shows as
//! `***`, so that URL alone does not load back the same).

use std::fmt::Write as _;
use std::path::Path;

use super::hooks::{shown_url, HookSettings, HookTarget};
use super::settings::{
    AfterUpload, ModifyWindow, PgJournalSettings, Settings, TokenSource, PASSWORD_CREDENTIAL_NAME,
    TOKEN_CREDENTIAL_NAME,
};
use super::timetable::{BandwidthLimit, Rate};
use super::values::{format_duration, format_size};

impl Settings {
    /// The effective configuration as TOML, sizes and durations in human
    /// units, the token replaced by `<redacted>` and where it came from.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // `write!` into a String cannot fail; the results are ignored.
        let _ = writeln!(out, "# ingestd effective configuration");
        match &self.source {
            Some(path) => {
                let _ = writeln!(
                    out,
                    "# read from {} and INGESTD_* environment variables",
                    path.display()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "# no config file; built-in defaults and INGESTD_* environment variables"
                );
            }
        }

        let api = &self.api;
        let _ = writeln!(out, "\n[api]");
        let _ = writeln!(out, "base_url = {}", quote(api.base_url.as_str()));
        match &api.token {
            None => {
                let _ = writeln!(
                    out,
                    "# token: none configured (uploads need one: api.token_file, api.token or LoadCredential={TOKEN_CREDENTIAL_NAME}:FILE)"
                );
            }
            Some((_, TokenSource::Inline)) => {
                let _ = writeln!(
                    out,
                    "# token: <redacted>, from api.token (config file or INGESTD_API__TOKEN)"
                );
            }
            Some((_, TokenSource::File(path))) => {
                let _ = writeln!(out, "token_file = {}", quote_path(path));
                let _ = writeln!(out, "# token: <redacted>, from {}", path.display());
            }
            Some((_, TokenSource::Credentials(path))) => {
                let _ = writeln!(
                    out,
                    "# token: <redacted>, from systemd credential {TOKEN_CREDENTIAL_NAME} ({})",
                    path.display()
                );
            }
        }
        let _ = writeln!(out, "chunk_size = {}", quote(&format_size(api.chunk_size)));

        let _ = writeln!(out, "\n[journal]");
        match &self.journal.postgres {
            None => {
                let _ = writeln!(out, "path = {}", quote_path(&self.journal.path));
            }
            Some(pg) => render_pg_journal(&mut out, pg),
        }

        let upload = &self.upload;
        let _ = writeln!(out, "\n[upload]");
        let _ = writeln!(out, "concurrency = {}", upload.concurrency);
        let (limit, comment) = match &upload.bandwidth_limit {
            BandwidthLimit::Constant(Rate::Unlimited) => ("0".to_string(), "unlimited".to_string()),
            BandwidthLimit::Constant(Rate::Limit(bytes)) => {
                (format_size(*bytes), "bytes per second".to_string())
            }
            BandwidthLimit::Constant(Rate::Pause) => (
                "pause".to_string(),
                "no new chunk starts until this changes".to_string(),
            ),
            BandwidthLimit::Timetable(table) => (
                table.to_string(),
                format!("timetable, in local time ({})", local_zone()),
            ),
        };
        let _ = writeln!(out, "bandwidth_limit = {}  # {comment}", quote(&limit));
        let _ = writeln!(out, "in_doubt = {}", quote(upload.in_doubt.as_str()));
        let _ = writeln!(out, "sha256 = {}", upload.sha256);
        let _ = writeln!(
            out,
            "playable_timeout = {}{}",
            quote(&format_duration(upload.playable_timeout)),
            if upload.playable_timeout.is_zero() {
                "  # not watched"
            } else {
                ""
            }
        );

        let _ = writeln!(out, "\n[log]");
        let _ = writeln!(out, "format = {}", quote(self.log.format.as_str()));

        if self.watches.is_empty() {
            let _ = writeln!(out, "\n# no [[watch]] folders configured");
        }
        for watch in &self.watches {
            let _ = writeln!(out, "\n[[watch]]");
            let _ = writeln!(out, "path = {}", quote_path(&watch.path));
            let _ = writeln!(out, "recursive = {}", watch.recursive);
            let _ = writeln!(out, "include = {}", list(&watch.include));
            let _ = writeln!(out, "exclude = {}", list(&watch.exclude));
            let _ = writeln!(out, "settle = {}", quote(&format_duration(watch.settle)));
            let _ = writeln!(out, "mode = {}", quote(watch.mode.as_str()));
            let _ = writeln!(
                out,
                "poll_interval = {}",
                quote(&format_duration(watch.poll_interval))
            );
            match &watch.after_upload {
                AfterUpload::Keep => {
                    let _ = writeln!(out, "after_upload = \"keep\"");
                }
                AfterUpload::Delete => {
                    let _ = writeln!(out, "after_upload = \"delete\"");
                }
                AfterUpload::Move(dir) => {
                    let _ = writeln!(out, "after_upload = \"move\"");
                    let _ = writeln!(out, "move_to = {}", quote_path(dir));
                }
            }
            let _ = writeln!(out, "follow_symlinks = {}", watch.follow_symlinks);
            let _ = writeln!(out, "sidecar = {}", watch.sidecar);
            let window = match watch.modify_window {
                ModifyWindow::Auto => "auto".to_owned(),
                ModifyWindow::Exactly(d) => format_duration(d),
            };
            let _ = writeln!(out, "modify_window = {}", quote(&window));
            let _ = writeln!(out, "readiness = {}", quote(watch.readiness.as_str()));
            let _ = writeln!(
                out,
                "incomplete_timeout = {}",
                quote(&format_duration(watch.incomplete_timeout))
            );
            let _ = writeln!(out, "duplicates = {}", quote(watch.duplicates.as_str()));
            let _ = writeln!(out, "order = {}", quote(watch.order.as_str()));
            let _ = writeln!(out, "priority = {}", list(&watch.priority));
        }

        for hook in &self.hooks {
            render_hook(&mut out, hook);
        }

        let _ = writeln!(out, "\n[metrics]");
        match self.metrics.listen {
            Some(addr) => {
                let _ = writeln!(out, "listen = {}", quote(&addr.to_string()));
            }
            None => {
                let _ = writeln!(
                    out,
                    "# listen: not set, the /metrics and /healthz endpoint is off"
                );
            }
        }
        out
    }
}

/// The shared journal's keys: the URL redacted, the password replaced by
/// where it came from.
fn render_pg_journal(out: &mut String, pg: &PgJournalSettings) {
    let _ = writeln!(
        out,
        "# shared by several nodes (journal.path is not used); the URL's password, if any, shows as ***"
    );
    let _ = writeln!(out, "url = {}", quote(&pg.redacted_url()));
    // A file's source is "from PATH" (see `PgJournalSettings`): written as
    // password_file, so that the output loads back with the same password.
    match (&pg.password, pg.password_source.strip_prefix("from ")) {
        (None, _) => {
            let _ = writeln!(
                out,
                "# password: none (journal.password_file, LoadCredential={PASSWORD_CREDENTIAL_NAME}:FILE or the URL give one)"
            );
        }
        (Some(_), Some(path)) => {
            let _ = writeln!(out, "password_file = {}", quote(path));
            let _ = writeln!(out, "# password: <redacted>, {}", pg.password_source);
        }
        (Some(_), None) => {
            let _ = writeln!(out, "# password: <redacted>, {}", pg.password_source);
        }
    }
    let _ = writeln!(out, "node = {}", quote(&pg.node));
    let _ = writeln!(out, "lease = {}", quote(&format_duration(pg.lease)));
    let _ = writeln!(out, "heartbeat = {}", quote(&format_duration(pg.heartbeat)));
}

/// A `[[hook]]`: a webhook's URL without credentials or query (shown as
/// `?…`: it may hold a secret), its secret replaced by its file.
fn render_hook(out: &mut String, hook: &HookSettings) {
    let _ = writeln!(out, "\n[[hook]]");
    if hook.named {
        let _ = writeln!(out, "name = {}", quote(&hook.key));
    } else {
        let _ = writeln!(out, "# its deliveries are journaled as {:?}", hook.key);
    }
    let events: Vec<String> = hook.events.iter().map(|e| e.as_str().to_owned()).collect();
    let _ = writeln!(out, "events = {}", list(&events));
    match &hook.target {
        HookTarget::Command { argv } => {
            let _ = writeln!(out, "command = {}", list(argv));
        }
        HookTarget::Webhook {
            url, secret_file, ..
        } => {
            let shown = shown_url(url);
            if shown != url.as_str() {
                let _ = writeln!(
                    out,
                    "# url: shown without the rest of its path, its query or credentials (they may hold a secret)"
                );
            }
            let _ = writeln!(out, "url = {}", quote(&shown));
            if let Some(path) = secret_file {
                let _ = writeln!(out, "secret_file = {}", quote_path(path));
                let _ = writeln!(out, "# secret: <redacted>, from {}", path.display());
            }
        }
    }
    let _ = writeln!(out, "timeout = {}", quote(&format_duration(hook.timeout)));
}

/// The time zone a timetable is read in: `TZ`, else `/etc/localtime`.
fn local_zone() -> String {
    match jiff::tz::TimeZone::try_system() {
        Ok(zone) => zone
            .iana_name()
            .unwrap_or("from TZ or /etc/localtime")
            .to_string(),
        Err(_) => "none found (TZ unset, no /etc/localtime): UTC".to_string(),
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(", "))
}
