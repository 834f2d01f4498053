//! One delivery attempt of one event to one hook, and its outcome.
//!
//! A command runs in its own process group, from `/`, with the event's JSON
//! on stdin and the daemon's environment minus anything that could carry a
//! secret; exit 0 is delivered. A webhook gets the JSON as a POST, signed
//! with HMAC-SHA256 when it has a secret; a 2xx is delivered. Whatever a
//! hook prints or answers is read capped, so a hook cannot block a delivery
//! or grow our memory; at the timeout a command's whole group is killed.
//!
//! Every failure is worth another attempt: a hook that is missing, refuses
//! or redirects is fixed by its operator (or by a reload of the config) at
//! a time we cannot see, so the stage retries all of them with its backoff
//! and decides alone when to give up. [`DeliverError`] therefore only says
//! what went wrong, on one log line.

use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::time::Instant;

use crate::apivideo::{chain, http_client, tls_trouble};

/// Names the event (`uploaded`, …) of a webhook request.
pub(crate) const EVENT_HEADER: &str = "X-Ingestd-Event";
/// The event's stable id: the same on every attempt, so that a receiver can
/// drop what it already has (delivery is at least once).
pub(crate) const EVENT_ID_HEADER: &str = "X-Ingestd-Event-Id";
/// `sha256=<hex>`: see [`signature`].
pub(crate) const SIGNATURE_HEADER: &str = "X-Ingestd-Signature";
/// What [`EVENT_HEADER`] is to a command.
pub(crate) const EVENT_VAR: &str = "INGESTD_EVENT";
/// What [`EVENT_ID_HEADER`] is to a command.
pub(crate) const EVENT_ID_VAR: &str = "INGESTD_EVENT_ID";

/// How much of a command's stdout and stderr, or of a webhook's reply, is
/// kept for the error message; the rest is read and dropped.
const KEPT_OUTPUT: usize = 4096;
/// How much of that reaches the error message: enough for an error line or
/// three, short enough for one log line.
const SHOWN_CHARS: usize = 300;
const SHOWN_LINES: usize = 3;
/// How long the output of a command that has exited is still read. What the
/// command itself wrote is already in the pipe; only a process it left
/// behind with our pipe as its output can keep it open, and that process
/// must not hold the delivery.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// How long a killed command is waited for.
const REAP_BOUND: Duration = Duration::from_secs(5);

/// Environment variables a hook command does not inherit from the daemon:
/// every `INGESTD_*` (the token, the journal's URL and password may be set
/// that way) and systemd's credentials directory carry secrets; the notify
/// socket and the watchdog are the daemon's own line to systemd, on which a
/// hook must not speak for it.
const WITHHELD_PREFIX: &[u8] = b"INGESTD_";
const WITHHELD: &[&str] = &[
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// Where an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookTarget {
    /// `argv[0]` is run with `argv[1..]`; the event's JSON on stdin.
    Command { argv: Vec<String> },
    /// A POST of the JSON; with a secret, `X-Ingestd-Signature:
    /// sha256=<hex HMAC-SHA256(secret, body)>`.
    Webhook {
        url: Url,
        secret: Option<HookSecret>,
    },
}

/// The key a webhook's requests are signed with. Its `Debug` never shows
/// it, and no error holds it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct HookSecret(Vec<u8>);

impl HookSecret {
    pub(crate) fn new(secret: impl Into<Vec<u8>>) -> HookSecret {
        HookSecret(secret.into())
    }
}

impl fmt::Debug for HookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HookSecret(<redacted>)")
    }
}

