//! The validated configuration: [`Settings`] and the types of its sections,
//! the limits and defaults they are checked against, and the few methods
//! that answer questions about a checked value (the watch root, the token;
//! the upload URL is a wire fact, `apivideo`'s).
//!
//! Nothing here reads a file or the environment, and nothing re-checks a
//! value: a value of these types has already passed `validate`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::timetable::BandwidthLimit;

/// The smallest chunk api.video accepts for any chunk but the last.
pub const MIN_CHUNK_SIZE: u64 = 5 * 1024 * 1024;
/// The largest chunk the official clients allow (the server allows 200 MiB).
pub const MAX_CHUNK_SIZE: u64 = 128 * 1024 * 1024;
pub const DEFAULT_CHUNK_SIZE: u64 = 50 * 1024 * 1024;

/// Where the config file is looked for when neither `--config` nor
/// `$INGESTD_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ingestd/config.toml";
/// api.video production.
pub(crate) const DEFAULT_BASE_URL: &str = "https://ws.api.video";
/// api.video sandbox (its own tokens, lower rate limits).
pub(crate) const SANDBOX_BASE_URL: &str = "https://sandbox.api.video";
/// The systemd credential name: `LoadCredential=upload-token:/path`.
pub(crate) const TOKEN_CREDENTIAL_NAME: &str = "upload-token";
/// The systemd credential of the PostgreSQL journal's password:
/// `LoadCredential=journal-password:/path`.
pub(crate) const PASSWORD_CREDENTIAL_NAME: &str = "journal-password";

/// How long a node of a shared journal may go silent before another takes
/// its files over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub const MIN_LEASE: Duration = Duration::from_secs(3);
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// The shortest heartbeat (a node renewing its leases); the default is a
/// third of the lease.
pub const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
/// A lease must be at least this many heartbeats long: it survives two
/// missed renewals.
pub const LEASE_HEARTBEATS: u32 = 3;
/// The longest node name (a DNS label's).
pub const MAX_NODE_LEN: usize = 63;

pub(crate) const DEFAULT_CONCURRENCY: usize = 2;
pub const MAX_CONCURRENCY: usize = 32;
pub(crate) const DEFAULT_INCLUDE: [&str; 4] = ["*.mp4", "*.mov", "*.mxf", "*.mkv"];
pub(crate) const DEFAULT_SETTLE: Duration = Duration::from_secs(10);
/// How long a settled file may stay an unfinished container before it fails.
pub(crate) const DEFAULT_INCOMPLETE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a done video is watched for "playable".
pub(crate) const DEFAULT_PLAYABLE_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A delegated upload token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct UploadToken(String);

impl UploadToken {
    pub(crate) fn new(token: impl Into<String>) -> Self {
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

/// A secret other than the upload token (the shared journal's password).
/// Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }
    /// The secret itself, for the one place that hands it to its client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
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
    /// `[[hook]]`, in the order written.
    pub hooks: Vec<super::hooks::HookSettings>,
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
    pub(crate) fn as_str(self) -> &'static str {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    /// The SQLite journal: `journal.path`, else `$STATE_DIRECTORY/journal.db`,
    /// else `./ingestd.db`. Not used when `postgres` is `Some`; never
    /// configured together with `journal.url`.
    pub path: PathBuf,
    /// The journal shared by several nodes: `Some` when `journal.url` is set.
    pub postgres: Option<PgJournalSettings>,
}

/// `[journal] url` and the keys that only apply with it. Its `Debug` shows
/// neither the password nor the URL's own password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgJournalSettings {
    /// As configured: `postgresql://` or `postgres://`, accepted by
    /// `postgres::Config`, with a host. It may hold a password: never print
    /// it, print [`PgJournalSettings::redacted_url`].
    pub url: String,
    /// From `journal.password_file`, else the password in the URL, else
    /// `$CREDENTIALS_DIRECTORY/journal-password` if that file exists, else
    /// `None` (trust, peer or certificate authentication). Never empty; a
    /// file's one trailing newline is not part of it.
    pub password: Option<Secret>,
    /// Where the password came from, for `check-config`: `from FILE`,
    /// `systemd credential journal-password, from $CREDENTIALS_DIRECTORY`,
    /// `in the URL` or `none`.
    pub password_source: String,
    /// This node's name in the journal: 1 ..= [`MAX_NODE_LEN`] characters of
    /// `[A-Za-z0-9._-]`; the host name by default.
    pub node: String,
    /// [`MIN_LEASE`] ..= [`MAX_LEASE`].
    pub lease: Duration,
    /// ≥ [`MIN_HEARTBEAT`], and `lease` ≥ [`LEASE_HEARTBEATS`] × `heartbeat`.
    pub heartbeat: Duration,
}

