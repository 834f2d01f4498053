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
//!   output or [`Settings::render`].
//!
//! [`load_from`] takes the environment as a parameter so that tests never touch
//! the process environment.

mod error;
mod render;
mod sources;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, ValueOrigin};
use sources::{display_key, ConfigFile, EnvLayer, EnvMap, Sources};
use values::{format_size, Count, Seconds, SecretText, Size};

/// The smallest chunk api.video accepts for any chunk but the last.
pub const MIN_CHUNK_SIZE: u64 = 5 * 1024 * 1024;
/// The largest chunk the official clients allow (the server allows 200 MiB).
pub const MAX_CHUNK_SIZE: u64 = 128 * 1024 * 1024;
pub const DEFAULT_CHUNK_SIZE: u64 = 50 * 1024 * 1024;

/// Where the config file is looked for when neither `--config` nor
/// `$INGESTD_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ingestd/config.toml";
/// api.video production.
pub const DEFAULT_BASE_URL: &str = "https://ws.api.video";
/// api.video sandbox (its own tokens, lower rate limits).
pub const SANDBOX_BASE_URL: &str = "https://sandbox.api.video";
/// The systemd credential name: `LoadCredential=upload-token:/path`.
pub const TOKEN_CREDENTIAL_NAME: &str = "upload-token";

pub const DEFAULT_CONCURRENCY: usize = 2;
pub const MAX_CONCURRENCY: usize = 32;
pub const DEFAULT_INCLUDE: [&str; 4] = ["*.mp4", "*.mov", "*.mxf", "*.mkv"];
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(10);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

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

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Inline => f.write_str("api.token"),
            TokenSource::File(path) => write!(f, "api.token_file {}", path.display()),
            TokenSource::Credentials(path) => {
                write!(f, "systemd credential {}", path.display())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file that was read, if any.
    pub source: Option<PathBuf>,
    pub api: ApiSettings,
    pub journal: JournalSettings,
    pub upload: UploadSettings,
    pub log: LogSettings,
    pub watches: Vec<WatchSettings>,
    pub metrics: MetricsSettings,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `journald` when stderr is the systemd journal (`$JOURNAL_STREAM`), else `text`.
    #[default]
    Auto,
    /// Human-readable lines with timestamps.
    Text,
    /// No timestamps, a syslog `<N>` priority prefix per line, so
    /// `journalctl -p warning` works.
    Journald,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Journald => "journald",
            LogFormat::Json => "json",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// http(s), no credentials, query or fragment; no trailing slash except
    /// the root path's.
    pub base_url: reqwest::Url,
    /// `None` when no token is configured; commands that upload call
    /// [`Settings::require_token`].
    pub token: Option<(UploadToken, TokenSource)>,
    /// [`MIN_CHUNK_SIZE`] ..= [`MAX_CHUNK_SIZE`].
    pub chunk_size: u64,
}

impl ApiSettings {
    /// `{base_url}/upload`, without the token (the caller adds `?token=`).
    pub fn upload_url(&self) -> reqwest::Url {
        let mut url = self.base_url.clone();
        let path = format!("{}/upload", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }
}

#[derive(Debug, Clone)]
pub struct JournalSettings {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Files uploading at the same time, 1 ..= [`MAX_CONCURRENCY`].
    pub concurrency: usize,
    /// Bytes per second shared by all uploads; 0 = unlimited.
    pub bandwidth_limit: u64,
    /// What to do with a file sent in one request whose outcome is unknown.
    pub in_doubt: InDoubt,
}

/// `upload.in_doubt`: a file of 5 MiB or less goes in one request; when that
/// request ends without a known outcome (its reply lost, or ingestd died
/// while it was on its way), api.video may already hold the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InDoubt {
    /// Send it again (as api.video's own clients do): never lost, perhaps a
    /// duplicate; the file's row says so.
    #[default]
    Resend,
    /// Mark it `failed`, saying why: never a duplicate; someone checks
    /// api.video and runs `ingestd retry ID` if it is not there.
    Fail,
}

impl InDoubt {
    pub fn as_str(self) -> &'static str {
        match self {
            InDoubt::Resend => "resend",
            InDoubt::Fail => "fail",
        }
    }
}

/// The optional HTTP endpoint for monitoring (`GET /metrics`, `GET /healthz`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where to listen; `None` (no `metrics.listen`, or `""`) = no endpoint.
    /// Port 0 picks a free port (logged at start).
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// inotify & co., except on network filesystems, which are polled.
    Auto,
    Events,
    Poll,
}