/// The value of [`SIGNATURE_HEADER`] for `body`: `sha256=` and the
/// lowercase hex HMAC-SHA256 of the exact bytes sent, keyed with the secret.
pub(crate) fn signature(secret: &HookSecret, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret.0);
    let tag = ring::hmac::sign(&key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in tag.as_ref() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// One attempt to deliver one event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// The event's JSON, sent as is.
    pub body: &'a [u8],
    /// Stable across attempts: [`EVENT_ID_HEADER`], `$INGESTD_EVENT_ID`.
    pub event_id: &'a str,
    /// `uploaded`, `playable`, …: [`EVENT_HEADER`], `$INGESTD_EVENT`.
    pub kind: &'a str,
    /// The event's main fields as `INGESTD_*` variables, for commands
    /// (`INGESTD_EVENT` and `INGESTD_EVENT_ID` come from the fields above,
    /// whatever this holds).
    pub env: &'a [(String, String)],
    /// How long the command may run, or the request take, in all.
    pub timeout: Duration,
}

/// What failed in one attempt. Every variant is retried by the stage (see
/// the module's doc); the text fits one log line and never holds a secret,
/// a command's arguments or a webhook URL's path and query (services put
/// credentials there), only the program and the URL's origin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliverError {
    #[error("cannot build the HTTP client for webhooks: {0}")]
    Client(String),
    #[error("the hook command is empty: give the program to run and its arguments")]
    EmptyCommand,
    #[error("cannot start hook command {program}: {source}; {todo}")]
    Spawn {
        program: String,
        source: io::Error,
        todo: &'static str,
    },
    #[error("cannot write the event to the stdin of hook command {program}: {source}")]
    Stdin { program: String, source: io::Error },
    #[error("cannot wait for hook command {program}: {source}")]
    Wait { program: String, source: io::Error },
    /// `status` is "exited with code N" or "was killed by signal N";
    /// `output` the first lines of its stderr (else stdout), sanitized.
    #[error("hook command {program} {status}: {output}")]
    Failed {
        program: String,
        status: String,
        output: String,
    },
    #[error("hook command {program} timed out after {}: killed", humantime::format_duration(*after))]
    CommandTimedOut { program: String, after: Duration },
    #[error("cannot reach the webhook at {origin}: {detail}")]
    Unreachable { origin: String, detail: String },
    #[error("TLS with the webhook at {origin} failed: {cause}; {todo}")]
    Tls {
        origin: String,
        cause: String,
        todo: String,
    },
    #[error("the webhook at {origin} timed out after {}", humantime::format_duration(*after))]
    WebhookTimedOut { origin: String, after: Duration },
    #[error("the request to the webhook at {origin} failed: {detail}")]
    Request { origin: String, detail: String },
    #[error(
        "the webhook at {origin} answered {status} (a redirect to {location}): redirects are \
         refused; configure the final URL"
    )]
    Redirect {
        origin: String,
        status: u16,
        location: String,
    },
    /// `status` with its reason ("500 Internal Server Error"); `detail` the
    /// start of the reply's body, sanitized.
    #[error("the webhook at {origin} answered {status}: {detail}")]
    Refused {
        origin: String,
        status: String,
        detail: String,
    },
}

/// Performs deliveries. Cheap to clone. Build a new one to read the trust
/// store again (the HTTP client reads it once).
#[derive(Clone)]
pub(crate) struct Transport {
    /// Webhook requests: the api.video client's trust (the platform
    /// verifier, `SSL_CERT_FILE`), user agent and refusal of redirects.
    http: reqwest::Client,
    /// The environment a hook command starts from: the daemon's, without
    /// [`WITHHELD`] and the `INGESTD_*` variables.
    env: Arc<[(OsString, OsString)]>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment is not shown: other software's secrets live there.
        f.debug_struct("Transport")
            .field("env_vars", &self.env.len())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport whose commands inherit the process's environment.
    pub(crate) fn new() -> Result<Transport, DeliverError> {
        Transport::with_environment(std::env::vars_os())
    }

