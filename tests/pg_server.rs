//! The throwaway PostgreSQL server of tests/common/pg.rs, checked itself.
//!
//! The tests share one server; the ones that restart or stop it take
//! `OUTAGE` for writing, all others for reading, so no query of theirs
//! meets a server that is going down.

mod common;

use std::process::Output;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use common::pg;

static OUTAGE: RwLock<()> = RwLock::new(());

fn using() -> RwLockReadGuard<'static, ()> {
    OUTAGE.read().unwrap_or_else(|e| e.into_inner())
}

fn outage() -> RwLockWriteGuard<'static, ()> {
    OUTAGE.write().unwrap_or_else(|e| e.into_inner())
}

/// `SELECT current_user` in `db` as `ingestd` over TCP with `password`.
fn tcp_login(pg: &pg::PgServer, db: &str, password: &str) -> Output {
    let mut c = pg.psql_command();
    c.args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", pg::ROLE, "-d", db, "-w", "-c", "SELECT current_user"])
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "disable");
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn answers_select_1() {
    let Some(pg) = pg::shared() else { return };
    let _g = using();
    assert_eq!(pg.psql("postgres", "SELECT 1").trim(), "1");
    let version = pg.psql("postgres", "SHOW server_version_num");
    assert!(
        version.trim().parse::<u32>().unwrap() >= 150000,
        "{version}"
    );
}

#[test]
fn fresh_databases_are_distinct_and_owned_by_ingestd() {
    let Some(pg) = pg::shared() else { return };
    let _g = using();
    let a = pg.fresh_database("harness");
    let b = pg.fresh_database("harness");
    assert_ne!(a.name, b.name);
    assert_ne!(a.url, b.url);
    assert_eq!(
        a.url,
        format!("postgresql://ingestd@127.0.0.1:{}/{}", pg.port(), a.name)
    );
    assert_eq!(a.password, pg.password());
    pg.psql(&a.name, "CREATE TABLE only_in_a (x int)");
    let tables = |db: &str| {
        pg.psql(
            db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
        )
    };
    assert_eq!(tables(&a.name).trim(), "1");
    assert_eq!(tables(&b.name).trim(), "0");
    for db in [&a.name, &b.name] {
        let owner = pg.psql(
            "postgres",
            &format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{db}'"),
        );
        assert_eq!(owner.trim(), "ingestd");
    }
}

#[test]
fn tcp_login_needs_the_password() {
    let Some(pg) = pg::shared() else { return };
    let _g = using();
    let db = pg.fresh_database("login");
    let ok = tcp_login(pg, &db.name, &db.password);
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ingestd");
    // The role may write in its own database.
    let mut c = pg.psql_command();
    c.args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", pg::ROLE, "-d", &db.name, "-w"])
        .args(["-c", "CREATE TABLE t (x int); INSERT INTO t VALUES (7)"])
        .env("PGPASSWORD", &db.password);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let bad = tcp_login(pg, &db.name, "not-the-password");
    assert!(!bad.status.success(), "{}", text(&bad));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
    let none = tcp_login(pg, &db.name, "");
    assert!(!none.status.success(), "{}", text(&none));
}

#[test]
fn restart_keeps_the_data() {
    let Some(pg) = pg::shared() else { return };
    let _g = outage();
    let db = pg.fresh_database("restart");
    pg.psql(
        &db.name,
        "CREATE TABLE kept (id int PRIMARY KEY, v text); INSERT INTO kept VALUES (1, 'one'), (2, 'two')",
    );
    let before = pg.psql("postgres", "SELECT pg_postmaster_start_time()");
    pg.restart();
    let after = pg.psql("postgres", "SELECT pg_postmaster_start_time()");
    assert_ne!(before, after, "the server did not restart");
    assert_eq!(
        pg.psql(&db.name, "SELECT id, v FROM kept ORDER BY id"),
        "1|one\n2|two\n"
    );
    let ok = tcp_login(pg, &db.name, &db.password);
    assert!(ok.status.success(), "{}", text(&ok));
}

#[test]
fn stop_refuses_connections_until_start() {
    let Some(pg) = pg::shared() else { return };
    let _g = outage();
    let db = pg.fresh_database("outage");
    pg.psql(&db.name, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    pg.stop();
    assert!(!pg.is_ready());
    let refused = tcp_login(pg, &db.name, &db.password);
    assert!(!refused.status.success(), "{}", text(&refused));
    pg.start();
    assert!(pg.is_ready());
    assert_eq!(pg.psql(&db.name, "SELECT x FROM t").trim(), "1");
}

#[test]
fn a_private_server_is_removed_on_drop() {
    let Some(pg) = pg::private() else { return };
    let root = pg.socket_dir().to_owned();
    assert_eq!(pg.psql("postgres", "SELECT 2").trim(), "2");
    if let Some(shared) = pg::shared() {
        assert_ne!(shared.port(), pg.port());
    }
    drop(pg);
    assert!(!root.exists(), "{} is left", root.display());
}
