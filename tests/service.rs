//! The service layer: sd_notify to a fake `$NOTIFY_SOCKET`, the supervisor
//! (READY, STATUS, WATCHDOG, STOPPING), the `/metrics` and `/healthz`
//! endpoint, the `[metrics]` configuration and the systemd units.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingestd::apivideo::ErrorClass;
use ingestd::config::{load_from, ConfigError, WatchSettings};
use ingestd::journal::{FileIdentity, FileState, Journal, JournalHandle};
use ingestd::service::{
    supervise_every, Health, Metrics, MetricsServer, Notifier, ServiceError, Vitals, WatchersState,
};
use ingestd::upload::{Outcome, TokenGate};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const MIB: u64 = 1024 * 1024;

// --- a fake systemd ----------------------------------------------------------

/// The service manager's end of `$NOTIFY_SOCKET`: a thread records every
/// datagram with the instant it arrived.
struct FakeSystemd {
    /// `$NOTIFY_SOCKET` for this socket: a path, or `@name`.
    address: String,
    /// Every message received so far, in order, with when it came.
    inbox: Arc<Mutex<Vec<(Instant, String)>>>,
    /// How many messages of `inbox` [`FakeSystemd::expect`] has looked at.
    cursor: usize,
    _dir: Option<tempfile::TempDir>,
}