    /// A transport whose commands inherit `env` (the daemon's environment,
    /// given explicitly so that tests need not change the process's).
    pub(crate) fn with_environment(
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Transport, DeliverError> {
        let http = http_client().map_err(|e| DeliverError::Client(e.to_string()))?;
        let env = env
            .into_iter()
            .filter(|(name, _)| inherited(name))
            .collect();
        Ok(Transport { http, env })
    }

    /// Tries once to deliver `attempt` to `target`.
    pub(crate) async fn deliver(
        &self,
        target: &HookTarget,
        attempt: &Attempt<'_>,
    ) -> Result<(), DeliverError> {
        match target {
            HookTarget::Command { argv } => self.run(argv, attempt).await,
            HookTarget::Webhook { url, secret } => self.post(url, secret.as_ref(), attempt).await,
        }
    }

    async fn run(&self, argv: &[String], attempt: &Attempt<'_>) -> Result<(), DeliverError> {
        let (program, args) = argv.split_first().ok_or(DeliverError::EmptyCommand)?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(attempt.env.iter().map(|(k, v)| (k, v)))
            .env(EVENT_VAR, attempt.kind)
            .env(EVENT_ID_VAR, attempt.event_id)
            // A hook's relative paths would otherwise depend on where the
            // daemon was started; `/` makes them fail the same way always.
            .current_dir("/")
            // Its own group: the timeout kills what it started too, and a
            // Ctrl-C meant for a foreground run does not reach it.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = command.spawn().map_err(|source| DeliverError::Spawn {
            program: program.clone(),
            todo: spawn_todo(&source),
            source,
        })?;
        let mut hook = Group(spawned);
        let stdin = hook.0.stdin.take();
        let stdout = hook.0.stdout.take();
        let stderr = hook.0.stderr.take();
        let deadline = Instant::now() + attempt.timeout;
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (exited, fed) = {
            let pipes = async {
                let (fed, (), ()) = tokio::join!(
                    feed(stdin, attempt.body),
                    drain(stdout, &mut out),
                    drain(stderr, &mut err)
                );
                fed
            };
            tokio::pin!(pipes);
            let mut fed = None;
            let exited = loop {
                tokio::select! {
                    status = hook.0.wait() => break Some(status),
                    r = &mut pipes, if fed.is_none() => fed = Some(r),
                    () = tokio::time::sleep_until(deadline) => break None,
                }
            };
            if exited.is_some() && fed.is_none() {
                fed = tokio::time::timeout(OUTPUT_GRACE, &mut pipes).await.ok();
            }
            (exited, fed)
        };
        let wait_error = |source| DeliverError::Wait {
            program: program.clone(),
            source,
        };
        let Some(status) = exited else {
            hook.kill();
            // A process stuck in the kernel (a hung NFS mount) dies only
            // when it leaves it; past the bound, tokio reaps it later.
            if let Ok(reaped) = tokio::time::timeout(REAP_BOUND, hook.0.wait()).await {
                reaped.map_err(wait_error)?;
            }
            return Err(DeliverError::CommandTimedOut {
                program: program.clone(),
                after: attempt.timeout,
            });
        };
        let status = status.map_err(wait_error)?;
        if !status.success() {
            let said = if err.iter().any(|b| !b.is_ascii_whitespace()) {
                &err
            } else {
                &out
            };
            return Err(DeliverError::Failed {
                program: program.clone(),
                status: exit_status(status),
                output: shown(said, "no output"),
            });
        }
        match fed {
            Some(Err(source)) => Err(DeliverError::Stdin {
                program: program.clone(),
                source,
            }),
            _ => Ok(()),
        }
    }

    async fn post(
        &self,
        url: &Url,
        secret: Option<&HookSecret>,
        attempt: &Attempt<'_>,
    ) -> Result<(), DeliverError> {
        let origin = origin(url);
        let mut request = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, attempt.kind)
            .header(EVENT_ID_HEADER, attempt.event_id)
            .timeout(attempt.timeout)
            .body(attempt.body.to_vec());
        if let Some(secret) = secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, attempt.body));
        }
        let reply = request
            .send()
            .await
            .map_err(|e| transport_error(&origin, e, attempt.timeout))?;
        let status = reply.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_redirection() {
            return Err(DeliverError::Redirect {
                location: redirect_target(url, reply.headers()),
                origin,
                status: status.as_u16(),
            });
        }
        let body = read_capped(reply).await;
        Err(DeliverError::Refused {
            origin,
            status: status.to_string(),
            detail: shown(&body, "empty body"),
        })
    }
}

