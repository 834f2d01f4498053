//! The shared journal over TLS: a PostgreSQL server with a certificate
//! from an authority of the test's own (rcgen), `sslmode=require` in the
//! URL; trusted through `SSL_CERT_FILE`, a node uploads through it (and the
//! server sees its connections encrypted); not trusted, the node refuses to
//! start with the cause.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Stdio;

use common::cluster::{cluster_on, files, up, LONG};
use common::{pg, text, wait_until, Daemon, MIB};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// The `postgres` user's ids, to give it the key (PostgreSQL refuses a key
/// others can read, and one it cannot read).
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Writes a server certificate for 127.0.0.1 into `dir`, issued by a new
/// authority; the authority's PEM.
fn certificates(dir: &Path) -> String {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "journal test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let (crt, pem) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Some((uid, gid)) = postgres_ids() {
        if unsafe { libc::geteuid() } == 0 {
            for f in [&crt, &pem] {
                std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
            }
        }
    }
    ca.as_ref().pem()
}

#[test]
fn the_journal_over_tls_is_used_when_trusted_and_refused_with_its_cause_when_not() {
    // A server of this test's own: it is restarted with TLS on.
    let Some(server) = pg::private() else {
        return;
    };
    let ca = certificates(server.data_dir());
    server.psql(
        "postgres",
        "ALTER SYSTEM SET ssl = on;\n\
         ALTER SYSTEM SET ssl_cert_file = 'server.crt';\n\
         ALTER SYSTEM SET ssl_key_file = 'server.key';\n",
    );
    server.restart();
    let c = cluster_on(&server, "8MiB", "");
    let config = std::fs::read_to_string(&c.env.config).unwrap();
    let url = format!("{}?sslmode=require", c.db.url);
    std::fs::write(&c.env.config, config.replace(&c.db.url, &url)).unwrap();
    let trusted = c.env.dir.path().join("trusted.pem");
    std::fs::write(&trusted, ca).unwrap();

    // Not trusted: refused, with the cause.
    let out = c
        .env
        .cmd(&["run", "--once"])
        .env("INGESTD_JOURNAL__NODE", "n1")
        .env(
            "SSL_CERT_FILE",
            c.env.dir.path().join("nothing-trusted.pem"),
        )
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("cannot reach the journal's database")
            && said.contains("UnknownIssuer")
            && said.contains("SSL_CERT_FILE"),
        "{said}"
    );

    // Trusted through SSL_CERT_FILE: a node uploads through it (and
    // `status`, which the test runs, reads through it). This binary has
    // this one test: nothing else reads the environment meanwhile.
    std::env::set_var("SSL_CERT_FILE", &trusted);
    let child = c
        .env
        .cmd(&["run"])
        .env("INGESTD_JOURNAL__NODE", "n1")
        .env("SSL_CERT_FILE", &trusted)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let node = Daemon::from_child(child);
    up(&node);
    let f = files(&c.env.media, &[2 * MIB]);
    assert!(wait_until(LONG, || c.all_done(1)), "{}", node.log());
    c.assert_each_once(&f);
    let encrypted = server.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND application_name LIKE 'ingestd%'",
    );
    assert_ne!(encrypted.trim(), "0", "the node's connections are not TLS");
    common::stop_ok(node);
}