impl FakeSystemd {
    fn at_path() -> FakeSystemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        FakeSystemd::listen(socket, path.to_str().unwrap().to_owned(), Some(dir))
    }

    fn abstract_name() -> FakeSystemd {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("ingestd-test-{}-{}", std::process::id(), fastrand::u64(..));
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        FakeSystemd::listen(socket, format!("@{name}"), None)
    }

    fn listen(socket: UnixDatagram, address: String, dir: Option<tempfile::TempDir>) -> Self {
        let inbox: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let sink = Arc::downgrade(&inbox);
        // The thread ends at the first read after the fake is dropped.
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                let got = socket.recv(&mut buf);
                let Some(inbox) = sink.upgrade() else { return };
                match got {
                    Ok(n) => inbox.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("fake systemd: {e}"),
                }
            }
        });
        FakeSystemd {
            address,
            inbox,
            cursor: 0,
            _dir: dir,
        }
    }

    /// The environment systemd gives a `Type=notify` service.
    fn vars(&self, watchdog_usec: Option<u64>) -> impl Fn(&str) -> Option<OsString> {
        let mut vars: BTreeMap<&'static str, String> = BTreeMap::new();
        vars.insert("NOTIFY_SOCKET", self.address.clone());
        if let Some(usec) = watchdog_usec {
            vars.insert("WATCHDOG_USEC", usec.to_string());
        }
        move |name| vars.get(name).map(OsString::from)
    }

    fn notifier(&self, watchdog_usec: Option<u64>) -> Notifier {
        Notifier::from_vars(self.vars(watchdog_usec), std::process::id())
            .expect("a notifier for the fake socket")
    }

    /// The next message (after those already looked at) that satisfies
    /// `pred`, with when it arrived. Fails with everything received if none
    /// comes within [`WAIT`].
    fn expect_at(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> (Instant, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let inbox = self.inbox.lock().unwrap();
                while self.cursor < inbox.len() {
                    let (at, msg) = &inbox[self.cursor];
                    self.cursor += 1;
                    if pred(msg) {
                        return (*at, msg.clone());
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {WAIT:?}; received: {:#?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.expect_at(what, pred).1
    }

    /// Every message received so far, with when it arrived.
    fn seen(&self) -> Vec<(Instant, String)> {
        self.inbox.lock().unwrap().clone()
    }

    fn messages(&self) -> Vec<String> {
        self.seen().into_iter().map(|(_, m)| m).collect()
    }
}

// --- a journal and vitals ----------------------------------------------------

struct World {
    _dir: tempfile::TempDir,
    journal: JournalHandle,
    vitals: Vitals,
    /// The configured watch folder.
    root: PathBuf,
}

fn ident(root: &Path, name: &str) -> FileIdentity {
    FileIdentity {
        root: root.to_path_buf(),
        rel_path: PathBuf::from(name),
        size: 10,
        mtime_ns: 1_700_000_000_000_000_000,
        dev: 1,
        inode: fastrand::u64(..),
        ctime_ns: None,
    }
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let journal =
            JournalHandle::spawn(Journal::open(&dir.path().join("j.db")).unwrap()).unwrap();
        let root = dir.path().join("capture");
        std::fs::create_dir_all(&root).unwrap();
        let vitals = Vitals::new(
            journal.clone(),
            TokenGate::default(),
            Arc::new(Metrics::default()),
            Arc::new(tokio::sync::watch::channel(Arc::new(vec![WatchSettings::new(&root)])).0),
        );
        World {
            _dir: dir,
            journal,
            vitals,
            root,
        }
    }

    /// Journals `n` files under `root` in `state` (failed ones via queued).
    async fn add(&self, root: &Path, n: usize, state: FileState) -> Vec<i64> {
        let files: Vec<FileIdentity> = (0..n).map(|i| ident(root, &format!("f{i}.mp4"))).collect();
        self.journal
            .call(move |j| {
                let added = j.add_files(
                    &files,
                    if state == FileState::Failed {
                        FileState::Queued
                    } else {
                        state
                    },
                )?;
                for a in &added {
                    if state == FileState::Failed {
                        j.mark_failed(a.id, "rejected (400)")?;
                    }
                }
                Ok(added.into_iter().map(|a| a.id).collect())
            })
            .await
            .unwrap()
    }

    fn refuse_token(&self, why: &str) {
        let generation = self.vitals.gate.state().generation;
        assert!(self.vitals.gate.refuse(generation, why.to_owned()));
    }
}

async fn finish(task: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the task ends after cancel")
        .expect("the task does not panic");
}

// --- sd_notify -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervise_sends_ready_after_the_first_scan_then_status_watchdog_and_stopping() {
    let mut systemd = FakeSystemd::at_path();
    let notifier = systemd.notifier(Some(200_000));
    assert_eq!(
        notifier.watchdog_interval(),
        Some(Duration::from_millis(100))
    );
    let world = World::new();
    world.add(&world.root, 2, FileState::Queued).await;
    world.add(&world.root, 1, FileState::Failed).await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(supervise_every(
        Some(notifier),
        world.vitals.clone(),
        cancel.clone(),
        Duration::from_millis(50),
    ));

    // Before the first scan is done: a status, more start-up time, no READY.
    let scanning = systemd.expect("a start-up status", |m| {
        m.starts_with("STATUS=scanning the watch folders") && m.contains("2 queued")
    });
    assert!(scanning.contains("1 failed"), "{scanning}");
    systemd.expect("EXTEND_TIMEOUT_USEC", |m| {
        m.starts_with("EXTEND_TIMEOUT_USEC=")
    });
    assert!(
        !systemd.messages().iter().any(|m| m == "READY=1"),
        "READY before the first scan: {:#?}",
        systemd.messages()
    );

    world.vitals.watchers.running();
    systemd.expect("READY=1", |m| m == "READY=1");
    let status = systemd.expect("a running status", |m| {
        m.starts_with("STATUS=") && !m.contains("scanning")
    });
    assert_eq!(
        status,
        "STATUS=0 uploading, 2 queued, 0 retrying, 0 settling, 1 failed, 0 done"
    );
    systemd.expect("WATCHDOG=1", |m| m == "WATCHDOG=1");

    world.refuse_token("upload token refused (401): invalid token");
    systemd.expect("a paused status", |m| {
        m.starts_with("STATUS=PAUSED: upload token refused") && m.contains("2 queued")
    });
    world.vitals.gate.replaced();
    systemd.expect("the pause lifted", |m| m.starts_with("STATUS=0 uploading"));

    cancel.cancel();
    systemd.expect("STOPPING=1", |m| m == "STOPPING=1");
    finish(task).await;
    let ready = systemd
        .messages()
        .iter()
        .filter(|m| *m == "READY=1")
        .count();
    assert_eq!(ready, 1, "READY=1 once: {:#?}", systemd.messages());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_while_the_journal_hangs_and_resume_after() {
    let mut systemd = FakeSystemd::at_path();
    // Timeout 400 ms: a ping every 200 ms while the journal answers.
    let notifier = systemd.notifier(Some(400_000));
    let world = World::new();
    world.vitals.watchers.running();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(supervise_every(
        Some(notifier),
        world.vitals.clone(),
        cancel.clone(),
        Duration::from_millis(50),
    ));
    systemd.expect("READY=1", |m| m == "READY=1");
    systemd.expect("WATCHDOG=1", |m| m == "WATCHDOG=1");

    // The journal thread hangs for 1.5 s (a dead disk, say).
    let hang = Duration::from_millis(1500);
    let journal = world.journal.clone();
    let hung_at = Instant::now();
    let hanging = tokio::spawn(async move {
        journal
            .call(move |_| {
                std::thread::sleep(hang);
                Ok(())
            })
            .await
    });
    systemd.expect("a status naming the silent journal", |m| {
        m.starts_with("STATUS=JOURNAL NOT ANSWERING")
    });
    hanging.await.unwrap().unwrap();
    let answered_at = Instant::now();
    // Pings come back once the journal answers.
    while systemd
        .expect_at("WATCHDOG=1 after the hang", |m| m == "WATCHDOG=1")
        .0
        < answered_at
    {}

    // Between the last ping before the hang went past the timeout and the
    // first after it, there was a long gap: systemd would have acted.
    let pings: Vec<Instant> = systemd
        .seen()
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    let gap = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        gap >= Duration::from_millis(800),
        "pings went on while the journal hung (largest gap {gap:?}, hang began {:?} before the end)",
        answered_at - hung_at
    );
    let last_before = pings
        .iter()
        .filter(|t| **t < answered_at)
        .max()
        .copied()
        .unwrap();
    assert!(
        last_before - hung_at < Duration::from_millis(700),
        "pings stopped only {:?} into the hang",
        last_before - hung_at
    );

    cancel.cancel();
    systemd.expect("STOPPING=1", |m| m == "STOPPING=1");
    finish(task).await;
}

#[test]
fn an_abstract_notify_socket_is_reached() {
    let mut systemd = FakeSystemd::abstract_name();
    assert!(systemd.address.starts_with('@'));
    let notifier = systemd.notifier(None);
    notifier.ready();
    systemd.expect("READY=1", |m| m == "READY=1");
    notifier.status("two\nlines");
    systemd.expect("a one-line status", |m| m == "STATUS=two lines");
    notifier.stopping();
    systemd.expect("STOPPING=1", |m| m == "STOPPING=1");
}

#[test]
fn reloading_carries_a_monotonic_timestamp() {
    let mut systemd = FakeSystemd::at_path();
    let notifier = systemd.notifier(None);
    let usec = |m: &str| -> u64 {
        let mut lines = m.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"), "{m}");
        lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {m:?}"))
    };
    notifier.reloading();
    let first = usec(&systemd.expect("RELOADING=1", |m| m.starts_with("RELOADING=1")));
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(30) {
        std::hint::spin_loop();
    }
    notifier.reloading();
    let second = usec(&systemd.expect("RELOADING=1", |m| m.starts_with("RELOADING=1")));
    assert!(first > 0);
    assert!(
        (30_000..5_000_000).contains(&(second - first)),
        "{first} then {second}"
    );
    notifier.ready();
    systemd.expect("READY=1 ends the reload", |m| m == "READY=1");
}

#[test]
fn the_notifier_exists_only_under_systemd_and_the_watchdog_only_for_its_pid() {
    let none = |_: &str| None::<OsString>;
    assert!(Notifier::from_vars(none, 42).is_none());

    let systemd = FakeSystemd::at_path();
    let vars = |pid: Option<&str>| {
        let socket = systemd.address.clone();
        let pid = pid.map(str::to_owned);
        move |name: &str| match name {
            "NOTIFY_SOCKET" => Some(OsString::from(&socket)),
            "WATCHDOG_USEC" => Some(OsString::from("60000000")),
            "WATCHDOG_PID" => pid.clone().map(OsString::from),
            _ => None,
        }
    };
    let ours = Notifier::from_vars(vars(Some("42")), 42).unwrap();
    assert_eq!(ours.watchdog_timeout(), Some(Duration::from_secs(60)));
    assert_eq!(ours.watchdog_interval(), Some(Duration::from_secs(30)));
    let no_pid = Notifier::from_vars(vars(None), 42).unwrap();
    assert_eq!(no_pid.watchdog_interval(), Some(Duration::from_secs(30)));
    let other = Notifier::from_vars(vars(Some("4242")), 42).unwrap();
    assert_eq!(other.watchdog_interval(), None);

    let relative = |name: &str| (name == "NOTIFY_SOCKET").then(|| OsString::from("run/notify"));
    assert!(Notifier::from_vars(relative, 42).is_none());
}

#[tokio::test]
async fn without_systemd_supervise_returns_at_once() {
    let world = World::new();
    let task = tokio::spawn(supervise_every(
        None,
        world.vitals.clone(),
        CancellationToken::new(),
        Duration::from_millis(50),
    ));
    finish(task).await;
}

// --- /metrics and /healthz ---------------------------------------------------------

/// `ingestd_x{a="b"} 1` → ("ingestd_x{a=\"b\"}", 1.0), checking that every
/// sample belongs to a family announced by `# HELP` and `# TYPE` lines.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut helped = std::collections::HashSet::new();
    let mut typed = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "empty HELP: {line}");
            helped.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            typed.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        let kind = typed
            .get(name)
            .unwrap_or_else(|| panic!("no # TYPE for {name}"));
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        }
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "labels: {line}"
                );
                for pair in labels[1..labels.len() - 1].split("\",") {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(!k.is_empty() && !v.is_empty(), "label: {line}");
                }
            }
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

