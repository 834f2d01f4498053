//! What can go wrong while loading the configuration, and where the offending
//! value came from. Every message names the key, the file (and line) or the
//! environment variable, the bad value (never the token) and what to do.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where a configuration value came from, so an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueOrigin {
    /// The config file; `line` when the key could be found in its text.
    File { path: PathBuf, line: Option<usize> },
    /// An `INGESTD_SECTION__KEY` environment variable.
    Env { var: String },
    /// The built-in default (or a value derived from several sources).
    Default,
    /// A command-line option standing for the key (`journal export --to`).
    Argument { flag: String },
}

impl fmt::Display for ValueOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueOrigin::File {
                path,
                line: Some(line),
            } => write!(f, "in {} line {line}", path.display()),
            ValueOrigin::File { path, line: None } => write!(f, "in {}", path.display()),
            ValueOrigin::Env { var } => write!(f, "from environment variable {var}"),
            ValueOrigin::Default => f.write_str("(built-in default)"),
            ValueOrigin::Argument { flag } => write!(f, "given as {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (missing, unreadable, not UTF-8).
    /// The OS error is part of the message rather than a `source()`, so an
    /// error chain printer does not repeat it.
    #[error("cannot read config file {}: {error}; {}", path.display(), config_read_hint(error))]
    ReadFile { path: PathBuf, error: io::Error },

    /// The config file is not valid TOML. Only the position and the parser's
    /// message are kept: the parser's snippet of the offending line could
    /// hold the upload token.
    #[error(
        "TOML syntax error in {}{}: {message}; fix the file (config.example.toml documents every key)",
        path.display(),
        position(*line, *column)
    )]
    Syntax {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    /// A key that ingestd does not know (often a typo, or a key in the wrong section).
    #[error("unknown key `{key}` {origin}; {}", expected_hint(expected))]
    UnknownKey {
        key: String,
        origin: ValueOrigin,
        /// The keys that are valid at that place.
        expected: Vec<String>,
    },

    /// A value of the wrong type or out of range, or keys that contradict
    /// each other. `message` says what is wrong and what is allowed.
    #[error("invalid `{key}` {origin}: {message}")]
    Invalid {
        key: String,
        origin: ValueOrigin,
        message: String,
    },

    /// An `INGESTD_*__*` environment variable that cannot be mapped to a key.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },

    /// Both `api.token` and `api.token_file` are set.
    #[error(
        "the upload token is given twice: `api.token` {token} and `api.token_file` {token_file}; keep only one of them"
    )]
    TokenConflict {
        token: ValueOrigin,
        token_file: ValueOrigin,
    },

    /// The token file (`api.token_file` or the systemd credential) cannot be read.
    #[error("cannot read the upload token file {} ({from}): {error}; {}", path.display(), token_read_hint(error))]
    TokenFile {
        path: PathBuf,
        /// Which setting named the file.
        from: String,
        error: io::Error,
    },

    /// The token is syntactically unusable. The token itself is never shown.
    #[error("the upload token {from} {problem}; write the token alone, as given by api.video (it is not shown here because it is a secret)")]
    BadToken { from: String, problem: String },

    /// Both `journal.path` and `journal.url` are set.
    #[error(
        "journal.path and journal.url are both set: `journal.path` {path} and `journal.url` {url}; \
         use one: path for a journal on this machine, url for one shared by several nodes"
    )]
    JournalConflict { path: ValueOrigin, url: ValueOrigin },

    /// The journal's password file (`journal.password_file` or the systemd
    /// credential) cannot be read.
    #[error("cannot read the journal password file {} ({from}): {error}; {}", path.display(), password_read_hint(error))]
    PasswordFile {
        path: PathBuf,
        /// Which setting named the file.
        from: String,
        error: io::Error,
    },

    /// A webhook's `secret_file` cannot be read.
    #[error("cannot read the hook secret file {} ({from}): {error}; {}", path.display(), secret_read_hint(error))]
    SecretFile {
        path: PathBuf,
        /// Which setting named the file.
        from: String,
        error: io::Error,
    },

    /// A webhook's secret is unusable. The secret itself is never shown.
    #[error("the hook secret in {from} {problem} (it is not shown here because it is a secret)")]
    BadSecret { from: String, problem: String },

    /// The journal's password is unusable. The password itself is never shown.
    #[error("the journal password {from} {problem} (it is not shown here because it is a secret)")]
    BadPassword { from: String, problem: String },

    /// A command that uploads needs a token and none is configured.
    #[error(
        "no upload token configured; give a delegated upload token in one of three ways: \
         `api.token_file = \"/etc/ingestd/upload-token\"` in the config file (or INGESTD_API__TOKEN_FILE), \
         `api.token` (or INGESTD_API__TOKEN), \
         or a systemd credential: LoadCredential=upload-token:/path/to/token"
    )]
    MissingToken,
}

fn config_read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => {
            "check the path given by --config or $INGESTD_CONFIG (config.example.toml is a starting point)"
        }
        io::ErrorKind::PermissionDenied => "make it readable by the user ingestd runs as",
        io::ErrorKind::InvalidData => "the file must be UTF-8 text",
        _ => "check the file and its directory",
    }
}

fn token_read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => "create it with the token, or fix the path",
        io::ErrorKind::PermissionDenied => {
            "make it readable by the user ingestd runs as (or use LoadCredential=upload-token:FILE)"
        }
        io::ErrorKind::InvalidData => "the file must hold the token as UTF-8 text",
        _ => "check the file and its directory",
    }
}

fn password_read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => "create it with the PostgreSQL password, or fix the path",
        io::ErrorKind::PermissionDenied => {
            "make it readable by the user ingestd runs as (or use LoadCredential=journal-password:FILE)"
        }
        io::ErrorKind::InvalidData => "the file must hold the password as UTF-8 text",
        _ => "check the file and its directory",
    }
}

fn secret_read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => "create it with the webhook's secret, or fix the path",
        io::ErrorKind::PermissionDenied => "make it readable by the user ingestd runs as",
        io::ErrorKind::InvalidData => "the file must hold the secret as UTF-8 text",
        _ => "check the file and its directory",
    }
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" line {line}, column {column}"),
        (Some(line), None) => format!(" line {line}"),
        _ => String::new(),
    }
}

fn expected_hint(expected: &[String]) -> String {
    if expected.is_empty() {
        "remove it (config.example.toml documents every key)".to_string()
    } else {
        format!(
            "the valid keys there are: {} (config.example.toml documents every key)",
            expected.join(", ")
        )
    }
}
