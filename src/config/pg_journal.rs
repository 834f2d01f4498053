//! Validation of the journal shared by several nodes: `[journal] url` and
//! the keys that only apply with it (`password_file`, `node`, `lease`,
//! `heartbeat`). The password is read here (file, URL or systemd
//! credential) and checked once; neither it nor the URL's own password
//! ever appears in an error.
//!
//! Like `validate`, whose [`Validator`] this extends, nothing here parses
//! the file or the environment, and nothing downstream checks again.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::error::ConfigError;
use super::raw::RawJournal;
use super::settings::{
    redact_url, PgJournalSettings, Secret, DEFAULT_LEASE, LEASE_HEARTBEATS, MAX_LEASE,
    MAX_NODE_LEN, MIN_HEARTBEAT, MIN_LEASE, PASSWORD_CREDENTIAL_NAME,
};
use super::validate::{key, Validator};
use super::values::{format_duration, Seconds, SecretText};

const URL_EXAMPLE: &str = "\"postgresql://ingestd@db.studio.lan/ingestd\"";

/// The keys that mean nothing without `journal.url`.
const URL_ONLY_KEYS: [&str; 4] = ["password_file", "node", "lease", "heartbeat"];

impl Validator<'_> {
    /// `Some` when `journal.url` is set. `raw.path` has already been taken
    /// (and found not to be set together with the URL).
    pub(super) fn pg_journal(
        &self,
        raw: RawJournal,
    ) -> Result<Option<PgJournalSettings>, ConfigError> {
        let Some(SecretText(url)) = raw.url else {
            let set = [
                raw.password_file.is_some(),
                raw.node.is_some(),
                raw.lease.is_some(),
                raw.heartbeat.is_some(),
            ];
            return match URL_ONLY_KEYS.iter().zip(set).find(|(_, set)| *set) {
                Some((name, _)) => Err(self.invalid(
                    &key(&["journal", name]),
                    format!(
                        "it only applies to a journal shared by several nodes (journal.url), \
                         and no journal.url is set; set journal.url, or remove journal.{name} \
                         (the SQLite journal at journal.path has no {name})"
                    ),
                )),
                None => Ok(None),
            };
        };
        let url = url.trim().to_string();
        let config = self.pg_url(&url)?;
        let (password, password_source) = self.pg_password(&config, raw.password_file)?;
        let node = self.node(raw.node)?;
        let (lease, heartbeat) = self.lease(raw.lease, raw.heartbeat)?;
        Ok(Some(PgJournalSettings {
            url,
            password,
            password_source,
            node,
            lease,
            heartbeat,
        }))
    }

    /// A `postgresql://` or `postgres://` URL that `postgres::Config`
    /// accepts and that names a host. Errors show it redacted.
    fn pg_url(&self, url: &str) -> Result<postgres::Config, ConfigError> {
        let path = key(&["journal", "url"]);
        let help = format!(
            "write postgresql://USER@HOST/DATABASE, e.g. {URL_EXAMPLE}, and put the password \
             in journal.password_file"
        );
        if url.is_empty() {
            return Err(self.invalid(
                &path,
                format!("the URL is empty; {help}, or remove the key for the SQLite journal at journal.path"),
            ));
        }
        let shown = redact_url(url);
        if !url.starts_with("postgresql://") && !url.starts_with("postgres://") {
            return Err(self.invalid(
                &path,
                format!("{shown:?} is not a PostgreSQL URL (it must start with postgresql:// or postgres://); {help}"),
            ));
        }
        if url.matches('@').count() > 1 {
            // The first `@` ends the user part: the rest would be taken
            // for the host.
            return Err(self.invalid(
                &path,
                format!("{shown:?} holds more than one '@'; write an '@' of the user name or password as %40, or better, {help}"),
            ));
        }
        let config = postgres::Config::from_str(url).map_err(|error| {
            // The parser's messages name options, never values.
            let detail = std::error::Error::source(&error)
                .map(|source| format!("{error}: {source}"))
                .unwrap_or_else(|| error.to_string());
            self.invalid(
                &path,
                format!("{shown:?} is not a valid PostgreSQL connection URL ({detail}); {help}"),
            )
        })?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(self.invalid(&path, format!("{shown:?} names no host; {help}")));
        }
        Ok(config)
    }

    /// The password and where it came from: `journal.password_file`, else
    /// the URL's, else the systemd credential `journal-password` if it
    /// exists, else none.
    fn pg_password(
        &self,
        config: &postgres::Config,
        file: Option<PathBuf>,
    ) -> Result<(Option<Secret>, String), ConfigError> {
        let url_key = key(&["journal", "url"]);
        let file_key = key(&["journal", "password_file"]);
        let in_url = config.get_password();
        match (file, in_url) {
            (Some(_), Some(_)) => Err(self.invalid(
                &file_key,
                format!(
                    "journal.url {} holds a password too; keep only one of them: remove the \
                     password from the URL (other tools print URLs), or remove journal.password_file",
                    self.sources.origin(&url_key)
                ),
            )),
            (Some(path), None) => {
                if path.as_os_str().is_empty() {
                    return Err(self.invalid(
                        &file_key,
                        "the path is empty; give the file holding the PostgreSQL password, or remove the key",
                    ));
                }
                let from = format!("journal.password_file {}", self.sources.origin(&file_key));
                let password = read_password(&path, from)?;
                Ok((Some(password), format!("from {}", path.display())))
            }
            (None, Some(bytes)) => {
                let from = format!("in journal.url {}", self.sources.origin(&url_key));
                let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::BadPassword {
                    from: from.clone(),
                    problem: "is not UTF-8 once its %-escapes are decoded".to_string(),
                })?;
                check_password(text, &from)
                    .map(|password| (Some(password), "in the URL".to_string()))
            }
            (None, None) => {
                let Some(dir) = self
                    .env
                    .get("CREDENTIALS_DIRECTORY")
                    .filter(|dir| !dir.is_empty())
                else {
                    return Ok((None, "none".to_string()));
                };
                let path = Path::new(dir).join(PASSWORD_CREDENTIAL_NAME);
                // An absent credential only means "no password"; a present
                // but unreadable one is an error.
                if std::fs::symlink_metadata(&path).is_err() {
                    return Ok((None, "none".to_string()));
                }
                let from = format!(
                    "systemd credential {PASSWORD_CREDENTIAL_NAME}, from $CREDENTIALS_DIRECTORY"
                );
                let password = read_password(&path, from.clone())?;
                Ok((Some(password), from))
            }
        }
    }

    /// `journal.node`, else the host name; 1 ..= 63 of `[A-Za-z0-9._-]`.
    fn node(&self, raw: Option<String>) -> Result<String, ConfigError> {
        let path = key(&["journal", "node"]);
        let rule = format!(
            "a node name is 1 to {MAX_NODE_LEN} letters, digits, '.', '_' or '-', and each node \
             sharing the journal needs its own, e.g. \"capture-01\""
        );
        let (name, explicit) = match raw {
            Some(name) => (name, true),
            None => match host_name() {
                Some(name) => (name, false),
                None => {
                    return Err(self.invalid(
                        &path,
                        format!("the host name, the default, cannot be read as text; set journal.node (or INGESTD_JOURNAL__NODE): {rule}"),
                    ))
                }
            },
        };
        if valid_node(&name) {
            return Ok(name);
        }
        let message = if explicit {
            format!("{name:?} is not a node name: {rule}")
        } else {
            format!(
                "the host name {name:?}, the default, is not a node name; set journal.node \
                 (or INGESTD_JOURNAL__NODE): {rule}"
            )
        };
        Err(self.invalid(&path, message))
    }

    /// `journal.lease` in [`MIN_LEASE`] ..= [`MAX_LEASE`]; `journal.heartbeat`
    /// a third of it by default (to the millisecond), else at least [`MIN_HEARTBEAT`] and at most
    /// a third of the lease.
    fn lease(
        &self,
        lease: Option<Seconds>,
        heartbeat: Option<Seconds>,
    ) -> Result<(Duration, Duration), ConfigError> {
        let lease_key = key(&["journal", "lease"]);
        let heartbeat_key = key(&["journal", "heartbeat"]);
        let lease = lease.map_or(DEFAULT_LEASE, |Seconds(d)| d);
        if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
            return Err(self.invalid(
                &lease_key,
                format!(
                    "{} is out of range; it must be between {} and {} (default {:?}): how long a \
                     node may go silent before the other nodes take its files over",
                    format_duration(lease),
                    format_duration(MIN_LEASE),
                    format_duration(MAX_LEASE),
                    format_duration(DEFAULT_LEASE),
                ),
            ));
        }
        let Some(Seconds(heartbeat)) = heartbeat else {
            return Ok((lease, default_heartbeat(lease)));
        };
        if heartbeat < MIN_HEARTBEAT {
            return Err(self.invalid(
                &heartbeat_key,
                format!(
                    "{} is too short; use at least {:?}, or remove the key (default: a third of journal.lease)",
                    format_duration(heartbeat),
                    format_duration(MIN_HEARTBEAT),
                ),
            ));
        }
        let needed = heartbeat.checked_mul(LEASE_HEARTBEATS);
        if needed.is_none_or(|needed| lease < needed) {
            let raise = needed.map_or(String::new(), |needed| {
                format!(
                    ", or raise journal.lease to at least {:?}",
                    format_duration(needed)
                )
            });
            return Err(self.invalid(
                &heartbeat_key,
                format!(
                    "journal.lease ({} {}) must be at least {LEASE_HEARTBEATS} × journal.heartbeat \
                     ({} {}): a node renews its leases every heartbeat, and a lease must survive \
                     two missed renewals; lower journal.heartbeat to at most {:?} (or remove it: \
                     the default is a third of the lease){raise}",
                    format_duration(lease),
                    self.sources.origin(&lease_key),
                    format_duration(heartbeat),
                    self.sources.origin(&heartbeat_key),
                    format_duration(default_heartbeat(lease)),
                ),
            ));
        }
        Ok((lease, heartbeat))
    }
}