impl WatchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchMode::Auto => "auto",
            WatchMode::Events => "events",
            WatchMode::Poll => "poll",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterUpload {
    Keep,
    Delete,
    Move(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    /// Not checked for existence here (that is a runtime check); never empty,
    /// never equal to or nested in another watch's path.
    pub path: PathBuf,
    pub recursive: bool,
    /// Valid globset patterns; `include` is never empty.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// > 0.
    pub settle: Duration,
    pub mode: WatchMode,
    /// ≥ [`MIN_POLL_INTERVAL`].
    pub poll_interval: Duration,
    pub after_upload: AfterUpload,
    pub follow_symlinks: bool,
    /// Write `NAME.ingestd.json` (videoId, player URL, size, SHA-256, upload
    /// time) beside each uploaded file, with `keep` and `move`.
    pub sidecar: bool,
    /// How far apart two mtimes may be and still be the same file's (a
    /// restore through a filesystem that keeps coarser times).
    pub modify_window: ModifyWindow,
}

/// `[[watch]] modify_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModifyWindow {
    /// 2 s on FAT and SMB, whose mtimes are that coarse; elsewhere mtimes
    /// must be equal, or agree to the second when one of them has no
    /// fraction of a second (it went through such a filesystem).
    Auto,
    /// Mtimes at most this far apart are the same (`0s`: exactly equal).
    Exactly(Duration),
}

impl WatchSettings {
    /// A watch of `path` with every other key at its default, as a bare
    /// `[[watch]] path = "…"` in the config file gives.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        WatchSettings {
            path: path.into(),
            recursive: true,
            include: DEFAULT_INCLUDE.iter().map(|p| p.to_string()).collect(),
            exclude: Vec::new(),
            settle: DEFAULT_SETTLE,
            mode: WatchMode::Auto,
            poll_interval: DEFAULT_POLL_INTERVAL,
            after_upload: AfterUpload::Keep,
            follow_symlinks: false,
            sidecar: false,
            modify_window: ModifyWindow::Auto,
        }
    }
}

impl Settings {
    pub fn require_token(&self) -> Result<&UploadToken, ConfigError> {
        self.api
            .token
            .as_ref()
            .map(|(token, _)| token)
            .ok_or(ConfigError::MissingToken)
    }
}

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

