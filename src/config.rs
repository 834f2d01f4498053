//! Configuration: defaults → TOML file → `INGESTD_*` environment, validated once
//! into [`Settings`].
//!
//! - The file is the `--config` path, else `$INGESTD_CONFIG` (both must exist),
//!   else [`DEFAULT_CONFIG_PATH`] if it exists.
//! - Every key can be overridden by `INGESTD_SECTION__KEY` (double underscore
//!   between section and key): `INGESTD_API__CHUNK_SIZE=8MiB`. `[[watch]]`
//!   entries are a list and can only come from the file.
//! - The raw values are deserialized with `deny_unknown_fields`, then checked
//!   and converted into [`Settings`]; nothing downstream re-validates.
//! - The upload token is a secret: it never appears in an error, a `Debug`
//!   output or [`Settings::render`]. So is the shared journal's password,
//!   whether from `journal.password_file`, the systemd credential or
//!   `journal.url` itself (shown only as [`PgJournalSettings::redacted_url`]).
//!
//! [`load_from`] takes the environment as a parameter so that tests never touch
//! the process environment.
//!
//! # Layout: raw → validated, once
//!
//! `sources` (file and environment layers) → `raw` (serde structs, every key
//! optional) → `validate` (each check with its error; `pg_journal` for the
//! journal shared by several nodes, `hooks` for `[[hook]]`) → `settings` (the
//! checked types everything else uses); `values` holds the scalar types the
//! raw structs deserialize through, `timetable` the bandwidth timetable and
//! what it says holds at a given local time, `error` the errors, `render` the
//! effective configuration for `check-config`.
//!
//! This file holds only the entry points and the re-exports that make up the
//! public paths (`crate::config::X`); it must not grow checks or types of
//! its own.

mod error;
mod hooks;
mod live;
mod pg_journal;
mod raw;
mod render;
mod settings;
mod sources;
mod timetable;
mod validate;
mod values;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ValueOrigin};
pub use hooks::{HookEvent, HookSettings, HookTarget};
pub use live::Live;
pub use settings::QueueOrder;
pub use settings::{
    journal_root, AfterUpload, ApiSettings, Duplicates, InDoubt, JournalSettings, LogFormat,
    LogSettings, MetricsSettings, ModifyWindow, PgJournalSettings, Readiness, Secret, Settings,
    TokenSource, UploadSettings, UploadToken, WatchMode, WatchSettings, DEFAULT_CHUNK_SIZE,
    DEFAULT_CONFIG_PATH, DEFAULT_LEASE, LEASE_HEARTBEATS, MAX_CHUNK_SIZE, MAX_CONCURRENCY,
    MAX_LEASE, MAX_NODE_LEN, MIN_CHUNK_SIZE, MIN_HEARTBEAT, MIN_LEASE, MIN_POLL_INTERVAL,
};
pub use timetable::{BandwidthLimit, Entry, Holding, Rate, Timetable, TimetableError};

use raw::{figment_error, RawConfig};
use sources::{ConfigFile, EnvLayer, EnvMap, Sources};
use validate::Validator;

/// Loads the settings from `path` (or `$INGESTD_CONFIG`, or
/// `/etc/ingestd/config.toml`), then the environment.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    load_from(path, process_env())
}

/// The process environment. `std::env::vars()` panics on a variable that is
/// not UTF-8 anywhere in the environment; such variables are converted
/// lossily instead.
fn process_env() -> EnvMap {
    std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

/// [`load`] with the environment given explicitly: `INGESTD_CONFIG`,
/// `INGESTD_SECTION__KEY`, `STATE_DIRECTORY` and `CREDENTIALS_DIRECTORY` are
/// read from `env`, never from the process.
pub fn load_from(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    load_with_default(
        path,
        env.into_iter().collect(),
        Path::new(DEFAULT_CONFIG_PATH),
    )
}

/// `$STATE_DIRECTORY/journal.db` (the first directory if systemd gave
/// several), else `./ingestd.db`.
pub fn journal_default(env: impl IntoIterator<Item = (String, String)>) -> PathBuf {
    let state_directory = env
        .into_iter()
        .filter(|(name, _)| name == "STATE_DIRECTORY")
        .last()
        .map(|(_, value)| value);
    journal_default_in(state_directory.as_deref())
}

fn journal_default_in(state_directory: Option<&str>) -> PathBuf {
    match state_directory.and_then(|dirs| dirs.split(':').find(|dir| !dir.is_empty())) {
        Some(dir) => Path::new(dir).join("journal.db"),
        None => PathBuf::from("./ingestd.db"),
    }
}

fn load_with_default(
    path: Option<&Path>,
    env: EnvMap,
    default_path: &Path,
) -> Result<Settings, ConfigError> {
    load_impl(path, env, default_path, true)
}

/// [`load`] for commands that never upload (`status`, `retry`): the token
/// is not read, so a missing or unreadable token file does not stop them.
pub fn load_without_token(path: Option<&Path>) -> Result<Settings, ConfigError> {
    load_impl(path, process_env(), Path::new(DEFAULT_CONFIG_PATH), false)
}

fn load_impl(
    path: Option<&Path>,
    env: EnvMap,
    default_path: &Path,
    read_token: bool,
) -> Result<Settings, ConfigError> {
    let file = ConfigFile::locate(path, &env, default_path)?;
    let sources = Sources {
        file,
        env: EnvLayer::parse(&env)?,
        arguments: Vec::new(),
    };
    let raw: RawConfig = sources
        .figment()
        .extract()
        .map_err(|error| figment_error(&sources, error))?;
    Validator {
        sources: &sources,
        env: &env,
        read_token,
    }
    .settings(raw)
}

/// A shared journal named on the command line (`journal export --to URL
/// [--password-file FILE]`), checked as `journal.url` is and its password
/// found the same way: `password_file`, else the URL's own, else the
/// systemd credential `journal-password` in `$CREDENTIALS_DIRECTORY`.
/// `node` names the connection (it takes no lease).
pub fn pg_journal_from_args(
    url: &str,
    password_file: Option<&Path>,
    node: &str,
) -> Result<PgJournalSettings, ConfigError> {
    let env = process_env();
    let key = |name: &str| vec!["journal".to_string(), name.to_string()];
    let sources = Sources {
        file: None,
        env: EnvLayer::parse(&EnvMap::new())?,
        arguments: vec![
            (key("url"), "--to".to_string()),
            (key("password_file"), "--password-file".to_string()),
        ],
    };
    let raw = raw::RawJournal {
        url: Some(values::SecretText(url.to_string())),
        password_file: password_file.map(Path::to_path_buf),
        node: Some(node.to_string()),
        ..raw::RawJournal::default()
    };
    let validator = Validator {
        sources: &sources,
        env: &env,
        read_token: false,
    };
    match validator.pg_journal(raw)? {
        Some(settings) => Ok(settings),
        // `url` is set: validation gives settings or says what is wrong.
        None => Err(ConfigError::Invalid {
            key: "journal.url".to_string(),
            origin: ValueOrigin::Argument {
                flag: "--to".to_string(),
            },
            message: "no URL given".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests;
