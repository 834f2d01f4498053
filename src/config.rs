//! Configuration: defaults → TOML file → `INGESTD_*` environment, validated once
//! into [`Settings`]. (Stub: being written.)

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The smallest chunk api.video accepts for any chunk but the last.
pub const MIN_CHUNK_SIZE: u64 = 5 * 1024 * 1024;
/// The largest chunk the official clients allow (the server allows 200 MiB).
pub const MAX_CHUNK_SIZE: u64 = 128 * 1024 * 1024;
pub const DEFAULT_CHUNK_SIZE: u64 = 50 * 1024 * 1024;

/// A delegated upload token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct UploadToken(String);

impl UploadToken {
    pub fn new(token: impl Into<String>) -> Self {
        UploadToken(token.into())
    }
    /// The token itself, for the one place that builds the request URL.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UploadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UploadToken(<redacted>)")
    }
}

impl fmt::Display for UploadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the token came from, so errors and `check-config` can say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `api.token` (file or `INGESTD_API__TOKEN`)
    Inline,
    /// `api.token_file`
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/upload-token` (systemd `LoadCredential=`)
    Credentials(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file that was read, if any.
    pub source: Option<PathBuf>,
    pub api: ApiSettings,
    pub journal: JournalSettings,
    pub upload: UploadSettings,
    pub watches: Vec<WatchSettings>,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub base_url: reqwest::Url,
    /// `None` when no token is configured; commands that upload call
    /// [`Settings::require_token`].
    pub token: Option<(UploadToken, TokenSource)>,
    pub chunk_size: u64,
}

#[derive(Debug, Clone)]
pub struct JournalSettings {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub concurrency: usize,
    /// Bytes per second shared by all uploads; 0 = unlimited.
    pub bandwidth_limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    Auto,
    Events,
    Poll,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterUpload {
    Keep,
    Delete,
    Move(PathBuf),
}

#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub path: PathBuf,
    pub recursive: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub settle: Duration,
    pub mode: WatchMode,
    pub poll_interval: Duration,
    pub after_upload: AfterUpload,
    pub follow_symlinks: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    pub fn require_token(&self) -> Result<&UploadToken, ConfigError> {
        self.api
            .token
            .as_ref()
            .map(|(t, _)| t)
            .ok_or_else(|| ConfigError::Invalid("no upload token configured".into()))
    }
}

/// Loads the settings from `path` (or `$INGESTD_CONFIG`, or
/// `/etc/ingestd/config.toml`), then the environment.
pub fn load(_path: Option<&Path>) -> Result<Settings, ConfigError> {
    Err(ConfigError::Invalid(
        "config loading is not written yet".into(),
    ))
}

impl Settings {
    /// The effective configuration as TOML (stub).
    pub fn render(&self) -> String {
        String::new()
    }
}