// ---------------------------------------------------------------------------
// The raw shape of the file: every key optional, so that validation can tell
// a default from a value someone wrote (and say where they wrote it).

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    api: RawApi,
    journal: RawJournal,
    upload: RawUpload,
    log: RawLog,
    watch: Vec<RawWatch>,
    metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: Option<LogFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    base_url: Option<String>,
    token: Option<SecretText>,
    token_file: Option<PathBuf>,
    chunk_size: Option<Size>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawJournal {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpload {
    concurrency: Option<Count>,
    bandwidth_limit: Option<Size>,
    in_doubt: Option<InDoubt>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWatch {
    path: Option<PathBuf>,
    recursive: Option<bool>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    settle: Option<Seconds>,
    mode: Option<WatchMode>,
    poll_interval: Option<Seconds>,
    after_upload: Option<AfterUploadKind>,
    move_to: Option<PathBuf>,
    follow_symlinks: Option<bool>,
    sidecar: Option<bool>,
    modify_window: Option<values::Window>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AfterUploadKind {
    Keep,
    Delete,
    Move,
}

/// Turns a deserialization error into one that names the key, its origin
/// and, unless the key is the token, the value.
fn figment_error(sources: &Sources, error: figment::Error) -> ConfigError {
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
    let is_token = error.path.len() >= 2 && error.path[0] == "api" && error.path[1] == "token";
    use figment::error::Kind;
    let message = match &error.kind {
        Kind::UnknownField(_, expected) => {
            return ConfigError::UnknownKey {
                key,
                origin,
                expected: expected.iter().map(|k| k.to_string()).collect(),
            }
        }
        // Whatever figment says could quote the token.
        _ if is_token => "the token must be a single string (its value is not shown: it is secret)"
            .to_string(),
        Kind::UnknownVariant(found, expected) => {
            format!("{found:?} is not one of: {}", expected.join(", "))
        }
        Kind::InvalidType(figment::error::Actual::Map, _) if error.path == ["watch"] => {
            "found a single [watch] table; write each watch folder as a [[watch]] table (double brackets)"
                .to_string()
        }
        Kind::InvalidType(actual, expected) => format!("found {actual}, expected {expected}"),
        other => other.to_string(),
    };
    ConfigError::Invalid {
        key,
        origin,
        message,
    }
}

// ---------------------------------------------------------------------------
// Validation: raw values → Settings.

struct Validator<'a> {
    sources: &'a Sources,
    env: &'a EnvMap,
    /// False for commands that never upload: the token is not read.
    read_token: bool,
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|part| part.to_string()).collect()
}

impl Validator<'_> {
    fn invalid(&self, path: &[String], message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: display_key(path),
            origin: self.sources.origin(path),
            message: message.into(),
        }
    }

    fn settings(&self, raw: RawConfig) -> Result<Settings, ConfigError> {
        let RawConfig {
            api,
            journal,
            upload,
            log,
            watch,
            metrics,
        } = raw;
        let base_url = self.base_url(api.base_url.as_deref())?;
        let chunk_size = self.chunk_size(api.chunk_size)?;
        let journal = self.journal(journal)?;
        let upload = self.upload(upload)?;
        let watches = watch
            .into_iter()
            .enumerate()
            .map(|(index, raw)| self.watch(index, raw))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_overlaps(&watches)?;
        let metrics = self.metrics(metrics)?;
        let token = if self.read_token {
            self.token(api.token, api.token_file)?
        } else {
            None
        };
        Ok(Settings {
            source: self.sources.file.as_ref().map(|file| file.path.clone()),
            api: ApiSettings {
                base_url,
                token,
                chunk_size,
            },
            journal,
            upload,
            log: LogSettings {
                format: log.format.unwrap_or_default(),
            },
            watches,
            metrics,
        })
    }

    fn metrics(&self, raw: RawMetrics) -> Result<MetricsSettings, ConfigError> {
        // An empty value turns the endpoint off, so that
        // INGESTD_METRICS__LISTEN="" can override a file that sets it.
        let Some(text) = raw.listen.filter(|text| !text.trim().is_empty()) else {
            return Ok(MetricsSettings::default());
        };
        let listen = text.trim().parse::<SocketAddr>().map_err(|_| {
            self.invalid(
                &key(&["metrics", "listen"]),
                format!(
                    "{text:?} is not an IP address and port; write e.g. \"127.0.0.1:9187\" \
                     (this machine only), \"[::1]:9187\" or \"0.0.0.0:9187\" (every interface); \
                     host names are not accepted. Remove the key to turn the endpoint off"
                ),
            )
        })?;
        Ok(MetricsSettings {
            listen: Some(listen),
        })
    }

    fn base_url(&self, raw: Option<&str>) -> Result<reqwest::Url, ConfigError> {
        let path = key(&["api", "base_url"]);
        let text = raw.unwrap_or(DEFAULT_BASE_URL);
        let help = format!("use {DEFAULT_BASE_URL:?} or {SANDBOX_BASE_URL:?}");
        let mut url = reqwest::Url::parse(text.trim()).map_err(|error| {
            self.invalid(&path, format!("{text:?} is not a URL ({error}); {help}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.invalid(&path, format!("{text:?} is not an http(s) URL; {help}")));
        }
        if url.cannot_be_a_base() || url.host_str().is_none_or(str::is_empty) {
            return Err(self.invalid(&path, format!("{text:?} has no host; {help}")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // The URL is not echoed: it holds a credential.
            return Err(self.invalid(
                &path,
                "the URL contains a user name or password; remove it (the upload token is configured with api.token_file or api.token)",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.invalid(
                &path,
                format!("{text:?} has a query or fragment; give only scheme, host and path, e.g. {DEFAULT_BASE_URL:?}"),
            ));
        }
        let trimmed = url.path().trim_end_matches('/').to_string();
        url.set_path(&trimmed);
        Ok(url)
    }

    fn chunk_size(&self, raw: Option<Size>) -> Result<u64, ConfigError> {
        let Some(Size(bytes)) = raw else {
            return Ok(DEFAULT_CHUNK_SIZE);
        };
        if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&bytes) {
            Ok(bytes)
        } else {
            Err(self.invalid(
                &key(&["api", "chunk_size"]),
                format!(
                    "{} ({bytes} bytes) is out of range; it must be between {} and {} (api.video's limits)",
                    format_size(bytes),
                    format_size(MIN_CHUNK_SIZE),
                    format_size(MAX_CHUNK_SIZE),
                ),
            ))
        }
    }

    fn journal(&self, raw: RawJournal) -> Result<JournalSettings, ConfigError> {
        let path = match raw.path {
            Some(path) if path.as_os_str().is_empty() => {
                return Err(self.invalid(
                    &key(&["journal", "path"]),
                    "the path is empty; give the SQLite file's path or remove the key to use the default ($STATE_DIRECTORY/journal.db)",
                ))
            }
            Some(path) => path,
            None => journal_default_in(self.env.get("STATE_DIRECTORY").map(String::as_str)),
        };
        Ok(JournalSettings { path })
    }

    fn upload(&self, raw: RawUpload) -> Result<UploadSettings, ConfigError> {
        let concurrency = match raw.concurrency {
            None => DEFAULT_CONCURRENCY,
            Some(Count(n)) => match usize::try_from(n) {
                Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => n,
                _ => {
                    return Err(self.invalid(
                        &key(&["upload", "concurrency"]),
                        format!("{n} is out of range; it must be between 1 and {MAX_CONCURRENCY} files in flight"),
                    ))
                }
            },
        };
        let bandwidth_limit = raw.bandwidth_limit.map_or(0, |Size(bytes)| bytes);
        Ok(UploadSettings {
            concurrency,
            bandwidth_limit,
            in_doubt: raw.in_doubt.unwrap_or_default(),
        })
    }

    fn watch(&self, index: usize, raw: RawWatch) -> Result<WatchSettings, ConfigError> {
        let index_text = index.to_string();
        let at = |name: &str| key(&["watch", &index_text, name]);

        let path = match raw.path {
            Some(path) if !path.as_os_str().is_empty() => path,
            Some(_) => {
                return Err(self.invalid(&at("path"), "the path is empty; give the folder to watch"))
            }
            None => {
                return Err(self.invalid(
                    &key(&["watch", &index_text]),
                    "every [[watch]] needs a `path = \"/folder/to/watch\"`",
                ))
            }
        };
        let shown = path.display();

        let include = raw
            .include
            .unwrap_or_else(|| DEFAULT_INCLUDE.iter().map(|p| p.to_string()).collect());
        if include.is_empty() {
            return Err(self.invalid(
                &at("include"),
                format!("the list is empty, so nothing in {shown} would ever be uploaded; use [\"*\"] to take every file"),
            ));
        }
        let exclude = raw.exclude.unwrap_or_default();
        for (name, patterns) in [("include", &include), ("exclude", &exclude)] {
            for pattern in patterns {
                let problem = if pattern.is_empty() {
                    Some("it is empty".to_string())
                } else {
                    globset::Glob::new(pattern)
                        .err()
                        .map(|error| error.kind().to_string())
                };
                if let Some(problem) = problem {
                    return Err(self.invalid(
                        &at(name),
                        format!("pattern {pattern:?} (watch folder {shown}) is not a valid glob: {problem}; write patterns like \"*.mp4\" or \"**/*.mov\""),
                    ));
                }
            }
        }

        let settle = raw.settle.map_or(DEFAULT_SETTLE, |Seconds(d)| d);
        if settle.is_zero() {
            return Err(self.invalid(
                &at("settle"),
                format!("0s would upload files of {shown} while they are still being written; use at least \"1s\" (default \"10s\")"),
            ));
        }
        let poll_interval = raw
            .poll_interval
            .map_or(DEFAULT_POLL_INTERVAL, |Seconds(d)| d);
        if poll_interval < MIN_POLL_INTERVAL {
            return Err(self.invalid(
                &at("poll_interval"),
                format!(
                    "{} is too short; use at least \"1s\" (default \"30s\")",
                    values::format_duration(poll_interval)
                ),
            ));
        }

        let after_upload = match (raw.after_upload.unwrap_or(AfterUploadKind::Keep), raw.move_to) {
            (AfterUploadKind::Move, Some(dir)) if dir.as_os_str().is_empty() => {
                return Err(self.invalid(
                    &at("move_to"),
                    "the path is empty; give the folder uploaded files are moved to",
                ))
            }
            (AfterUploadKind::Move, Some(dir)) if lexical(&dir) == lexical(&path) => {
                return Err(self.invalid(
                    &at("move_to"),
                    format!("{} is the watch folder itself; give another folder", dir.display()),
                ))
            }
            (AfterUploadKind::Move, Some(dir)) => AfterUpload::Move(dir),
            (AfterUploadKind::Move, None) => {
                return Err(self.invalid(
                    &at("after_upload"),
                    format!("\"move\" needs `move_to = \"/folder\"` in the same [[watch]] ({shown}); add it, or use \"keep\" or \"delete\""),
                ))
            }
            (kind, Some(dir)) => {
                let kind = if kind == AfterUploadKind::Keep { "keep" } else { "delete" };
                return Err(self.invalid(
                    &at("move_to"),
                    format!("move_to = {:?} is only used with after_upload = \"move\" (this watch of {shown} has {kind:?}); remove move_to or set after_upload = \"move\"", dir.display().to_string()),
                ));
            }
            (AfterUploadKind::Keep, None) => AfterUpload::Keep,
            (AfterUploadKind::Delete, None) => AfterUpload::Delete,
        };

        Ok(WatchSettings {
            path,
            recursive: raw.recursive.unwrap_or(true),
            include,
            exclude,
            settle,
            mode: raw.mode.unwrap_or(WatchMode::Auto),
            poll_interval,
            after_upload,
            follow_symlinks: raw.follow_symlinks.unwrap_or(false),
            sidecar: raw.sidecar.unwrap_or(false),
            modify_window: match raw.modify_window {
                None | Some(values::Window(None)) => ModifyWindow::Auto,
                Some(values::Window(Some(d))) => ModifyWindow::Exactly(d),
            },
        })
    }

    /// Two watches on the same folder, or one inside the other, would see
    /// the same files twice.
    fn check_overlaps(&self, watches: &[WatchSettings]) -> Result<(), ConfigError> {
        // Where the folder really is, when it exists: two names of one
        // folder (a symlink) would upload every file twice.
        let paths: Vec<PathBuf> = watches
            .iter()
            .map(|w| std::fs::canonicalize(&w.path).unwrap_or_else(|_| lexical(&w.path)))
            .collect();
        for (later, later_path) in paths.iter().enumerate() {
            for (earlier, earlier_path) in paths.iter().enumerate().take(later) {
                let relation = if later_path == earlier_path {
                    "is the same folder as"
                } else if later_path.starts_with(earlier_path) {
                    "is inside"
                } else if earlier_path.starts_with(later_path) {
                    "contains"
                } else {
                    continue;
                };
                return Err(self.invalid(
                    &key(&["watch", &later.to_string(), "path"]),
                    format!(
                        "{} {relation} watch[{earlier}].path {}; watch folders must not overlap (files would be seen twice): remove one, or use one recursive watch",
                        watches[later].path.display(),
                        watches[earlier].path.display(),
                    ),
                ));
            }
        }
        Ok(())
    }

    fn token(
        &self,
        inline: Option<SecretText>,
        file: Option<PathBuf>,
    ) -> Result<Option<(UploadToken, TokenSource)>, ConfigError> {
        let token_key = key(&["api", "token"]);
        let file_key = key(&["api", "token_file"]);
        match (inline, file) {
            (Some(_), Some(_)) => Err(ConfigError::TokenConflict {
                token: self.sources.origin(&token_key),
                token_file: self.sources.origin(&file_key),
            }),
            (Some(SecretText(text)), None) => {
                let from = format!("in api.token {}", self.sources.origin(&token_key));
                // Not trimmed: stray spaces in an inline token are reported.
                check_token(&text, &from).map(|token| Some((token, TokenSource::Inline)))
            }
            (None, Some(path)) => {
                if path.as_os_str().is_empty() {
                    return Err(self.invalid(
                        &file_key,
                        "the path is empty; give the file holding the token, or remove the key",
                    ));
                }
                let from = format!("api.token_file {}", self.sources.origin(&file_key));
                let token = read_token(&path, from)?;
                Ok(Some((token, TokenSource::File(path))))
            }
            (None, None) => {
                let Some(dir) = self
                    .env
                    .get("CREDENTIALS_DIRECTORY")
                    .filter(|dir| !dir.is_empty())
                else {
                    return Ok(None);
                };
                let path = Path::new(dir).join(TOKEN_CREDENTIAL_NAME);
                // An absent credential only means "no token"; a present but
                // unreadable one is an error.
                if std::fs::symlink_metadata(&path).is_err() {
                    return Ok(None);
                }
                let token = read_token(
                    &path,
                    "systemd credential upload-token, from $CREDENTIALS_DIRECTORY".to_string(),
                )?;
                Ok(Some((token, TokenSource::Credentials(path))))
            }
        }
    }
}

/// Reads a token file once, trimmed of surrounding whitespace.
fn read_token(path: &Path, from: String) -> Result<UploadToken, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::TokenFile {
        path: path.to_path_buf(),
        from: from.clone(),
        error,
    })?;
    check_token(text.trim(), &format!("in {} ({from})", path.display()))
}

fn check_token(token: &str, from: &str) -> Result<UploadToken, ConfigError> {
    let problem = if token.is_empty() {
        "is empty"
    } else if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "contains whitespace or control characters (a stray line or a pasted label?)"
    } else {
        return Ok(UploadToken::new(token));
    };
    Err(ConfigError::BadToken {
        from: from.to_string(),
        problem: problem.to_string(),
    })
}

/// The path without `.` components or trailing slashes, for comparing
/// watch folders without touching the filesystem.
fn lexical(path: &Path) -> PathBuf {
    path.components()
        .filter(|component| !matches!(component, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests;
