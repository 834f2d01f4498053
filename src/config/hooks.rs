//! `[[hook]]`: what runs when something happens to a file. The events a
//! hook takes, its target (a command, or a webhook with an optional HMAC
//! secret), its timeout and the key its deliveries are journaled under,
//! validated once; the webhook's secret is read here and never shown.
//!
//! Like `validate`, whose [`Validator`] this extends, nothing here parses
//! the file or the environment. Whether a command exists and may be run is
//! `check-config`'s to say (the daemon may run where the checker does not).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ConfigError;
use super::settings::Secret;
use super::sources::display_key;
use super::validate::{key, Validator};
use super::values::{format_duration, Seconds};

/// A hook's timeout unless it says otherwise.
pub(crate) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_HOOK_NAME: usize = 63;

/// Something that happened to a file, which hooks may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookEvent {
    /// Its last chunk was acknowledged (state `done`).
    Uploaded,
    /// Its video's HLS manifest answered 200.
    Playable,
    /// Its video was still not playable at `upload.playable_timeout`.
    NotPlayable,
    /// It failed for good (state `failed`), with the reason.
    Failed,
    /// Its source vanished or changed before it was finished (state `gone`).
    Gone,
}

impl HookEvent {
    pub const ALL: [HookEvent; 5] = [
        HookEvent::Uploaded,
        HookEvent::Playable,
        HookEvent::NotPlayable,
        HookEvent::Failed,
        HookEvent::Gone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Uploaded => "uploaded",
            HookEvent::Playable => "playable",
            HookEvent::NotPlayable => "not_playable",
            HookEvent::Failed => "failed",
            HookEvent::Gone => "gone",
        }
    }

    fn parse(text: &str) -> Option<HookEvent> {
        HookEvent::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[hook]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHook {
    pub name: Option<String>,
    pub events: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub url: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub timeout: Option<Seconds>,
}

/// Where a hook's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookTarget {
    /// `argv[0]` run with the rest; the event's JSON on stdin.
    Command { argv: Vec<String> },
    /// A `POST` of the JSON, signed when a secret is set.
    Webhook {
        url: reqwest::Url,
        secret: Option<Secret>,
        secret_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSettings {
    /// What its deliveries are journaled under: its `name`, else derived
    /// from its target, so that reordering the hooks keeps their backlog.
    pub key: String,
    /// Whether `key` is the `name` someone wrote.
    pub named: bool,
    pub events: Vec<HookEvent>,
    pub target: HookTarget,
    pub timeout: Duration,
}

impl HookSettings {
    pub fn takes(&self, event: HookEvent) -> bool {
        self.events.contains(&event)
    }

    /// The target in words for logs and `status --hooks`: the program, or
    /// the URL without credentials, query or fragment (they may be secret).
    pub fn describe(&self) -> String {
        match &self.target {
            HookTarget::Command { argv } => format!("command {}", argv.join(" ")),
            HookTarget::Webhook { url, .. } => format!("webhook {}", shown_url(url)),
        }
    }
}

/// A URL as it may be shown: no user, password, query or fragment.
pub(crate) fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let hidden = shown.query().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    if hidden {
        format!("{shown}?…")
    } else {
        shown.to_string()
    }
}

impl Validator<'_> {
    pub(super) fn hooks(&self, raw: Vec<RawHook>) -> Result<Vec<HookSettings>, ConfigError> {
        let hooks = raw
            .into_iter()
            .enumerate()
            .map(|(index, raw)| self.hook(index, raw))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, hook) in hooks.iter().enumerate() {
            if let Some(j) = hooks[..i].iter().position(|h| h.key == hook.key) {
                let what = if hook.named {
                    format!("the name {:?} is also hook[{j}]'s", hook.key)
                } else {
                    format!("hook[{j}] has the same target ({})", hook.describe())
                };
                return Err(self.invalid(
                    &key(&["hook", &i.to_string(), if hook.named { "name" } else { "events" }]),
                    format!("{what}; give each hook its own name (hooks with one target take a list of events)"),
                ));
            }
        }
        Ok(hooks)
    }

    fn hook(&self, index: usize, raw: RawHook) -> Result<HookSettings, ConfigError> {
        let index_text = index.to_string();
        let at = |name: &str| key(&["hook", &index_text, name]);
        let events = match raw.events {
            None => HookEvent::ALL.to_vec(),
            Some(names) if names.is_empty() => {
                return Err(self.invalid(
                    &at("events"),
                    format!(
                        "the list is empty, so the hook would never run; name some of: {} \
                         (or remove the key for all of them)",
                        all_events()
                    ),
                ))
            }
            Some(names) => {
                let mut events = Vec::with_capacity(names.len());
                for name in &names {
                    let event = HookEvent::parse(name.trim()).ok_or_else(|| {
                        self.invalid(
                            &at("events"),
                            format!("{name:?} is not an event; the events are: {}", all_events()),
                        )
                    })?;
                    if !events.contains(&event) {
                        events.push(event);
                    }
                }
                events
            }
        };
        let target = match (raw.command, raw.url) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    &at("url"),
                    "a hook is a command or a url, not both; write a second [[hook]] for the other",
                ))
            }
            (None, None) => {
                return Err(self.invalid(
                    &key(&["hook", &index_text]),
                    "every [[hook]] needs a `command = [\"/path/to/program\", \"arg\"]` or a \
                     `url = \"https://…\"`",
                ))
            }
            (Some(argv), None) => {
                if raw.secret_file.is_some() {
                    return Err(self.invalid(
                        &at("secret_file"),
                        "secret_file signs a webhook's body (url); a command hook has nothing to sign, \
                         so remove the key",
                    ));
                }
                if argv.first().is_none_or(|program| program.trim().is_empty()) {
                    return Err(self.invalid(
                        &at("command"),
                        "the command is empty; give the program and its arguments, e.g. \
                         [\"/usr/local/bin/notify-mam\", \"--from-ingestd\"]",
                    ));
                }
                HookTarget::Command { argv }
            }
            (None, Some(text)) => self.webhook(&at, text.trim(), raw.secret_file)?,
        };
        let timeout = raw.timeout.map_or(DEFAULT_HOOK_TIMEOUT, |Seconds(d)| d);
        if timeout < Duration::from_secs(1) || timeout > MAX_HOOK_TIMEOUT {
            return Err(self.invalid(
                &at("timeout"),
                format!(
                    "{} is out of range; a hook's timeout is between 1s and {}",
                    format_duration(timeout),
                    format_duration(MAX_HOOK_TIMEOUT)
                ),
            ));
        }
        let (key_text, named) = match raw.name {
            Some(name) => (self.hook_name(&at("name"), name)?, true),
            None => (derived_key(&target), false),
        };
        Ok(HookSettings {
            key: key_text,
            named,
            events,
            target,
            timeout,
        })
    }

    fn hook_name(&self, path: &[String], name: String) -> Result<String, ConfigError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_HOOK_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(name)
        } else {
            Err(self.invalid(
                path,
                format!(
                    "{name:?} is not a hook name; use 1 to {MAX_HOOK_NAME} letters, digits, '-', '_' or '.'"
                ),
            ))
        }
    }

    fn webhook(
        &self,
        at: &dyn Fn(&str) -> Vec<String>,
        text: &str,
        secret_file: Option<PathBuf>,
    ) -> Result<HookTarget, ConfigError> {
        let url = reqwest::Url::parse(text).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        let Some(url) = url else {
            return Err(self.invalid(
                &at("url"),
                "not an http:// or https:// URL with a host; write e.g. \
                 \"https://mam.studio.lan/hooks/ingest\"",
            ));
        };
        let secret = match &secret_file {
            None => None,
            Some(path) if path.as_os_str().is_empty() => {
                return Err(self.invalid(
                    &at("secret_file"),
                    "the path is empty; give the file holding the secret, or remove the key",
                ))
            }
            Some(path) => {
                // The key with its index: "hook secret_file" alone would not
                // say which of several webhooks.
                let from = format!(
                    "{} {}",
                    display_key(&at("secret_file")),
                    self.sources.origin(&at("secret_file"))
                );
                Some(read_secret(path, from)?)
            }
        };
        Ok(HookTarget::Webhook {
            url,
            secret,
            secret_file,
        })
    }
}

fn all_events() -> String {
    let names: Vec<&str> = HookEvent::ALL.iter().map(|e| e.as_str()).collect();
    names.join(", ")
}

/// `command-1a2b3c4d` / `webhook-1a2b3c4d`: the target's SHA-256, short.
fn derived_key(target: &HookTarget) -> String {
    let (kind, text) = match target {
        HookTarget::Command { argv } => ("command", argv.join("\0")),
        HookTarget::Webhook { url, .. } => ("webhook", url.to_string()),
    };
    let digest = Sha256::digest(text.as_bytes());
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind}-{short}")
}

fn read_secret(path: &Path, from: String) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::SecretFile {
        path: path.to_path_buf(),
        from: from.clone(),
        error,
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(ConfigError::BadSecret {
            from,
            problem: "is empty; write the secret alone (a trailing newline is ignored)".into(),
        });
    }
    Ok(Secret::new(secret))
}
