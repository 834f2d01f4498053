//! Hooks end to end: `[[hook]]` commands (real `/bin/sh` scripts that
//! record every call, its stdin and its environment) and webhooks (a
//! loopback server that records every request and answers as the test
//! says) receive the events of files the real daemon uploads to the
//! emulator: once each, in order, signed; again after a SIGKILL, with the
//! same id; retried with backoff while uploads go on; killed at their
//! timeout. Then the playable watch's `playable` and `not_playable`, the
//! bad inputs (a missing program, a flood of output, a redirect, an
//! unreadable secret, an unknown event) and `run --once`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use common::*;
use serde_json::Value as Json;

/// How long any single expected outcome may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);
/// An encoding time that never ends (the manifest answers 202 for good).
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
const HOOK_SECRET: &str = "whsec-hooktest-4711";
const URL_SECRET: &str = "urlkey-hooktest-0815";

// --- command hooks that record their calls ------------------------------------------

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A `/bin/sh` hook that records each call as a directory under
/// `NAME.calls` (named by the time it started, so they sort in order):
/// its stdin, its environment (`env -0`) and its pid, which is its process
/// group's id. Then it runs `then` (nothing: exit 0).
struct Recorder {
    script: PathBuf,
    calls: PathBuf,
}

/// One call of a [`Recorder`].
#[derive(Debug)]
struct Call {
    /// When it started, ns since the epoch.
    at_ns: u128,
    stdin: String,
    event: Json,
    env: HashMap<String, String>,
    pid: i32,
}

impl Call {
    fn id(&self) -> &str {
        self.event["id"].as_str().unwrap_or("")
    }
    fn kind(&self) -> &str {
        self.event["event"].as_str().unwrap_or("")
    }
}

fn recorder(env: &Env, name: &str, then: &str) -> Recorder {
    let dir = env.dir.path();
    let calls = dir.join(format!("{name}.calls"));
    std::fs::create_dir_all(&calls).unwrap();
    let script = dir.join(format!("{name}.sh"));
    // Written aside and renamed: a call the test sees is whole.
    let text = format!(
        "#!/bin/sh\n\
         d={calls}/$(date +%s%N)-$$\n\
         mkdir \"$d.tmp\"\n\
         cat > \"$d.tmp/stdin\"\n\
         env -0 > \"$d.tmp/env\"\n\
         echo $$ > \"$d.tmp/pid\"\n\
         mv \"$d.tmp\" \"$d\"\n\
         {then}\n",
        calls = sh_quote(&calls),
    );
    write_script(&script, &text);
    Recorder { script, calls }
}

impl Recorder {
    /// Its calls so far, oldest first.
    fn calls(&self) -> Vec<Call> {
        let mut names: Vec<String> = std::fs::read_dir(&self.calls)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".tmp"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let d = self.calls.join(&name);
                let stdin = std::fs::read_to_string(d.join("stdin")).unwrap();
                let env_text = std::fs::read(d.join("env")).unwrap();
                let env = env_text
                    .split(|b| *b == 0)
                    .filter_map(|kv| {
                        let kv = String::from_utf8_lossy(kv);
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_owned(), v.to_owned()))
                    })
                    .collect();
                let pid = std::fs::read_to_string(d.join("pid")).unwrap();
                Call {
                    at_ns: name.split('-').next().unwrap().parse().unwrap(),
                    event: serde_json::from_str(&stdin)
                        .unwrap_or_else(|e| panic!("stdin of {name} is not JSON ({e}): {stdin}")),
                    stdin,
                    env,
                    pid: pid.trim().parse().unwrap(),
                }
            })
            .collect()
    }

    fn count(&self) -> usize {
        self.calls().len()
    }

    /// A `[[hook]]` table running this script; `events` as TOML (`None`:
    /// all); `extra` more `key = value` lines.
    fn table(&self, name: &str, events: Option<&str>, extra: &str) -> String {
        command_hook(name, &[self.script.to_str().unwrap()], events, extra)
    }
}

fn command_hook(name: &str, argv: &[&str], events: Option<&str>, extra: &str) -> String {
    let argv: Vec<String> = argv
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    let events = events.map_or(String::new(), |e| format!("events = {e}\n"));
    format!(
        "\n[[hook]]\nname = \"{name}\"\ncommand = [{}]\n{events}{extra}\n",
        argv.join(", ")
    )
}

fn webhook(name: &str, url: &str, events: Option<&str>, extra: &str) -> String {
    let events = events.map_or(String::new(), |e| format!("events = {e}\n"));
    format!("\n[[hook]]\nname = \"{name}\"\nurl = \"{url}\"\n{events}{extra}\n")
}