impl PgJournalSettings {
    /// The URL with its password (in the user part or a `password=`
    /// parameter) replaced by `***`, for logs, errors and `check-config`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for PgJournalSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgJournalSettings")
            .field("url", &self.redacted_url())
            .field("password", &self.password)
            .field("password_source", &self.password_source)
            .field("node", &self.node)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

/// A PostgreSQL URL with its passwords replaced by `***`, split as
/// `postgres::Config` splits it: the user part runs to the first `@`, its
/// password from its first `:`; the parameters follow the first `?` after
/// it. Of a URL with several `@` (one may be in an unescaped password), and
/// of text that is not such a URL, only the scheme is shown.
pub(crate) fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Some((scheme, rest)) = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme).map(|rest| (*scheme, rest)))
    else {
        // Not a URL this knows how to split (it could be `key=value` pairs
        // holding `password=`): only a scheme is shown.
        return match url.split_once("://") {
            Some((scheme, _))
                if scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                format!("{scheme}://{HIDDEN}")
            }
            _ => HIDDEN.to_string(),
        };
    };
    // Several `@`: one of them is likely in an unescaped password, which
    // the first `@` would cut in two.
    if rest.matches('@').count() > 1 {
        return format!("{scheme}{HIDDEN}");
    }
    let mut out = String::from(scheme);
    let after_user = match rest.split_once('@') {
        Some((user, after)) => {
            match user.split_once(':') {
                Some((name, _password)) => {
                    out.push_str(name);
                    out.push(':');
                    out.push_str(HIDDEN);
                }
                None => out.push_str(user),
            }
            out.push('@');
            after
        }
        None => rest,
    };
    let Some((before_query, query)) = after_user.split_once('?') else {
        out.push_str(after_user);
        return out;
    };
    out.push_str(before_query);
    out.push('?');
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if is_password_key(key) => format!("{key}={HIDDEN}"),
            Some(_) => param.to_string(),
            // Not a parameter: perhaps the rest of a password with a `&`.
            None => HIDDEN.to_string(),
        })
        .collect();
    out.push_str(&params.join("&"));
    out
}

/// `password`, also percent-encoded (`postgres::Config` decodes the key).
fn is_password_key(key: &str) -> bool {
    key.trim() == "password"
        || percent_decode(key).is_some_and(|decoded| decoded.trim() == "password")
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Files uploading at the same time, 1 ..= [`MAX_CONCURRENCY`].
    pub concurrency: usize,
    /// Bytes per second shared by all uploads (unlimited by default), or a
    /// timetable of rates (and pauses) by local time.
    pub bandwidth_limit: BandwidthLimit,
    /// What to do with a file sent in one request whose outcome is unknown.
    pub in_doubt: InDoubt,
    /// Whether each upload's SHA-256 is computed from the bytes it sends
    /// (`status --json`, the sidecar, `duplicates = "skip"`). It costs about
    /// a second of CPU per GiB, and caps an upload at SHA-256's speed.
    pub sha256: bool,
    /// How long a done video's HLS manifest is watched for "playable"
    /// before a `not_playable` event; zero = not watched.
    pub playable_timeout: Duration,
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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WatchMode::Auto => "auto",
            WatchMode::Events => "events",
            WatchMode::Poll => "poll",
        }
    }
}

/// `[[watch]] readiness`: what makes a settled file ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// Settled, and an MP4/MOV or MXF container is complete (other
    /// formats: settled).
    Container,
    /// Settled.
    Settle,
}

impl Readiness {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Readiness::Container => "container",
            Readiness::Settle => "settle",
        }
    }
}

/// `[[watch]] duplicates`: what is done with a file whose content is that
/// of a file already uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Duplicates {
    /// Uploaded like any other file.
    Upload,
    /// Recorded `done` with the existing video when its SHA-256 matches.
    Skip,
}

impl Duplicates {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Duplicates::Upload => "upload",
            Duplicates::Skip => "skip",
        }
    }
}

/// `[[watch]] order`: which queued file of a folder is uploaded first
/// (within a `priority` rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueOrder {
    /// The oldest modification time first.
    #[default]
    Oldest,
    /// The newest modification time first.
    Newest,
    Smallest,
    Largest,
}

impl QueueOrder {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            QueueOrder::Oldest => "oldest",
            QueueOrder::Newest => "newest",
            QueueOrder::Smallest => "smallest",
            QueueOrder::Largest => "largest",
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
    pub readiness: Readiness,
    /// How long a settled file may stay an unfinished container before it
    /// becomes `failed`; > 0.
    pub incomplete_timeout: Duration,
    pub duplicates: Duplicates,
    /// Which of the folder's queued files goes first, within a priority.
    pub order: QueueOrder,
    /// Valid globset patterns: a file matching the first goes before one
    /// matching the second, …, before the rest.
    pub priority: Vec<String>,
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
            readiness: Readiness::Container,
            incomplete_timeout: DEFAULT_INCOMPLETE_TIMEOUT,
            duplicates: Duplicates::Upload,
            order: QueueOrder::Oldest,
            priority: Vec::new(),
        }
    }

    /// The root under which this folder's files are journaled: the path made
    /// absolute, without `.`, `..` or a trailing slash, so that `/srv/in/`
    /// and `/srv/in` are one folder across restarts. Symlinks are kept (the
    /// configured name is what the user knows).
    pub fn root(&self) -> PathBuf {
        journal_root(&self.path)
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

/// The root under which a folder's files are journaled: `path` made
/// absolute (against the current directory, without touching the
/// filesystem), then `.` dropped and `..` resolved lexically, so that
/// `/srv/in/` and `/srv/in` are one folder across restarts. Symlinks are
/// kept (the configured name is what the user knows).
pub fn journal_root(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}
