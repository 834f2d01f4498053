//! Validation: raw values → [`Settings`], each check with the error that
//! names the key, where its value came from and what to write instead. The
//! token is read here (file or systemd credential) and checked once; the
//! shared journal's keys are checked in `pg_journal`.
//!
//! Nothing here parses the file or the environment (that is `sources` and
//! `raw`), and nothing downstream checks these values again.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use super::error::ConfigError;
use super::journal_default_in;
use super::raw::{AfterUploadKind, RawConfig, RawJournal, RawMetrics, RawUpload, RawWatch};
use super::settings::{
    AfterUpload, ApiSettings, Duplicates, JournalSettings, LogSettings, MetricsSettings,
    ModifyWindow, Readiness, Settings, TokenSource, UploadSettings, UploadToken, WatchMode,
    WatchSettings, DEFAULT_BASE_URL, DEFAULT_CHUNK_SIZE, DEFAULT_CONCURRENCY, DEFAULT_INCLUDE,
    DEFAULT_INCOMPLETE_TIMEOUT, DEFAULT_PLAYABLE_TIMEOUT, DEFAULT_POLL_INTERVAL, DEFAULT_SETTLE,
    MAX_CHUNK_SIZE, MAX_CONCURRENCY, MIN_CHUNK_SIZE, MIN_POLL_INTERVAL, SANDBOX_BASE_URL,
    TOKEN_CREDENTIAL_NAME,
};
use super::sources::{display_key, EnvMap, Sources};
use super::timetable::BandwidthLimit;
use super::values::{self, format_size, BandwidthText, Count, Seconds, SecretText, Size};

pub(crate) struct Validator<'a> {
    pub sources: &'a Sources,
    pub env: &'a EnvMap,
    /// False for commands that never upload: the token is not read.
    pub read_token: bool,
}

pub(super) fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|part| part.to_string()).collect()
}

impl Validator<'_> {
    pub(super) fn invalid(&self, path: &[String], message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: display_key(path),
            origin: self.sources.origin(path),
            message: message.into(),
        }
    }

    pub fn settings(&self, raw: RawConfig) -> Result<Settings, ConfigError> {
        let RawConfig {
            api,
            journal,
            upload,
            log,
            watch,
            metrics,
            hook,
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
        self.check_duplicates(&upload, &watches)?;
        let metrics = self.metrics(metrics)?;
        let hooks = self.hooks(hook)?;
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
            hooks,
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

    fn journal(&self, mut raw: RawJournal) -> Result<JournalSettings, ConfigError> {
        if raw.path.is_some() && raw.url.is_some() {
            return Err(ConfigError::JournalConflict {
                path: self.sources.origin(&key(&["journal", "path"])),
                url: self.sources.origin(&key(&["journal", "url"])),
            });
        }
        let path = match raw.path.take() {
            Some(path) if path.as_os_str().is_empty() => {
                return Err(self.invalid(
                    &key(&["journal", "path"]),
                    "the path is empty; give the SQLite file's path or remove the key to use the default ($STATE_DIRECTORY/journal.db)",
                ))
            }
            Some(path) => path,
            None => journal_default_in(self.env.get("STATE_DIRECTORY").map(String::as_str)),
        };
        let postgres = self.pg_journal(raw)?;
        Ok(JournalSettings { path, postgres })
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
        let bandwidth_limit = match raw.bandwidth_limit {
            None => BandwidthLimit::default(),
            Some(BandwidthText::Bytes(bytes)) => BandwidthLimit::bytes(bytes),
            Some(BandwidthText::Text(text)) => BandwidthLimit::parse(&text).map_err(|error| {
                self.invalid(&key(&["upload", "bandwidth_limit"]), error.to_string())
            })?,
        };
        Ok(UploadSettings {
            concurrency,
            bandwidth_limit,
            in_doubt: raw.in_doubt.unwrap_or_default(),
            sha256: raw.sha256.unwrap_or(true),
            playable_timeout: raw
                .playable_timeout
                .map_or(DEFAULT_PLAYABLE_TIMEOUT, |Seconds(d)| d),
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
        let priority = raw.priority.unwrap_or_default();
        for (name, patterns) in [
            ("include", &include),
            ("exclude", &exclude),
            ("priority", &priority),
        ] {
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
        let incomplete_timeout = raw
            .incomplete_timeout
            .map_or(DEFAULT_INCOMPLETE_TIMEOUT, |Seconds(d)| d);
        if incomplete_timeout.is_zero() {
            return Err(self.invalid(
                &at("incomplete_timeout"),
                format!("0s would fail every unfinished recording of {shown} at once; give how long a recorder may leave a file unfinished (default \"1h\")"),
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
            readiness: raw.readiness.unwrap_or(Readiness::Container),
            incomplete_timeout,
            duplicates: raw.duplicates.unwrap_or(Duplicates::Upload),
            order: raw.order.unwrap_or_default(),
            priority,
        })
    }

    /// `duplicates = "skip"` compares SHA-256s, which `upload.sha256 =
    /// false` does not compute.
    fn check_duplicates(
        &self,
        upload: &UploadSettings,
        watches: &[WatchSettings],
    ) -> Result<(), ConfigError> {
        if upload.sha256 {
            return Ok(());
        }
        let Some(index) = watches
            .iter()
            .position(|w| w.duplicates == Duplicates::Skip)
        else {
            return Ok(());
        };
        Err(self.invalid(
            &key(&["watch", &index.to_string(), "duplicates"]),
            format!(
                "\"skip\" (watch folder {}) recognises a duplicate by its SHA-256, but \
                 upload.sha256 = false {} computes none; set upload.sha256 = true, or \
                 duplicates = \"upload\" in this [[watch]]",
                watches[index].path.display(),
                self.sources.origin(&key(&["upload", "sha256"])),
            ),
        ))
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

pub(crate) fn check_token(token: &str, from: &str) -> Result<UploadToken, ConfigError> {
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
pub(crate) fn lexical(path: &Path) -> PathBuf {
    path.components()
        .filter(|component| !matches!(component, Component::CurDir))
        .collect()
}