// --- a webhook receiver on 127.0.0.1 -------------------------------------------------

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    /// Path and query.
    target: String,
    /// Lowercase names.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
    fn event_id(&self) -> &str {
        self.header("x-ingestd-event-id")
    }
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the receiver answers: the status, a `Location`, a body.
struct Reply(u16, Option<&'static str>, &'static str);

/// Decides the reply to a request, given how many requests with the same
/// event id came before it.
type Answer = dyn Fn(&Hit, usize) -> Reply + Send + Sync;
type Shared = (Arc<Mutex<Vec<Hit>>>, Arc<Answer>);

struct Receiver {
    base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
    fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }
}

fn receiver(env: &Env, answer: impl Fn(&Hit, usize) -> Reply + Send + Sync + 'static) -> Receiver {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let shared: Shared = (hits.clone(), Arc::new(answer));
    let listener = env
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(receive).with_state(shared);
    env.rt
        .spawn(async move { axum::serve(listener, app).await });
    Receiver {
        base: format!("http://{addr}"),
        hits,
    }
}

async fn receive(
    State((hits, answer)): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hit = Hit {
        target: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.to_string()),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let Reply(status, location, text) = {
        let mut hits = hits.lock().unwrap();
        let earlier = hits
            .iter()
            .filter(|h| h.event_id() == hit.event_id())
            .count();
        let reply = answer(&hit, earlier);
        hits.push(hit);
        reply
    };
    let mut reply = Response::builder().status(status);
    if let Some(location) = location {
        reply = reply.header("location", location);
    }
    reply.body(Body::from(text)).unwrap()
}

fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, message);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

// --- the daemon, its configuration and `status --hooks` ----------------------------

/// The config: `upload` keys, the watch folder (short settle) with
/// `watch_extra`, then the hook tables.
fn configure(env: &Env, upload: &str, watch_extra: &str, hooks: &[String]) {
    env.write_config(
        "8MiB",
        &format!(
            "{upload}\n{}{}",
            watch(&env.media, "300ms", watch_extra),
            hooks.concat()
        ),
    );
}

fn started(mut child: std::process::Command) -> Daemon {
    let child = child
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let d = Daemon::from_child(child);
    assert!(
        d.wait_log("first scan done", WAIT),
        "the daemon never finished its first scan:\n{}",
        d.log()
    );
    d
}

/// `ingestd status --hooks --json`, parsed.
fn hooks_status(env: &Env) -> Json {
    let out = env.run(&["status", "--hooks", "--json"]);
    assert!(out.status.success(), "status --hooks: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The backlog of the hook `key` in `status --hooks --json`.
fn backlog(env: &Env, key: &str) -> Json {
    let all = hooks_status(env);
    all["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hook"] == key)
        .unwrap_or_else(|| panic!("no hook {key} in {all:#}"))
        .clone()
}

/// The hook `key` has nothing waiting and `delivered` deliveries made.
fn settled(env: &Env, key: &str, delivered: u64) -> bool {
    let b = backlog(env, key);
    b["pending"] == 0 && b["delivered"] == delivered
}

fn wait_settled(env: &Env, d: &Daemon, key: &str, delivered: u64) {
    wait_settled_within(WAIT, env, d, key, delivered);
}

fn wait_settled_within(timeout: Duration, env: &Env, d: &Daemon, key: &str, delivered: u64) {
    assert!(
        wait_until(timeout, || settled(env, key, delivered)),
        "hook {key} never had {delivered} delivered and none waiting: {:#}\n--- log\n{}",
        hooks_status(env),
        d.log()
    );
}

/// The undelivered events of the hook `key`.
fn undelivered(env: &Env, key: &str) -> Vec<Json> {
    hooks_status(env)["undelivered"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["hook"] == key)
        .cloned()
        .collect()
}

fn wait_done(env: &Env, d: &Daemon, files: &[&Path]) -> Vec<ingestd::journal::FileRow> {
    let mut found = Vec::new();
    let ok = wait_until(WAIT, || {
        let rows = rows(env);
        found = files
            .iter()
            .filter_map(|f| {
                rows.iter()
                    .find(|r| r.path() == *f && r.state.as_str() == "done")
                    .cloned()
            })
            .collect();
        found.len() == files.len()
    });
    assert!(ok, "not all done: {:#?}\n--- log\n{}", rows(env), d.log());
    found
}

/// `/proc/PID` is gone, or only a zombie is left of it (whoever reaps
/// orphans here may not have yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
    }
}

