//! HTTPS as a user meets it: a TLS terminator (tokio-rustls, certificates
//! made by rcgen) in front of the emulator, and the real binary trusting
//! authorities through `SSL_CERT_FILE`.
//!
//! - A trusted authority: uploads are byte-exact, one connection per file.
//! - An unknown issuer, an expired certificate, one for another name: the
//!   daemon pauses (one ERROR with the cause in words, `/healthz` 503,
//!   `ingestd_tls_ok 0`), nothing is failed; `check-config --online` says
//!   the same cause. Then the authority trusted in the same file, and
//!   SIGHUP: every file done, without a restart.
//! - An https URL on a plain-HTTP port is named as such.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

/// How long any single expected outcome may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// A certificate authority of the test's own.
fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for `name`, issued by `ca`, valid `days` from now
/// (negative: expired that many days ago).
fn server_cert(
    ca: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    days: i64,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    if days < 0 {
        p.not_before = now + time::Duration::days(days * 2);
        p.not_after = now + time::Duration::days(days);
    } else {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(days);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (
        vec![cert.der().clone(), ca.as_ref().der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// What a terminator counted.
#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    handshakes: AtomicUsize,
}

/// A TLS terminator on 127.0.0.1:0 that forwards every connection to the
/// emulator: its port, and how many connections and handshakes it saw.
fn terminator(
    env: &Env,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> (u16, Arc<Counts>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let upstream = env.emulator.addr();
    let listener = env.rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = Arc::new(Counts::default());
    let counted = counts.clone();
    env.rt.spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            counted.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                counted.handshakes.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut up) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    (port, counts)
}

/// The test's trust store: `SSL_CERT_FILE` for every ingestd it runs.
fn trust(env: &Env, ca: &CertifiedIssuer<'static, KeyPair>) -> PathBuf {
    let path = env.dir.path().join("trusted.pem");
    std::fs::write(&path, ca.as_ref().pem()).unwrap();
    path
}

/// The config for `https://localhost:PORT`, with a watch folder and the
/// metrics endpoint on `metrics`.
fn config_for(env: &Env, url: &str, metrics: u16) {
    env.write_config(
        "8MiB",
        &format!(
            "\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n{}",
            watch(&env.media, "1s", "")
        ),
    );
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replace(&env.emulator.base_url(), url);
    std::fs::write(&env.config, text).unwrap();
}

fn cmd(env: &Env, store: &Path, args: &[&str]) -> std::process::Command {
    let mut c = env.cmd(args);
    c.env("SSL_CERT_FILE", store).env_remove("SSL_CERT_DIR");
    c
}

fn spawn(env: &Env, store: &Path) -> Daemon {
    let child = cmd(env, store, &["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Daemon::from_child(child)
}

#[test]
fn a_trusted_authority_gives_byte_exact_uploads_one_connection_per_file() {
    let env = Env::new();
    let ca = authority("ingestd test authority");
    let (chain, key) = server_cert(&ca, "localhost", 30);
    let (port, counts) = terminator(&env, chain, key);
    let store = trust(&env, &ca);
    config_for(&env, &format!("https://localhost:{port}"), free_port());
    let file = env.file("over-tls.mp4", 20 * MIB + 123, 7);
    let out = cmd(&env, &store, &["upload", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rows = env.status();
    assert_eq!(rows[0]["state"], "done", "{rows:#?}");
    let video = env.video(rows[0]["video_id"].as_str().unwrap());
    assert_eq!(video.sha256.as_deref(), Some(sha256(&file).as_str()));
    // Three chunks of 8 MiB, one handshake.
    assert_eq!(
        counts.handshakes.load(Ordering::SeqCst),
        1,
        "{}",
        text(&out)
    );
}

/// An unknown issuer, from the daemon's side: paused, nothing failed,
/// the cause in words; then trusted, reloaded, done.
fn pauses_then_resumes_after_reload(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: &CertifiedIssuer<'static, KeyPair>,
    words: &str,
    sighup: bool,
) {
    let env = Env::new();
    let (port, counts) = terminator(&env, chain, key);
    // Trusted at first: an authority that has nothing to do with the server.
    let store = trust(&env, &authority("some other authority"));
    let metrics = free_port();
    config_for(&env, &format!("https://localhost:{port}"), metrics);
    let d = spawn(&env, &store);
    assert!(d.wait_log("first scan done", WAIT), "{}", d.log());
    let files: Vec<PathBuf> = (0..3)
        .map(|i| env.file(&format!("clip-{i}.mp4"), MIB + i, 10 + i))
        .collect();
    let mut health = None;
    assert!(
        wait_until(WAIT, || {
            health = http_get(metrics, "/healthz");
            health
                .as_ref()
                .is_some_and(|(c, b)| *c == 503 && b.contains(r#""tls":"refused""#))
        }),
        "/healthz never said TLS is refused: {health:?}\n{}",
        d.log()
    );
    let (_, body) = health.unwrap();
    assert!(body.contains(words), "{body}");
    let m = http_get(metrics, "/metrics").unwrap().1;
    assert!(m.contains("\ningestd_tls_ok 0"), "{m}");
    assert!(m.contains("\ningestd_token_ok 1"), "{m}");
    let line = d
        .line_with(&["ERROR", "UPLOADS PAUSED", "TLS with localhost failed"])
        .unwrap_or_else(|| panic!("no ERROR line:\n{}", d.log()));
    assert!(line.contains(words), "{line}");
    // Two more probes go by (5 s, then 10 s apart): still paused, nothing
    // failed, one ERROR.
    let seen = counts.connections.load(Ordering::SeqCst);
    assert!(
        wait_until(WAIT, || counts.connections.load(Ordering::SeqCst)
            >= seen + 2),
        "no probe:\n{}",
        d.log()
    );
    assert_eq!(d.count("UPLOADS PAUSED"), 1, "{}", d.log());
    let rows = env.status();
    assert!(
        rows.len() == 3
            && rows
                .iter()
                .all(|r| r["state"] == "queued" && r["attempts"] == 0),
        "{rows:#?}"
    );
    assert_eq!(env.videos().len(), 0);

    // The fix: the right authority in the trust store, no restart; with
    // SIGHUP at once, without it at the next probe (each one reads the
    // store again).
    std::fs::write(&store, ca.as_ref().pem()).unwrap();
    if sighup {
        signal(&d.child, libc::SIGHUP);
    }
    let ok = wait_until(WAIT, || {
        let rows = env.status();
        rows.len() == 3 && rows.iter().all(|r| r["state"] == "done")
    });
    assert!(ok, "{:#?}\n{}", env.status(), d.log());
    for f in &files {
        let row = row_for(&env, f).unwrap();
        let video = env.video(row["video_id"].as_str().unwrap());
        assert_eq!(video.sha256.as_deref(), Some(sha256(f).as_str()));
    }
    assert_eq!(env.videos().len(), 3);
    assert_eq!(http_get(metrics, "/healthz").map(|r| r.0), Some(200));
    if !sighup {
        assert!(
            d.line_with(&["INFO", "TLS handshake with the server works again"])
                .is_some(),
            "{}",
            d.log()
        );
    }
    stop_ok(d);
}

/// A server certificate from an authority trusted only later.
fn unknown_issuer(sighup: bool) {
    let ca = authority("studio authority");
    let (chain, key) = server_cert(&ca, "localhost", 30);
    let words = "issued by an authority this machine does not trust";
    pauses_then_resumes_after_reload(chain, key, &ca, words, sighup);
}

#[test]
fn an_unknown_issuer_pauses_uploads_until_it_is_trusted_and_reloaded() {
    unknown_issuer(true);
}

#[test]
fn an_authority_trusted_later_is_found_by_the_probe_without_a_reload() {
    unknown_issuer(false);
}

#[test]
fn check_config_online_names_each_tls_cause() {
    let env = Env::new();
    let ca = authority("studio authority");
    let store = trust(&env, &ca);
    let stranger = authority("nobody's authority");
    let cases: Vec<(&str, (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>))> = vec![
        (
            "issued by an authority this machine does not trust",
            server_cert(&stranger, "localhost", 30),
        ),
        (
            "certificate expired on 20",
            server_cert(&ca, "localhost", -3),
        ),
        (
            "certificate is for other.example, not for localhost",
            server_cert(&ca, "other.example", 30),
        ),
    ];
    for (words, (chain, key)) in cases {
        let (port, _) = terminator(&env, chain, key);
        config_for(&env, &format!("https://localhost:{port}"), free_port());
        let out = cmd(&env, &store, &["check-config", "--online"])
            .output()
            .unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{t}");
        assert!(t.contains(words), "{words}:\n{t}");
        assert!(t.contains("TLS with https://localhost"), "{t}");
    }
    // The token commands say the same.
    let (chain, key) = server_cert(&stranger, "localhost", 30);
    let (port, _) = terminator(&env, chain, key);
    config_for(&env, &format!("https://localhost:{port}"), free_port());
    let out = cmd(&env, &store, &["token", "list"])
        .env("INGESTD_API_KEY", "a-key-of-the-test")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("TLS refused: the server's certificate is issued by an authority this machine does not trust"), "{t}");
    // So does a foreground upload, which keeps the file for the next run.
    let file = env.file("refused.mp4", MIB, 3);
    let out = cmd(&env, &store, &["upload", file.to_str().unwrap()])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("does not trust"), "{t}");
    assert_eq!(row_for(&env, &file).unwrap()["state"], "queued", "{t}");
    // And run --once, over the watch folder.
    let out = cmd(&env, &store, &["run", "--once"]).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("does not trust"), "{t}");
    assert_eq!(row_for(&env, &file).unwrap()["state"], "queued", "{t}");
    assert_eq!(env.videos().len(), 0);
    // An https URL on a port that speaks plain HTTP (the emulator's own).
    let plain = env.emulator.addr().port();
    config_for(&env, &format!("https://127.0.0.1:{plain}"), free_port());
    let out = cmd(&env, &store, &["check-config", "--online"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(t.contains("does not speak TLS on this port"), "{t}");
}

#[test]
fn an_expired_or_misnamed_certificate_pauses_the_daemon_with_its_cause() {
    // The daemon's side of the two other causes: paused, in words, nothing
    // failed (trusting the authority again fixes neither, so the test of
    // the reload is the unknown issuer's).
    for (words, days, name) in [
        ("certificate expired on 20", -3, "localhost"),
        (
            "certificate is for other.example, not for localhost",
            30,
            "other.example",
        ),
    ] {
        let env = Env::new();
        let ca = authority("studio authority");
        let (chain, key) = server_cert(&ca, name, days);
        let (port, _) = terminator(&env, chain, key);
        let store = trust(&env, &ca);
        let metrics = free_port();
        config_for(&env, &format!("https://localhost:{port}"), metrics);
        let d = spawn(&env, &store);
        assert!(d.wait_log("first scan done", WAIT), "{}", d.log());
        env.file("clip.mp4", MIB, 1);
        assert!(
            wait_until(WAIT, || d
                .line_with(&["ERROR", "UPLOADS PAUSED", words])
                .is_some()),
            "{words}:\n{}",
            d.log()
        );
        let health = http_get(metrics, "/healthz").unwrap();
        assert_eq!(health.0, 503, "{health:?}");
        assert!(health.1.contains(words), "{health:?}");
        // The file goes back to the queue just after the ERROR is logged.
        assert!(
            wait_until(Duration::from_secs(10), || env.status()[0]["state"]
                == "queued"),
            "{:#?}",
            env.status()
        );
        let rows = env.status();
        assert_eq!(rows[0]["attempts"], 0, "{rows:#?}");
        assert_eq!(env.videos().len(), 0);
        stop_ok(d);
    }
}