/// A third of the lease, to the millisecond below (so that `10s` gives
/// `3s 333ms`, not nanoseconds), which keeps three of them within it.
fn default_heartbeat(lease: Duration) -> Duration {
    let millis = lease.as_millis() / u128::from(LEASE_HEARTBEATS);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// Reads a password file once; one trailing newline (`\n` or `\r\n`) is
/// not part of the password.
fn read_password(path: &Path, from: String) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::PasswordFile {
        path: path.to_path_buf(),
        from: from.clone(),
        error,
    })?;
    let text = text.strip_suffix('\n').map_or(text.as_str(), |line| {
        line.strip_suffix('\r').unwrap_or(line)
    });
    check_password(text, &format!("in {} ({from})", path.display()))
}

pub(crate) fn check_password(password: &str, from: &str) -> Result<Secret, ConfigError> {
    let problem = if password.is_empty() {
        "is empty; write the PostgreSQL password alone (one trailing newline is ignored)"
    } else if password.contains(['\n', '\r']) {
        "spans more than one line; write the password alone (one trailing newline is ignored)"
    } else if password.contains('\0') {
        "contains a NUL character, which PostgreSQL cannot take"
    } else {
        return Ok(Secret::new(password));
    };
    Err(ConfigError::BadPassword {
        from: from.to_string(),
        problem: problem.to_string(),
    })
}

pub(crate) fn valid_node(name: &str) -> bool {
    (1..=MAX_NODE_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The host name (`uname -n`), `None` if it is not UTF-8.
fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    uname.nodename().to_str().ok().map(str::to_string)
}