/// Kills a hook's process group that the daemon can no longer kill.
fn kill_group(pgid: i32) {
    assert!(pgid > 1);
    // SAFETY: kill(2) with a negative pid signals that group only.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn assert_hides(what: &str, text: &str) {
    for secret in [TOKEN, HOOK_SECRET, URL_SECRET] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

// --- the tests ------------------------------------------------------------------------

/// Both kinds of hook get `uploaded` then `playable` for a file, once
/// each, in order, the same events (bytes and ids), signed, with the
/// file's fields; no secret reaches them or `status --hooks`.
#[test]
fn a_command_and_a_webhook_get_uploaded_then_playable_once_each_in_order() {
    let env = Env::new();
    // The manifest answers 202 until the test lets it play: `playable`
    // cannot come before the test has seen `uploaded`.
    env.emulator.set_encoding_time(NEVER);
    let cmd = recorder(&env, "cmd", "");
    let web = receiver(&env, |_, _| Reply(200, None, "thanks"));
    let secret_file = env.dir.path().join("hook-secret");
    std::fs::write(&secret_file, format!("{HOOK_SECRET}\n")).unwrap();
    let url = format!("{}/ingest?key={URL_SECRET}", web.base);
    configure(
        &env,
        "",
        "sidecar = true",
        &[
            cmd.table("cmd", None, ""),
            webhook(
                "web",
                &url,
                None,
                &format!("secret_file = {}", toml_path(&secret_file)),
            ),
        ],
    );
    // The token comes from the daemon's environment here, which a hook
    // must not inherit (its other variables it does).
    let config = std::fs::read_to_string(&env.config).unwrap();
    let line = format!("token_file = \"{}\"\n", env.token_file.display());
    assert!(config.contains(&line));
    std::fs::write(&env.config, config.replace(&line, "")).unwrap();
    std::fs::remove_file(&env.token_file).unwrap();
    let mut run = env.cmd(&["run"]);
    run.env("INGESTD_API__TOKEN", TOKEN)
        .env("HOOKTEST_INHERITED", "yes");
    let d = started(run);

    let f = env.file("clip.mp4", 2 * MIB, 1);
    let sha = sha256(&f);
    assert!(
        wait_until(WAIT, || cmd.count() >= 1 && web.count() >= 1),
        "no uploaded event reached the hooks:\n{}",
        d.log()
    );
    let row = row_for(&env, &f).unwrap();
    assert_eq!(row["state"], "done", "{row:#}");
    assert!(row["playable_at"].is_null(), "{row:#}");
    let video_id = row["video_id"].as_str().unwrap().to_owned();
    // The watch looks, is told 202, and waits.
    assert!(
        wait_until(WAIT, || env.video(&video_id).manifest_requests >= 1),
        "the manifest was never asked for:\n{}",
        d.log()
    );
    env.emulator.set_encoding_time(Duration::from_secs(3));
    assert!(
        wait_until(WAIT, || cmd.count() >= 2 && web.count() >= 2),
        "no playable event reached the hooks:\n{}",
        d.log()
    );
    wait_settled(&env, &d, "cmd", 2);
    wait_settled(&env, &d, "web", 2);

    // Once each, in order: nothing is pending, so nothing more comes.
    let calls = cmd.calls();
    let hits = web.hits();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(hits.len(), 2, "{hits:#?}");
    let kinds: Vec<&str> = calls.iter().map(Call::kind).collect();
    assert_eq!(kinds, ["uploaded", "playable"]);
    assert_ne!(calls[0].id(), calls[1].id(), "each event has its own id");
    let file_id = row["id"].as_i64().unwrap();
    for (call, hit) in calls.iter().zip(&hits) {
        let kind = call.kind();
        let id = call.id();
        assert!(
            id.len() == 36
                && id.starts_with("evt_")
                && id[4..].chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        // The same frozen event to both.
        assert_eq!(call.stdin, hit.text(), "the command and the webhook differ");
        assert_eq!(call.env["INGESTD_EVENT"], kind);
        assert_eq!(call.env["INGESTD_EVENT_ID"], id);
        assert_eq!(hit.header("x-ingestd-event"), kind);
        assert_eq!(hit.event_id(), id);
        assert_eq!(hit.target, format!("/ingest?key={URL_SECRET}"));
        assert_eq!(hit.header("content-type"), "application/json");
        assert_eq!(
            hit.header("x-ingestd-signature"),
            format!(
                "sha256={}",
                hmac_sha256_hex(HOOK_SECRET.as_bytes(), &hit.body)
            ),
            "a wrong signature"
        );
        let file = &call.event["file"];
        assert_eq!(file["id"], file_id, "{file:#}");
        assert_eq!(file["path"].as_str(), f.to_str(), "{file:#}");
        assert_eq!(file["state"], "done", "{file:#}");
        assert_eq!(file["size"], 2 * MIB, "{file:#}");
        assert_eq!(file["sha256"].as_str(), Some(sha.as_str()), "{file:#}");
        assert_eq!(file["video_id"].as_str(), Some(video_id.as_str()));
        let player = file["player_url"].as_str().unwrap_or("");
        assert!(player.ends_with(&format!("/vod/{video_id}")), "{file:#}");
        let hls = file["hls_url"].as_str().unwrap_or("");
        assert!(
            hls.ends_with(&format!("/vod/{video_id}/hls/manifest.m3u8")),
            "{file:#}"
        );
        assert!(file["done_at"].is_string(), "{file:#}");
        assert!(call.event["at"].is_string(), "{:#}", call.event);
        assert!(call.event["node"].is_null(), "{:#}", call.event);
        // The main fields as variables.
        assert_eq!(call.env["INGESTD_FILE_ID"], file_id.to_string());
        assert_eq!(call.env["INGESTD_PATH"], f.to_str().unwrap());
        assert_eq!(call.env["INGESTD_VIDEO_ID"], video_id);
        assert_eq!(call.env["INGESTD_SIZE"], (2 * MIB).to_string());
        assert_eq!(call.env["INGESTD_SHA256"], sha);
        assert_eq!(call.env["INGESTD_STATE"], "done");
        assert_eq!(call.env["INGESTD_PLAYER_URL"], player);
        // The daemon's environment, but none of its INGESTD_* and no secret.
        assert_eq!(call.env["HOOKTEST_INHERITED"], "yes");
        assert!(!call.env.contains_key("INGESTD_API__TOKEN"));
        let env_text = format!("{:?}", call.env);
        assert_hides("a hook's environment", &env_text);
        assert_hides("a hook's stdin", &call.stdin);
        assert_hides("a webhook's headers", &format!("{:?}", hit.headers));
    }
    assert!(calls[0].event["file"]["playable_at"].is_null());
    let playable_at = calls[1].event["file"]["playable_at"].as_str().unwrap();

    // Recorded: in the journal, and in the sidecar.
    let row = row_for(&env, &f).unwrap();
    let (done, playable) = (
        row["done_at"].as_i64().unwrap(),
        row["playable_at"]
            .as_i64()
            .unwrap_or_else(|| panic!("{row:#}")),
    );
    assert!(playable >= done, "{row:#}");
    let side = env.media.join("clip.mp4.ingestd.json");
    let mut sidecar = Json::Null;
    assert!(
        wait_until(WAIT, || {
            sidecar = std::fs::read(&side)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Json::Null);
            sidecar["playableAt"].is_string()
        }),
        "no playableAt in the sidecar: {sidecar:#}\n{}",
        d.log()
    );
    assert_eq!(sidecar["playableAt"], playable_at, "{sidecar:#}");
    assert_eq!(sidecar["videoId"], video_id.as_str(), "{sidecar:#}");

    let shown = env.run(&["status", "--hooks"]);
    assert!(shown.status.success(), "{}", text(&shown));
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("cmd") && shown.contains("web"), "{shown}");
    assert_hides("status --hooks", &shown);
    assert_hides("status --hooks --json", &hooks_status(&env).to_string());
    let log = stop_ok(d);
    assert_hides("the log", &log);
}