/// A running hook command, whose whole process group is killed if it is
/// dropped before it was reaped (the delivery was abandoned: shutdown).
struct Group(Child);

impl Group {
    /// SIGKILL to the group. Only while the child is not reaped: until then
    /// its pid, which is the group's id, cannot name anything else.
    fn kill(&self) {
        let Some(pid) = self.0.id().and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        // kill(-1) would signal every process we may signal; a child of
        // ours is never pid 1, and the bound says so.
        if pid <= 1 {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            // ESRCH (the group is gone already) is the outcome we want.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // tokio reaps a dropped child in the background.
        self.kill();
    }
}

/// Writes the event to the command's stdin, then closes it. A command that
/// exits without reading it is no failure: its exit status says.
async fn feed(stdin: Option<ChildStdin>, body: &[u8]) -> io::Result<()> {
    let Some(mut stdin) = stdin else {
        return Ok(());
    };
    match stdin.write_all(body).await {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Reads `pipe` to its end, keeping the first [`KEPT_OUTPUT`] bytes.
async fn drain(pipe: Option<impl AsyncRead + Unpin>, kept: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buf = vec![0; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = KEPT_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The first [`KEPT_OUTPUT`] bytes of a reply's body; a body that breaks
/// off keeps what came.
async fn read_capped(mut reply: reqwest::Response) -> Vec<u8> {
    let mut kept = Vec::new();
    while kept.len() < KEPT_OUTPUT {
        match reply.chunk().await {
            Ok(Some(chunk)) => {
                let room = KEPT_OUTPUT - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    kept
}

fn inherited(name: &OsStr) -> bool {
    !name.as_bytes().starts_with(WITHHELD_PREFIX) && !WITHHELD.iter().any(|w| name == *w)
}

fn spawn_todo(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => {
            "check the program's path (a name is looked up in PATH) and, for a script, its #! \
             interpreter; `ingestd check-config` checks hook commands"
        }
        io::ErrorKind::PermissionDenied => {
            "make it executable (chmod +x) for the daemon's user, or run it through its \
             interpreter"
        }
        _ => "check the hook's command",
    }
}

fn exit_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// The first lines of `bytes` on one line: trimmed, joined by ` / `, control
/// characters replaced, at most [`SHOWN_CHARS`] characters; `empty` (in
/// parentheses) when nothing is left.
fn shown(bytes: &[u8], empty: &str) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let joined = lines
        .by_ref()
        .take(SHOWN_LINES)
        .collect::<Vec<_>>()
        .join(" / ");
    if joined.is_empty() {
        return format!("({empty})");
    }
    let cut = lines.next().is_some() || joined.chars().count() > SHOWN_CHARS;
    let mut out: String = joined
        .chars()
        .take(SHOWN_CHARS)
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect();
    if cut {
        out.push('…');
    }
    out
}

/// `scheme://host[:port]`: how errors name a webhook. Its path and query
/// stay out of logs, since many services put the credential there.
fn origin(url: &Url) -> String {
    let o = url.origin();
    if o.is_tuple() {
        o.ascii_serialization()
    } else {
        format!("{}:…", url.scheme())
    }
}

/// Where a redirect points, shown like [`origin`] (`/…` when there is more).
fn redirect_target(base: &Url, headers: &HeaderMap) -> String {
    let Some(location) = headers.get(LOCATION) else {
        return "nowhere: no Location header".to_owned();
    };
    let Some(target) = location.to_str().ok().and_then(|l| base.join(l).ok()) else {
        return "an unreadable Location".to_owned();
    };
    let more = target.path() != "/" || target.query().is_some();
    format!("{}{}", origin(&target), if more { "/…" } else { "/" })
}

fn transport_error(origin: &str, e: reqwest::Error, after: Duration) -> DeliverError {
    let origin = origin.to_owned();
    let e = e.without_url();
    if e.is_timeout() && !e.is_connect() {
        return DeliverError::WebhookTimedOut { origin, after };
    }
    if let Some(t) = tls_trouble(&e) {
        return DeliverError::Tls {
            origin,
            cause: t.cause,
            // The wording is the api.video client's; the URL here is the hook's.
            todo: t.todo.replace("api.base_url", "the webhook URL"),
        };
    }
    let detail = chain(&e);
    if e.is_connect() {
        DeliverError::Unreachable { origin, detail }
    } else {
        DeliverError::Request { origin, detail }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::program::{check_command, check_command_in};
    use super::*;

    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use axum::Router;

    const TOKEN: &str = "tok-daemon-secret";
    const SECRET: &str = "s3cret-hook-key";
    const BODY: &[u8] =
        b"{\"event\":\"uploaded\",\"path\":\"/srv/capture/\xc3\xa9t\xc3\xa9 1.mp4\"}\n";

    /// The daemon's environment as the tests pretend it: the process's, plus
    /// secrets that must not reach a hook, plus one variable that must.
    fn transport() -> Transport {
        let daemon = std::env::vars_os().chain(
            [
                ("INGESTD_API__TOKEN", TOKEN),
                ("INGESTD_JOURNAL__URL", "postgresql://u:pw@db/ingest"),
                ("CREDENTIALS_DIRECTORY", "/run/credentials/ingestd.service"),
                ("NOTIFY_SOCKET", "/run/systemd/notify"),
                ("HOOK_TEST_KEPT", "kept"),
            ]
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        Transport::with_environment(daemon).unwrap()
    }

    fn attempt<'a>(env: &'a [(String, String)], timeout: Duration) -> Attempt<'a> {
        Attempt {
            body: BODY,
            event_id: "ev-0001",
            kind: "uploaded",
            env,
            timeout,
        }
    }

    /// An executable `/bin/sh` script in `dir`.
    fn script(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{text}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn command(argv: &[&str]) -> HookTarget {
        HookTarget::Command {
            argv: argv.iter().map(|a| a.to_string()).collect(),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);
    const PLENTY: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_command_gets_the_json_on_stdin_and_no_secret_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let hook = script(
            dir.path(),
            "hook",
            r#"cat > "$1/stdin"; env > "$1/env"; pwd > "$1/cwd""#,
        );
        let env = [
            ("INGESTD_PATH".to_owned(), "/srv/capture/a b.mp4".to_owned()),
            (
                "INGESTD_VIDEO_ID".to_owned(),
                "vi4k0jvEUuaTdRAEjQ4Jfrgz".to_owned(),
            ),
        ];
        transport()
            .deliver(&command(&[&hook, out]), &attempt(&env, PLENTY))
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("stdin")).unwrap(), BODY);
        let seen = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let vars: Vec<&str> = seen.lines().collect();
        for wanted in [
            "INGESTD_EVENT=uploaded",
            "INGESTD_EVENT_ID=ev-0001",
            "INGESTD_PATH=/srv/capture/a b.mp4",
            "INGESTD_VIDEO_ID=vi4k0jvEUuaTdRAEjQ4Jfrgz",
            "HOOK_TEST_KEPT=kept",
        ] {
            assert!(vars.contains(&wanted), "{wanted} missing from:\n{seen}");
        }
        for withheld in [
            "INGESTD_API__TOKEN=",
            "INGESTD_JOURNAL__URL=",
            "CREDENTIALS_DIRECTORY=",
            "NOTIFY_SOCKET=",
        ] {
            assert!(
                !vars.iter().any(|v| v.starts_with(withheld)),
                "{withheld} reached the hook:\n{seen}"
            );
        }
        assert!(!seen.contains(TOKEN), "{seen}");
        let cwd = std::fs::read_to_string(dir.path().join("cwd")).unwrap();
        assert_eq!(cwd.trim_end(), "/");
    }

    #[tokio::test]
    async fn a_failing_command_is_an_error_with_its_stderr_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let hook = script(
            dir.path(),
            "hook",
            "echo 'this went to stdout'\n\
             echo '  upload record not found  ' >&2\n\
             printf 'second\\tline \\033[31mred\\n\\n' >&2\n\
             exit 1",
        );
        let e = transport()
            .deliver(&command(&[&hook]), &attempt(&[], PLENTY))
            .await
            .unwrap_err();
        assert!(matches!(e, DeliverError::Failed { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "hook command {hook} exited with code 1: upload record not found / \
                 second line ?[31mred"
            )
        );
    }

    #[tokio::test]
    async fn a_command_killed_by_a_signal_says_so_and_without_stderr_shows_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let hook = script(dir.path(), "hook", "echo 'about to die'; kill -TERM $$");
        let e = transport()
            .deliver(&command(&[&hook]), &attempt(&[], PLENTY))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.ends_with("was killed by signal 15: about to die"),
            "{text}"
        );
    }

    /// `/proc/PID` is gone, or only a zombie is left of it (whoever reaps
    /// orphans here may not have yet).
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| {
                matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))
            }),
        }
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_at_the_timeout_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let hook = script(
            dir.path(),
            "hook",
            r#"sleep 60 &
echo $! > "$1/grandchild"
sleep 60"#,
        );
        let e = transport()
            .deliver(&command(&[&hook, out]), &attempt(&[], SECOND))
            .await
            .unwrap_err();
        assert!(matches!(e, DeliverError::CommandTimedOut { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("hook command {hook} timed out after 1s: killed")
        );
        let grandchild = std::fs::read_to_string(dir.path().join("grandchild")).unwrap();
        let grandchild = grandchild.trim();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gone(grandchild) {
            assert!(
                std::time::Instant::now() < deadline,
                "the hook's background sleep {grandchild} outlived the kill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_abandoned_delivery_kills_the_command_and_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let hook = script(
            dir.path(),
            "hook",
            r#"sleep 60 &
echo $! > "$1/grandchild.tmp"
mv "$1/grandchild.tmp" "$1/grandchild"
sleep 60"#,
        );
        let target = command(&[&hook, out]);
        let transport = transport();
        let a = attempt(&[], PLENTY);
        let mut delivery = Box::pin(transport.deliver(&target, &a));
        let pid_file = dir.path().join("grandchild");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Driven until the hook has started its background sleep, then
        // dropped, as a stage being shut down drops it.
        while !pid_file.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the hook never started"
            );
            tokio::select! {
                r = &mut delivery => panic!("a 60 s hook ended: {r:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        drop(delivery);
        let grandchild = std::fs::read_to_string(&pid_file).unwrap();
        let grandchild = grandchild.trim();
        while !gone(grandchild) {
            assert!(
                std::time::Instant::now() < deadline,
                "the hook's background sleep {grandchild} outlived the dropped delivery"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn megabytes_of_output_neither_block_nor_reach_the_error_whole() {
        let dir = tempfile::tempdir().unwrap();
        let loud = script(
            dir.path(),
            "loud",
            "head -c 8000000 /dev/zero\nhead -c 8000000 /dev/zero >&2",
        );
        transport()
            .deliver(&command(&[&loud]), &attempt(&[], PLENTY))
            .await
            .unwrap();

        let failing = script(
            dir.path(),
            "failing",
            "echo 'first of many'\n\
             yes 'the same complaint, again and again' | head -c 8000000 >&2\n\
             exit 3",
        );
        let e = transport()
            .deliver(&command(&[&failing]), &attempt(&[], PLENTY))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("exited with code 3: the same complaint, again and again / the same"),
            "{text}"
        );
        assert!(text.ends_with('…'), "{text}");
        let prefix = format!("hook command {failing} exited with code 3: ");
        assert!(
            text.len() <= prefix.len() + SHOWN_CHARS + '…'.len_utf8(),
            "{} bytes: {text}",
            text.len()
        );
    }

    #[tokio::test]
    async fn a_command_that_never_reads_its_stdin_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let hook = script(dir.path(), "hook", "exit 0");
        let body = vec![b' '; 4 * 1024 * 1024];
        let a = Attempt {
            body: &body,
            ..attempt(&[], PLENTY)
        };
        transport().deliver(&command(&[&hook]), &a).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_or_unrunnable_command_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-hook");
        let missing = missing.to_str().unwrap();
        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let plain = plain.to_str().unwrap();
        let t = transport();

        let e = t
            .deliver(&command(&[missing]), &attempt(&[], PLENTY))
            .await
            .unwrap_err();
        assert!(matches!(e, DeliverError::Spawn { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot start hook command {missing}: ")),
            "{text}"
        );
        assert!(text.contains("check-config"), "{text}");
        let why = check_command(missing).unwrap_err();
        assert!(why.contains("does not exist"), "{why}");

        let e = t
            .deliver(&command(&[plain]), &attempt(&[], PLENTY))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("chmod +x"), "{text}");
        let why = check_command(plain).unwrap_err();
        assert!(why.contains("is not executable"), "{why}");
        assert!(why.contains("chmod +x"), "{why}");

        let e = t
            .deliver(&command(&[]), &attempt(&[], PLENTY))
            .await
            .unwrap_err();
        assert!(matches!(e, DeliverError::EmptyCommand), "{e:?}");
    }

    #[test]
    fn check_command_resolves_names_through_path_and_refuses_what_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let hook = script(&bin, "notify-mam", "exit 0");
        std::fs::write(bin.join("plain"), "").unwrap();
        let path_var = OsString::from(format!("/nonexistent:{}", bin.display()));

        assert_eq!(
            check_command_in("notify-mam", Some(&path_var)).unwrap(),
            PathBuf::from(&hook)
        );
        let why = check_command_in("no-such-hook", Some(&path_var)).unwrap_err();
        assert!(why.contains("not found in PATH"), "{why}");
        let why = check_command_in("plain", Some(&path_var)).unwrap_err();
        assert!(why.contains("is not executable"), "{why}");
        let why = check_command_in("notify-mam", None).unwrap_err();
        assert!(why.contains("PATH, which is not set"), "{why}");
        let why = check_command_in("./notify-mam", Some(&path_var)).unwrap_err();
        assert!(why.contains("relative path"), "{why}");
        let why = check_command_in(bin.to_str().unwrap(), Some(&path_var)).unwrap_err();
        assert!(why.contains("is a directory"), "{why}");
        assert!(check_command_in("", Some(&path_var)).is_err());
        assert!(check_command("sh").unwrap().is_absolute());
    }

    #[test]
    fn the_signature_is_hmac_sha256_in_lowercase_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(&HookSecret::new("Jefe"), b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            format!("{:?}", HookSecret::new(SECRET)),
            "HookSecret(<redacted>)"
        );
    }

    /// HMAC-SHA256 from its definition (RFC 2104), to check the signature
    /// without the code under test.
    fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(message)
            .finalize();
        let outer = Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize();
        outer.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A request the test server received.
    struct Hit {
        path: String,
        headers: HeaderMap,
        body: Bytes,
    }

    type Hits = Arc<Mutex<Vec<Hit>>>;

    /// `/fail` answers 500, `/moved` a 301 to `/elsewhere`, the rest 200;
    /// every request is recorded.
    async fn answer(
        State(hits): State<Hits>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let path = uri.path().to_owned();
        hits.lock().unwrap().push(Hit {
            path: path.clone(),
            headers,
            body,
        });
        match path.as_str() {
            "/fail" => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("database is down\r\nretry later\n{}", "x".repeat(100_000)),
            )
                .into_response(),
            "/moved" => (
                StatusCode::MOVED_PERMANENTLY,
                [(LOCATION, "/elsewhere?key=redirect-secret")],
            )
                .into_response(),
            _ => StatusCode::OK.into_response(),
        }
    }

    async fn server() -> (Url, Hits) {
        let hits = Hits::default();
        let app = Router::new().fallback(answer).with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Url::parse(&format!("http://{addr}/")).unwrap(), hits)
    }

    fn webhook(base: &Url, path: &str, secret: Option<&str>) -> HookTarget {
        HookTarget::Webhook {
            url: base.join(path).unwrap(),
            secret: secret.map(HookSecret::new),
        }
    }

    #[tokio::test]
    async fn a_webhook_gets_the_signed_json_and_its_headers() {
        let (base, hits) = server().await;
        transport()
            .deliver(&webhook(&base, "/ok", Some(SECRET)), &attempt(&[], PLENTY))
            .await
            .unwrap();
        transport()
            .deliver(&webhook(&base, "/unsigned", None), &attempt(&[], PLENTY))
            .await
            .unwrap();
        let hits = hits.lock().unwrap();
        assert_eq!(hits.len(), 2);
        let signed = &hits[0];
        assert_eq!(signed.path, "/ok");
        assert_eq!(signed.body.as_ref(), BODY);
        let header = |name: &str| {
            signed
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(header("x-ingestd-event").as_deref(), Some("uploaded"));
        assert_eq!(header("x-ingestd-event-id").as_deref(), Some("ev-0001"));
        assert!(header("user-agent").unwrap().starts_with("ingestd/"));
        assert_eq!(
            header("x-ingestd-signature").unwrap(),
            format!("sha256={}", hmac_sha256(SECRET.as_bytes(), &signed.body))
        );
        assert!(hits[1].headers.get("x-ingestd-signature").is_none());
    }

    #[tokio::test]
    async fn a_webhook_that_answers_500_is_an_error_with_the_status_and_a_snippet() {
        let (base, _hits) = server().await;
        let e = transport()
            .deliver(
                &webhook(&base, "/fail", Some(SECRET)),
                &attempt(&[], PLENTY),
            )
            .await
            .unwrap_err();
        let text = e.to_string();
        let origin = base.as_str().trim_end_matches('/');
        assert!(
            text.starts_with(&format!(
                "the webhook at {origin} answered 500 Internal Server Error: database is down / \
                 retry later / xxx"
            )),
            "{text}"
        );
        assert!(text.ends_with("x…"), "{text}");
        assert!(text.len() < 500, "{text}");
        assert!(!text.contains(SECRET), "{text}");
    }

    #[tokio::test]
    async fn a_redirect_is_refused_and_not_followed() {
        let (base, hits) = server().await;
        let e = transport()
            .deliver(&webhook(&base, "/moved", None), &attempt(&[], PLENTY))
            .await
            .unwrap_err();
        let origin = base.as_str().trim_end_matches('/');
        assert_eq!(
            e.to_string(),
            format!(
                "the webhook at {origin} answered 301 (a redirect to {origin}/…): redirects \
                 are refused; configure the final URL"
            )
        );
        let paths: Vec<String> = hits
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.path.clone())
            .collect();
        assert_eq!(paths, ["/moved"]);
    }

    #[tokio::test]
    async fn a_webhook_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // Accepted and held open, never read or answered.
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let url = Url::parse(&format!("http://{addr}/hook?key=in-the-query")).unwrap();
        let target = HookTarget::Webhook { url, secret: None };
        let e = transport()
            .deliver(&target, &attempt(&[], SECOND))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the webhook at http://{addr} timed out after 1s")
        );
    }

    #[tokio::test]
    async fn a_webhook_nobody_listens_on_or_without_tls_is_an_error_in_words() {
        let (base, hits) = server().await;
        let mut tls = base.join("/ok").unwrap();
        tls.set_scheme("https").unwrap();
        let e = transport()
            .deliver(
                &HookTarget::Webhook {
                    url: tls,
                    secret: None,
                },
                &attempt(&[], PLENTY),
            )
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, DeliverError::Tls { .. }), "{text}");
        assert!(text.contains("does not speak TLS"), "{text}");
        assert!(text.contains("check the webhook URL"), "{text}");
        assert!(hits.lock().unwrap().is_empty());

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let url = Url::parse(&format!("http://{addr}/hook")).unwrap();
        let e = transport()
            .deliver(
                &HookTarget::Webhook { url, secret: None },
                &attempt(&[], PLENTY),
            )
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot reach the webhook at http://{addr}: ")),
            "{text}"
        );
    }
}