struct Endpoint {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServiceError>>,
    client: reqwest::Client,
}

impl Endpoint {
    async fn start(vitals: &Vitals) -> Endpoint {
        // reqwest is built without a default TLS provider (plain HTTP here).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = MetricsServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.serve(vitals.clone(), cancel.clone()));
        Endpoint {
            addr,
            cancel,
            task,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        let reply = self
            .client
            .get(format!("http://{}{path}", self.addr))
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let content_type = reply
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, content_type, reply.text().await.unwrap())
    }

    async fn scrape(&self) -> BTreeMap<String, f64> {
        let (status, content_type, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        parse_exposition(&body)
    }

    async fn health(&self) -> (u16, serde_json::Value, String) {
        let (status, content_type, body) = self.get("/healthz").await;
        assert_eq!(content_type, "application/json");
        (status, serde_json::from_str(&body).unwrap(), body)
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the endpoint stops on cancel")
            .unwrap()
            .unwrap();
    }
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_follow_the_journal_and_the_workers() {
    let world = World::new();
    let elsewhere = PathBuf::from("/not/a/watch/folder");
    let waiting = world.add(&world.root, 3, FileState::Queued).await;
    world.add(&world.root, 1, FileState::Settling).await;
    world.add(&world.root, 2, FileState::Done).await;
    world.add(&elsewhere, 1, FileState::Queued).await;
    let endpoint = Endpoint::start(&world.vitals).await;
    let folder = format!(
        "ingestd_folder_backlog{{folder=\"{}\"}}",
        world.root.display()
    );

    let m = endpoint.scrape().await;
    assert_eq!(value(&m, "ingestd_journal_ok"), 1.0);
    assert_eq!(value(&m, "ingestd_files{state=\"queued\"}"), 4.0);
    assert_eq!(value(&m, "ingestd_files{state=\"settling\"}"), 1.0);
    assert_eq!(value(&m, "ingestd_files{state=\"done\"}"), 2.0);
    assert_eq!(value(&m, "ingestd_files{state=\"failed\"}"), 0.0);
    // Work ahead under the watch folder only: 3 queued + 1 settling.
    assert_eq!(value(&m, &folder), 4.0);
    assert_eq!(
        m.keys()
            .filter(|k| k.starts_with("ingestd_folder_backlog"))
            .count(),
        1,
        "one gauge per configured watch folder"
    );
    assert_eq!(value(&m, "ingestd_token_ok"), 1.0);
    assert_eq!(value(&m, "ingestd_watchers_ok"), 0.0);
    assert_eq!(value(&m, "ingestd_uploaded_bytes_total"), 0.0);
    assert_eq!(value(&m, "ingestd_chunks_acknowledged_total"), 0.0);
    for class in ["retry", "token", "permanent"] {
        let series = format!("ingestd_upload_errors_total{{class=\"{class}\"}}");
        assert_eq!(value(&m, &series), 0.0);
    }

    // The oldest waiting file ages.
    let deadline = Instant::now() + WAIT;
    loop {
        let m = endpoint.scrape().await;
        let age = value(&m, "ingestd_oldest_waiting_seconds");
        assert!((0.0..60.0).contains(&age), "{age}");
        if age >= 0.2 {
            break;
        }
        assert!(Instant::now() < deadline, "the age never grew: {age}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // What the workers report shows in the counters.
    let metrics = &world.vitals.metrics;
    metrics.chunk_acked(8 * MIB);
    metrics.chunk_acked(3 * MIB);
    metrics.error(ErrorClass::Retry);
    metrics.error(ErrorClass::Retry);
    metrics.error(ErrorClass::Token);
    metrics.outcome(&Outcome::Retrying { attempts: 1 });
    metrics.outcome(&Outcome::Done {
        video_id: "vi1".into(),
    });
    metrics.outcome(&Outcome::Gone);
    metrics.outcome(&Outcome::Released);
    world.refuse_token("upload token refused (401)");
    world.vitals.watchers.running();
    let m = endpoint.scrape().await;
    assert_eq!(value(&m, "ingestd_uploaded_bytes_total"), (11 * MIB) as f64);
    assert_eq!(value(&m, "ingestd_chunks_acknowledged_total"), 2.0);
    assert_eq!(
        value(&m, "ingestd_upload_errors_total{class=\"retry\"}"),
        2.0
    );
    assert_eq!(
        value(&m, "ingestd_upload_errors_total{class=\"token\"}"),
        1.0
    );
    assert_eq!(value(&m, "ingestd_retries_scheduled_total"), 1.0);
    assert_eq!(
        value(&m, "ingestd_files_finished_total{outcome=\"done\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "ingestd_files_finished_total{outcome=\"gone\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "ingestd_files_finished_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(value(&m, "ingestd_token_ok"), 0.0);
    assert_eq!(value(&m, "ingestd_watchers_ok"), 1.0);

    // Nothing waits any more: no age; the backlog follows the journal.
    world
        .journal
        .call(move |j| {
            for &id in &waiting {
                j.mark_failed(id, "rejected (400)")?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let m = endpoint.scrape().await;
    assert_eq!(value(&m, "ingestd_files{state=\"failed\"}"), 3.0);
    assert_eq!(value(&m, &folder), 1.0);
    // The file outside the watch folders still waits.
    assert!(value(&m, "ingestd_oldest_waiting_seconds") > 0.0);

    endpoint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_200_only_while_the_token_works_and_the_watchers_run() {
    let world = World::new();
    let endpoint = Endpoint::start(&world.vitals).await;

    let (status, body, _) = endpoint.health().await;
    assert_eq!(status, 503);
    assert_eq!(body["watchers"], "starting");
    assert_eq!(body["token"], "ok");

    world.vitals.watchers.running();
    let (status, _, raw) = endpoint.health().await;
    assert_eq!(status, 200);
    assert_eq!(raw, r#"{"token":"ok","tls":"ok","watchers":"ok"}"#);

    // A refusal reason quoting a URL with the token never shows the token.
    world.refuse_token(
        "error sending request for url (https://ws.api.video/upload?token=to1SECRETsecret): 401",
    );
    let (status, body, raw) = endpoint.health().await;
    assert_eq!(status, 503);
    assert_eq!(body["token"], "refused");
    assert_eq!(body["watchers"], "ok");
    assert!(
        body["reason"].as_str().unwrap().contains("token refused"),
        "{raw}"
    );
    assert!(!raw.contains("SECRET"), "{raw}");
    assert!(
        !parse_exposition(&endpoint.get("/metrics").await.2)
            .keys()
            .any(|k| k.contains("SECRET")),
        "the token in a metric"
    );

    world.vitals.gate.replaced();
    let (status, _, _) = endpoint.health().await;
    assert_eq!(status, 200);

    world
        .vitals
        .watchers
        .stopped("too many inotify watches; raise fs.inotify.max_user_watches");
    let (status, body, raw) = endpoint.health().await;
    assert_eq!(status, 503);
    assert_eq!(body["watchers"], "stopped");
    assert!(raw.contains("max_user_watches"), "{raw}");

    assert_eq!(endpoint.get("/nothing").await.0, 404);
    endpoint.stop().await;
}

#[tokio::test]
async fn health_matches_the_vitals() {
    let world = World::new();
    assert_eq!(world.vitals.watchers.state(), WatchersState::Starting);
    assert!(!Health::of(&world.vitals).is_ok());
    world.vitals.watchers.running();
    assert_eq!(
        Health::of(&world.vitals),
        Health {
            token: "ok",
            tls: "ok",
            watchers: "ok",
            reason: None
        }
    );
}

#[tokio::test]
async fn a_taken_port_is_an_error_naming_metrics_listen() {
    let first = MetricsServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let err = MetricsServer::bind(first.local_addr()).await.unwrap_err();
    assert!(matches!(err, ServiceError::Bind { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("metrics.listen"), "{text}");
    assert!(text.contains(&first.local_addr().to_string()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_stops_on_cancel_even_with_an_idle_client_connected() {
    let world = World::new();
    let endpoint = Endpoint::start(&world.vitals).await;
    // A keep-alive connection that never sends a request.
    let idle = tokio::net::TcpStream::connect(endpoint.addr).await.unwrap();
    endpoint.scrape().await;
    let addr = endpoint.addr;
    endpoint.stop().await;
    drop(idle);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

// --- [metrics] configuration ---------------------------------------------------------

fn load(toml: &str, env: &[(&str, &str)]) -> Result<ingestd::config::Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_from(Some(&path), env)
}

#[test]
fn metrics_listen_comes_from_the_file_or_the_environment_and_is_off_by_default() {
    let s = load("", &[]).unwrap();
    assert_eq!(s.metrics.listen, None);

    let s = load("[metrics]\nlisten = \"127.0.0.1:9187\"\n", &[]).unwrap();
    assert_eq!(s.metrics.listen, Some("127.0.0.1:9187".parse().unwrap()));

    let s = load(
        "[metrics]\nlisten = \"127.0.0.1:9187\"\n",
        &[("INGESTD_METRICS__LISTEN", "[::1]:9200")],
    )
    .unwrap();
    assert_eq!(s.metrics.listen, Some("[::1]:9200".parse().unwrap()));

    let s = load("", &[("INGESTD_METRICS__LISTEN", "0.0.0.0:9187")]).unwrap();
    assert_eq!(s.metrics.listen, Some("0.0.0.0:9187".parse().unwrap()));

    // An empty value turns a file's endpoint off.
    let s = load(
        "[metrics]\nlisten = \"127.0.0.1:9187\"\n",
        &[("INGESTD_METRICS__LISTEN", "")],
    )
    .unwrap();
    assert_eq!(s.metrics.listen, None);
}

#[test]
fn a_bad_metrics_listen_is_an_error_naming_the_key_and_the_value() {
    for bad in [
        "localhost:9187",
        "9187",
        "127.0.0.1",
        "127.0.0.1:99999",
        "nonsense",
    ] {
        let err = load(&format!("[upload]\n\n[metrics]\nlisten = \"{bad}\"\n"), &[]).unwrap_err();
        match &err {
            ConfigError::Invalid { key, .. } => assert_eq!(key, "metrics.listen"),
            other => panic!("{bad}: expected Invalid, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("metrics.listen"), "{text}");
        assert!(text.contains(&format!("{bad:?}")), "{text}");
        assert!(text.contains("line 4"), "{text}");
        assert!(text.contains("127.0.0.1:9187"), "an example: {text}");
    }
    let err = load("", &[("INGESTD_METRICS__LISTEN", "localhost:1")]).unwrap_err();
    assert!(err.to_string().contains("INGESTD_METRICS__LISTEN"), "{err}");
    let err = load("[metrics]\nlisten = 9187\n", &[]).unwrap_err();
    assert!(err.to_string().contains("metrics.listen"), "{err}");
    let err = load("[metrics]\nport = 9187\n", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
    assert!(err.to_string().contains("listen"), "{err}");
}

#[test]
fn metrics_settings_render_and_load_back() {
    for toml in ["", "[metrics]\nlisten = \"[::1]:9187\"\n"] {
        let s = load(toml, &[]).unwrap();
        let rendered = s.render();
        assert!(rendered.contains("[metrics]"), "{rendered}");
        let again = load(&rendered, &[]).unwrap();
        assert_eq!(again.metrics, s.metrics, "{rendered}");
    }
}

// --- the systemd units ---------------------------------------------------------------

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd");

fn unit(name: &str) -> String {
    std::fs::read_to_string(Path::new(UNITS).join(name)).unwrap()
}

/// The exposure score written at the top of a unit file.
fn documented_score(text: &str, service: &str) -> String {
    let needle = format!("Overall exposure level for {service}: ");
    let at = text
        .find(&needle)
        .unwrap_or_else(|| panic!("no documented score for {service}"));
    text[at + needle.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn the_units_have_the_settings_the_daemon_relies_on() {
    let daemon = unit("ingestd.service");
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/ingestd run",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=60",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "StateDirectory=ingestd",
        "LoadCredential=upload-token:/etc/ingestd/upload-token",
        "DynamicUser=yes",
        "Environment=INGESTD_CONFIG=/etc/ingestd/config.toml",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "ProtectSystem=strict",
    ] {
        assert!(daemon.lines().any(|l| l == line), "ingestd.service: {line}");
    }
    let once = unit("ingestd-once.service");
    for line in [
        "Type=oneshot",
        "ExecStart=/usr/local/bin/ingestd run --once",
        "StateDirectory=ingestd",
        "LoadCredential=upload-token:/etc/ingestd/upload-token",
    ] {
        assert!(
            once.lines().any(|l| l == line),
            "ingestd-once.service: {line}"
        );
    }
    // The same sandbox for both.
    let sandbox = |text: &str| -> Vec<String> {
        let start = text.find("# --- Who ingestd runs as").unwrap();
        let end = text.find("[Install]").unwrap_or(text.len());
        text[start..end]
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(sandbox(&daemon), sandbox(&once));
    let timer = unit("ingestd-once.timer");
    assert!(timer.lines().any(|l| l == "Persistent=true"));
    assert!(timer.lines().any(|l| l.starts_with("OnCalendar=")));
}

#[test]
fn the_units_keep_their_documented_exposure_score() {
    let version = Command::new("systemd-analyze").arg("--version").output();
    if !version.is_ok_and(|o| o.status.success()) {
        eprintln!("systemd-analyze is not installed; the scores are not checked");
        return;
    }
    for service in ["ingestd.service", "ingestd-once.service"] {
        let path = Path::new(UNITS).join(service);
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let measured = documented_score(&text, service);
        let score: f64 = measured.parse().unwrap();
        assert!(score <= 2.0, "{service}: exposure {score}\n{text}");
        assert_eq!(
            documented_score(&unit(service), service),
            measured,
            "{service}: update the score in its header comment"
        );
    }
    assert_eq!(
        documented_score(&unit("ingestd-once.timer"), "ingestd-once.service"),
        documented_score(&unit("ingestd-once.service"), "ingestd-once.service")
    );
}

// --- the real binary -------------------------------------------------------------------

/// A blocking `GET` over HTTP/1.1 (`Connection: close`): status and body,
/// or `None` if nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, WAIT).ok()?;
    stream.set_read_timeout(Some(WAIT)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).ok()?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((status, dechunk(body)));
    }
    Some((status, body.to_owned()))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]

fn the_daemon_notifies_systemd_and_serves_metrics() {
    let env = common::Env::new();
    let mut systemd = FakeSystemd::at_path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.write_config(
        "8MiB",
        &format!(
            "\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[[watch]]\npath = \"{}\"\nsettle = \"1s\"\ninclude = [\"*.mp4\"]\n",
            env.media.display()
        ),
    );
    let mut cmd = env.cmd(&["run"]);
    cmd.env("NOTIFY_SOCKET", &systemd.address)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let child = Kill(&mut child);

    systemd.expect("READY=1", |m| m == "READY=1");
    systemd.expect("a status", |m| {
        m.starts_with("STATUS=") && m.contains("queued")
    });
    systemd.expect("WATCHDOG=1", |m| m == "WATCHDOG=1");

    let size = 9 * MIB;
    env.file("clip.mp4", size, 7);
    let metrics = |path: &str| http_get(SocketAddr::from(([127, 0, 0, 1], port)), path);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, body)) = metrics("/metrics") {
            let m = parse_exposition(&body);
            if m.get("ingestd_files{state=\"done\"}") == Some(&1.0) {
                assert_eq!(value(&m, "ingestd_uploaded_bytes_total"), size as f64);
                assert_eq!(value(&m, "ingestd_chunks_acknowledged_total"), 2.0);
                assert_eq!(
                    value(&m, "ingestd_files_finished_total{outcome=\"done\"}"),
                    1.0
                );
                break;
            }
        }
        assert!(Instant::now() < deadline, "the file was never done");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = metrics("/healthz").expect("healthz answers");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"token":"ok","tls":"ok","watchers":"ok"}"#)
    );

    // SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again.
    let hup = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    systemd.expect("RELOADING=1", |m| {
        m.starts_with("RELOADING=1\nMONOTONIC_USEC=")
    });
    systemd.expect("READY=1 after the reload", |m| m == "READY=1");

    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    systemd.expect("STOPPING=1", |m| m == "STOPPING=1");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ingestd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