/// SIGKILL while a delivery is on its way: the next start makes it again,
/// with the same event id.
#[test]
fn a_delivery_cut_by_sigkill_is_made_at_the_next_start_with_the_same_id() {
    let env = Env::new();
    let flag = env.dir.path().join("let-it-finish");
    let cmd = recorder(
        &env,
        "cmd",
        &format!("[ -e {} ] && exit 0\nsleep 60", sh_quote(&flag)),
    );
    configure(
        &env,
        "",
        "",
        &[cmd.table("cmd", Some("[\"uploaded\"]"), "timeout = \"120s\"")],
    );
    let mut d = Daemon::ready(&env);
    let f = env.file("cut.mp4", MIB, 2);
    assert!(
        wait_until(WAIT, || cmd.count() == 1),
        "the hook never ran:\n{}",
        d.log()
    );
    let first = cmd.calls().remove(0);
    assert_eq!(first.kind(), "uploaded");
    d.child.kill().unwrap(); // SIGKILL, the hook still sleeping
    let _ = d.child.wait();
    drop(d);
    // The daemon's death does not end the hook (its own group); end it
    // here, so that nothing outlives the test.
    kill_group(first.pid);
    assert!(
        !settled(&env, "cmd", 1),
        "delivered although it never finished"
    );
    assert_eq!(undelivered(&env, "cmd").len(), 1);
    std::fs::write(&flag, "").unwrap();

    let d = Daemon::ready(&env);
    wait_settled(&env, &d, "cmd", 1);
    let calls = cmd.calls();
    assert!(calls.len() >= 2, "{calls:#?}");
    for call in &calls {
        assert_eq!(call.id(), first.id(), "the event keeps its id: {calls:#?}");
        assert_eq!(call.env["INGESTD_EVENT_ID"], first.id());
        assert_eq!(call.stdin, first.stdin, "the same event, byte for byte");
    }
    assert_eq!(first.event["file"]["path"].as_str(), f.to_str());
    assert!(
        d.log()
            .contains("delivering again what was on its way when ingestd stopped"),
        "{}",
        d.log()
    );
    stop_ok(d);
}

