//! The configuration as read: serde structs in which every key is optional,
//! so that validation can tell a default from a value someone wrote (and say
//! where they wrote it), and the error when the layers cannot be read into
//! them.
//!
//! Nothing here checks a value beyond its type or applies a default; that is
//! `validate`'s job.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{ConfigError, ValueOrigin};
use super::hooks::RawHook;
use super::settings::{Duplicates, InDoubt, LogFormat, QueueOrder, Readiness, WatchMode};
use super::sources::{display_key, Sources};
use super::values::{BandwidthText, Count, Seconds, SecretText, Size, Window};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub api: RawApi,
    pub journal: RawJournal,
    pub upload: RawUpload,
    pub log: RawLog,
    pub watch: Vec<RawWatch>,
    pub metrics: RawMetrics,
    pub hook: Vec<RawHook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    pub format: Option<LogFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawApi {
    pub base_url: Option<String>,
    pub token: Option<SecretText>,
    pub token_file: Option<PathBuf>,
    pub chunk_size: Option<Size>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawJournal {
    pub path: Option<PathBuf>,
    /// Secret-typed: it may hold a password, and no type error may quote it.
    pub url: Option<SecretText>,
    pub password_file: Option<PathBuf>,
    pub node: Option<String>,
    pub lease: Option<Seconds>,
    pub heartbeat: Option<Seconds>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawUpload {
    pub concurrency: Option<Count>,
    pub bandwidth_limit: Option<BandwidthText>,
    pub in_doubt: Option<InDoubt>,
    pub sha256: Option<bool>,
    pub playable_timeout: Option<Seconds>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawWatch {
    pub path: Option<PathBuf>,
    pub recursive: Option<bool>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub settle: Option<Seconds>,
    pub mode: Option<WatchMode>,
    pub poll_interval: Option<Seconds>,
    pub after_upload: Option<AfterUploadKind>,
    pub move_to: Option<PathBuf>,
    pub follow_symlinks: Option<bool>,
    pub sidecar: Option<bool>,
    pub modify_window: Option<Window>,
    pub readiness: Option<Readiness>,
    pub incomplete_timeout: Option<Seconds>,
    pub duplicates: Option<Duplicates>,
    pub order: Option<QueueOrder>,
    pub priority: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AfterUploadKind {
    Keep,
    Delete,
    Move,
}

/// Turns a deserialization error into one that names the key, its origin
/// and, unless the key is the token or the journal URL, the value.
pub(crate) fn figment_error(sources: &Sources, error: figment::Error) -> ConfigError {
    // figment chains errors; the first is the one to fix first.
    let Some(error) = error.into_iter().next() else {
        return ConfigError::Invalid {
            key: String::new(),
            origin: ValueOrigin::Default,
            message: "the configuration could not be read".into(),
        };
    };
    let origin = sources.error_origin(&error);
    let key = display_key(&error.path);
    let secret = match error.path.get(..2) {
        Some([section, name]) if section == "api" && name == "token" => {
            Some("the token must be a single string (its value is not shown: it is secret)")
        }
        Some([section, name]) if section == "journal" && name == "url" => Some(
            "the URL must be a single string, like \"postgresql://ingestd@db.example/ingestd\" \
             (its value is not shown: it may hold a password)",
        ),
        _ => None,
    };
    use figment::error::Kind;
    let message = match (&error.kind, secret) {
        (Kind::UnknownField(_, expected), _) => {
            return ConfigError::UnknownKey {
                key,
                origin,
                expected: expected.iter().map(|k| k.to_string()).collect(),
            }
        }
        // Whatever figment says could quote the token or the password.
        (_, Some(secret)) => secret.to_string(),
        (Kind::UnknownVariant(found, expected), None) => {
            format!("{found:?} is not one of: {}", expected.join(", "))
        }
        (Kind::InvalidType(figment::error::Actual::Map, _), None) if error.path == ["watch"] => {
            "found a single [watch] table; write each watch folder as a [[watch]] table (double brackets)"
                .to_string()
        }
        (Kind::InvalidType(actual, expected), None) => format!("found {actual}, expected {expected}"),
        (other, None) => other.to_string(),
    };
    ConfigError::Invalid {
        key,
        origin,
        message,
    }
}