/// A hook that exits 1 is retried with backoff while files keep being
/// uploaded; once it works, every event is delivered.
#[test]
fn a_failing_hook_is_retried_with_backoff_while_uploads_go_on() {
    let env = Env::new();
    let flag = env.dir.path().join("mam-is-up");
    let cmd = recorder(
        &env,
        "cmd",
        &format!(
            "[ -e {} ] && exit 0\necho 'mam is down' >&2\nexit 1",
            sh_quote(&flag)
        ),
    );
    let port = free_port();
    configure(
        &env,
        "",
        "",
        &[
            format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
            cmd.table("cmd", Some("[\"uploaded\"]"), ""),
        ],
    );
    let d = Daemon::ready(&env);
    let a = env.file("a.mp4", MIB, 3);
    let b = env.file("b.mp4", MIB + 17, 4);
    wait_done(&env, &d, &[&a, &b]);
    assert!(
        wait_until(WAIT, || undelivered(&env, "cmd")
            .iter()
            .any(|u| u["attempts"].as_u64() >= Some(1))),
        "no failed attempt recorded:\n{}",
        d.log()
    );
    // More files while the hook keeps failing.
    let c = env.file("c.mp4", MIB + 33, 5);
    let e = env.file("e.mp4", MIB + 49, 6);
    wait_done(&env, &d, &[&a, &b, &c, &e]);
    assert!(
        wait_until(WAIT, || undelivered(&env, "cmd")
            .iter()
            .any(|u| u["attempts"].as_u64() >= Some(2))),
        "never retried: {:#}\n{}",
        hooks_status(&env),
        d.log()
    );
    let bl = backlog(&env, "cmd");
    assert!(bl["failing"].as_u64() >= Some(1), "{bl:#}");
    let error = bl["last_error"].as_str().unwrap_or("");
    assert!(
        error.contains("exited with code 1") && error.contains("mam is down"),
        "{bl:#}"
    );
    for u in undelivered(&env, "cmd") {
        if u["attempts"].as_u64() >= Some(1) {
            let e = u["last_error"].as_str().unwrap_or("");
            assert!(e.contains("exited with code 1"), "{u:#}");
        }
    }
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    let failed = metric(&metrics, "ingestd_hook_deliveries_total{result=\"failed\"}");
    assert!(failed >= 2.0, "{metrics}");
    assert!(
        metric(&metrics, "ingestd_hook_undelivered{hook=\"cmd\"}") >= 1.0,
        "{metrics}"
    );
    // Backoff: at least a second between two attempts at one event.
    let calls = cmd.calls();
    let mut by_id: HashMap<&str, Vec<u128>> = HashMap::new();
    for c in &calls {
        by_id.entry(c.id()).or_default().push(c.at_ns);
    }
    for (id, times) in &by_id {
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= 1_000_000_000,
                "{id} was tried again within a second: {times:?}"
            );
        }
    }

    std::fs::write(&flag, "").unwrap();
    // The backoff has grown meanwhile (up to 2 s · 2^(n-1)): the next
    // attempts may be some seconds away.
    wait_settled_within(Duration::from_secs(90), &env, &d, "cmd", 4);
    let calls = cmd.calls();
    let mut files: Vec<&str> = calls
        .iter()
        .map(|c| c.event["file"]["path"].as_str().unwrap())
        .collect();
    files.sort();
    files.dedup();
    let mut expected: Vec<&str> = [&a, &b, &c, &e]
        .iter()
        .map(|p| p.to_str().unwrap())
        .collect();
    expected.sort();
    assert_eq!(files, expected);
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(
        metric(
            &metrics,
            "ingestd_hook_deliveries_total{result=\"delivered\"}"
        ),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "ingestd_hook_undelivered{hook=\"cmd\"}"),
        0.0,
        "{metrics}"
    );
    stop_ok(d);
}

/// The value of the metric line starting with `name `.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// A hook that hangs is killed at its timeout, with what it started, and
/// tried again.
#[test]
fn a_hanging_hook_is_killed_at_its_timeout_and_retried() {
    let env = Env::new();
    let flag = env.dir.path().join("answer-now");
    let sleepers = env.dir.path().join("sleepers");
    std::fs::create_dir_all(&sleepers).unwrap();
    let cmd = recorder(
        &env,
        "cmd",
        &format!(
            "[ -e {flag} ] && exit 0\nsleep 600 &\necho $! > {sleepers}/$$\nwait",
            flag = sh_quote(&flag),
            sleepers = sh_quote(&sleepers)
        ),
    );
    configure(
        &env,
        "",
        "",
        &[cmd.table("cmd", Some("[\"uploaded\"]"), "timeout = \"1s\"")],
    );
    let d = Daemon::ready(&env);
    env.file("hang.mp4", MIB, 7);
    let mut error = String::new();
    assert!(
        wait_until(WAIT, || {
            error = backlog(&env, "cmd")["last_error"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            !error.is_empty()
        }),
        "no attempt failed:\n{}",
        d.log()
    );
    assert!(error.contains("timed out after 1s"), "{error}");
    let first = cmd.calls().remove(0);
    let sleeper: i32 = std::fs::read_to_string(sleepers.join(first.pid.to_string()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(WAIT, || gone(first.pid) && gone(sleeper)),
        "the hook (pid {}) or what it started (pid {sleeper}) survived its timeout",
        first.pid
    );
    // Tried again (hanging again, maybe), then answering.
    assert!(
        wait_until(WAIT, || cmd.count() >= 2),
        "never tried again:\n{}",
        d.log()
    );
    std::fs::write(&flag, "").unwrap();
    wait_settled(&env, &d, "cmd", 1);
    let calls = cmd.calls();
    assert!(calls.iter().all(|c| c.id() == first.id()), "{calls:#?}");
    // Every attempt's processes are gone.
    for entry in std::fs::read_dir(&sleepers).unwrap() {
        let pid: i32 = std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(wait_until(WAIT, || gone(pid)), "sleep {pid} survived");
    }
    assert!(
        d.line_with(&["hook failed", "timed out after 1s: killed"])
            .is_some(),
        "{}",
        d.log()
    );
    stop_ok(d);
}

/// A webhook answering 500, then 200: the event is sent twice with one id,
/// then never again.
#[test]
fn a_webhook_answering_500_then_200_gets_the_event_twice_then_never_again() {
    let env = Env::new();
    let web = receiver(&env, |_, earlier| {
        if earlier == 0 {
            Reply(500, None, "database is locked, try later")
        } else {
            Reply(200, None, "")
        }
    });
    configure(
        &env,
        "",
        "",
        &[webhook(
            "web",
            &format!("{}/hook", web.base),
            Some("[\"uploaded\"]"),
            "",
        )],
    );
    let d = Daemon::ready(&env);
    let f = env.file("first.mp4", MIB, 8);
    wait_settled(&env, &d, "web", 1);
    let hits = web.hits();
    assert_eq!(hits.len(), 2, "{hits:#?}");
    assert_eq!(hits[0].event_id(), hits[1].event_id());
    assert_eq!(hits[0].body, hits[1].body, "the same event, byte for byte");
    assert_eq!(hits[0].json()["file"]["path"].as_str(), f.to_str());
    assert!(
        d.line_with(&[
            "hook failed",
            "answered 500 Internal Server Error: database is locked, try later"
        ])
        .is_some(),
        "{}",
        d.log()
    );
    // A second file, delivered the same way: meanwhile the stage has
    // ticked many times, and the first event was not sent again.
    let g = env.file("second.mp4", MIB, 9);
    wait_settled(&env, &d, "web", 2);
    let hits = web.hits();
    assert_eq!(hits.len(), 4, "{hits:#?}");
    let first_id = hits[0].event_id();
    assert_eq!(
        hits.iter().filter(|h| h.event_id() == first_id).count(),
        2,
        "{hits:#?}"
    );
    assert_eq!(hits[3].json()["file"]["path"].as_str(), g.to_str());
    stop_ok(d);
}

/// A manifest that never answers 200: at `playable_timeout`, a
/// `not_playable` event with the reason, and a warning.
#[test]
fn a_video_that_never_plays_is_not_playable_at_the_timeout() {
    let env = Env::new();
    env.emulator.set_encoding_time(NEVER);
    let cmd = recorder(&env, "cmd", "");
    configure(
        &env,
        "playable_timeout = \"3s\"",
        "",
        &[cmd.table("cmd", None, "")],
    );
    let d = Daemon::ready(&env);
    let f = env.file("stuck.mp4", MIB, 10);
    assert!(
        wait_until(WAIT, || cmd.count() >= 2),
        "no second event:\n{}",
        d.log()
    );
    wait_settled(&env, &d, "cmd", 2);
    let calls = cmd.calls();
    let kinds: Vec<&str> = calls.iter().map(Call::kind).collect();
    assert_eq!(kinds, ["uploaded", "not_playable"]);
    let file = &calls[1].event["file"];
    assert_eq!(file["path"].as_str(), f.to_str());
    assert!(file["playable_at"].is_null(), "{file:#}");
    let reason = file["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("not playable") && reason.contains("202"),
        "{file:#}"
    );
    assert_eq!(calls[1].env["INGESTD_REASON"], reason);
    let row = row_for(&env, &f).unwrap();
    assert!(row["playable_at"].is_null(), "{row:#}");
    assert_eq!(row["playable_note"].as_str(), Some(reason), "{row:#}");
    let video_id = row["video_id"].as_str().unwrap();
    assert!(env.video(video_id).manifest_requests >= 1);
    assert!(
        d.line_with(&["WARN", "not playable"]).is_some(),
        "no warning:\n{}",
        d.log()
    );
    stop_ok(d);
}

#[test]
fn check_config_names_a_hook_command_that_is_missing_or_not_executable() {
    let env = Env::new();
    let plain = env.dir.path().join("notify.sh");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    let ok = recorder(&env, "fine", "");
    configure(
        &env,
        "",
        "",
        &[
            command_hook("mam-notify", &["/nonexistent/bin/notify-mam"], None, ""),
            command_hook("not-exec", &[plain.to_str().unwrap()], None, ""),
            ok.table("fine", None, ""),
        ],
    );
    let out = env.run(&["check-config"]);
    let shown = strip_ansi(&text(&out));
    assert_eq!(out.status.code(), Some(1), "{shown}");
    let line = |parts: &[&str]| {
        shown
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
    };
    assert!(
        line(&[
            "hook mam-notify:",
            "/nonexistent/bin/notify-mam does not exist"
        ])
        .is_some(),
        "{shown}"
    );
    assert!(
        line(&["hook not-exec:", "is not executable"]).is_some(),
        "{shown}"
    );
    assert!(
        line(&["hook fine:", "runs"]).is_some_and(|l| !l.contains("error")),
        "{shown}"
    );
}

/// At run time a missing program fails each attempt, says so, is tried
/// again, and costs the uploads nothing.
#[test]
fn a_missing_hook_command_is_retried_and_uploads_go_on() {
    let env = Env::new();
    configure(
        &env,
        "",
        "",
        &[command_hook(
            "mam-notify",
            &["/nonexistent/bin/notify-mam"],
            Some("[\"uploaded\"]"),
            "",
        )],
    );
    let mut d = Daemon::ready(&env);
    let a = env.file("a.mp4", MIB, 11);
    let b = env.file("b.mp4", MIB + 5, 12);
    wait_done(&env, &d, &[&a, &b]);
    let said = "cannot start hook command /nonexistent/bin/notify-mam";
    // Two events, and at least one of them tried again.
    assert!(
        wait_until(WAIT, || d.count(said) >= 3),
        "not one line per attempt:\n{}",
        d.log()
    );
    assert!(
        d.log()
            .lines()
            .filter(|l| l.contains(said))
            .all(|l| l.contains("WARN") && l.contains("hook failed")),
        "{}",
        d.log()
    );
    let error = backlog(&env, "mam-notify")["last_error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        error.contains(said) && error.contains("check-config"),
        "{error}"
    );
    assert!(d.running(), "the daemon died:\n{}", d.log());
    stop_ok(d);
}

/// A hook that prints megabytes is delivered; the daemon keeps only a
/// little of it.
#[test]
fn a_hook_that_prints_megabytes_is_delivered() {
    let env = Env::new();
    let cmd = recorder(
        &env,
        "cmd",
        "head -c 50000000 /dev/zero\nhead -c 50000000 /dev/zero >&2\nexit 0",
    );
    configure(
        &env,
        "",
        "",
        &[cmd.table("cmd", Some("[\"uploaded\"]"), "")],
    );
    let mut d = Daemon::ready(&env);
    env.file("loud.mp4", MIB, 13);
    wait_settled(&env, &d, "cmd", 1);
    assert_eq!(cmd.count(), 1);
    assert!(d.running());
    // 100 MB went through its pipes; the daemon's peak memory stays far
    // below it (a debug build starts at some tens of MiB).
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 100 * 1024, "peak RSS {peak_kib} KiB");
    stop_ok(d);
}

/// A webhook URL that redirects is refused, and the redirect not followed.
#[test]
fn a_webhook_that_redirects_is_refused() {
    let env = Env::new();
    let web = receiver(&env, |hit, _| {
        if hit.target.starts_with("/hook") {
            Reply(302, Some("/target"), "")
        } else {
            Reply(200, None, "")
        }
    });
    configure(
        &env,
        "",
        "",
        &[webhook(
            "web",
            &format!("{}/hook", web.base),
            Some("[\"uploaded\"]"),
            "",
        )],
    );
    let mut d = Daemon::ready(&env);
    let f = env.file("moved.mp4", MIB, 14);
    wait_done(&env, &d, &[&f]);
    assert!(
        wait_until(WAIT, || web.count() >= 2),
        "not tried again:\n{}",
        d.log()
    );
    let b = backlog(&env, "web");
    let error = b["last_error"].as_str().unwrap_or("");
    assert!(
        error.contains("answered 302") && error.contains("redirect"),
        "{b:#}"
    );
    assert_eq!(b["delivered"], 0, "{b:#}");
    let hits = web.hits();
    assert!(
        hits.iter().all(|h| h.target == "/hook"),
        "the redirect was followed: {hits:#?}"
    );
    assert!(d.running());
    stop_ok(d);
}

/// Bad hook configuration exits 78, naming the key.
#[test]
fn an_unreadable_secret_file_or_an_unknown_event_exits_78_naming_the_key() {
    let env = Env::new();
    let missing = env.dir.path().join("no-such-secret");
    let cases = [
        (
            webhook(
                "web",
                "http://127.0.0.1:9/hook",
                None,
                &format!("secret_file = {}", toml_path(&missing)),
            ),
            "hook[0].secret_file",
        ),
        (
            webhook(
                "web",
                "http://127.0.0.1:9/hook",
                None,
                &format!("secret_file = {}", toml_path(env.dir.path())),
            ),
            "hook[0].secret_file",
        ),
        (
            command_hook("cmd", &["/bin/true"], Some("[\"uploaded\", \"bogus\"]"), ""),
            "hook[0].events",
        ),
    ];
    for (table, key) in cases {
        configure(&env, "", "", std::slice::from_ref(&table));
        for args in [&["check-config"][..], &["run", "--once"]] {
            let out = env.run(args);
            let shown = strip_ansi(&text(&out));
            assert_eq!(out.status.code(), Some(78), "{args:?} {table}\n{shown}");
            assert!(
                shown.contains(key),
                "{args:?} does not name {key}:\n{shown}"
            );
        }
    }
    assert!(rows(&env).is_empty(), "nothing ran");
}

/// `run --once` delivers the `uploaded` event before it exits.
#[test]
fn run_once_delivers_the_uploaded_event_before_it_exits() {
    let env = Env::new();
    let cmd = recorder(&env, "cmd", "");
    configure(
        &env,
        "",
        "",
        &[cmd.table("cmd", Some("[\"uploaded\"]"), "")],
    );
    let f = env.file("once.mp4", MIB, 15);
    let out = wait_child(env.spawn(&["run", "--once"]), Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    let calls = cmd.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}\n{}", text(&out));
    assert_eq!(calls[0].kind(), "uploaded");
    assert_eq!(calls[0].event["file"]["path"].as_str(), f.to_str());
    assert_hides("a hook's environment", &format!("{:?}", calls[0].env));
    assert_hides("a hook's stdin", &calls[0].stdin);
    let b = backlog(&env, "cmd");
    assert_eq!(
        (&b["pending"], &b["delivered"]),
        (&0.into(), &1.into()),
        "{b:#}"
    );
}
