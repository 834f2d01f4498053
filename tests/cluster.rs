//! Several `ingestd run` nodes on one watch folder and one PostgreSQL
//! journal (a real server, started by the tests): every file uploaded once,
//! byte-exact; a node killed mid-upload is finished by another on the same
//! videoId; a node paused past its lease writes and sends nothing more; the
//! scanning leader killed is replaced; the database restarted under load.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::cluster::{cluster, cluster_on, files, up, Cluster, LONG};
use common::pg;
use common::{signal, wait_until, write_random, Daemon, MIB};
use ingestd::emulator::Fault;

#[test]
fn three_nodes_upload_every_file_once_and_share_the_work() {
    let Some(c) = cluster("8MiB", "") else {
        return;
    };
    // Latency on the first few hundred requests, so the nodes overlap.
    c.env
        .emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(40))); 300]);
    let nodes: Vec<Daemon> = ["capture-01", "capture-02", "capture-03"]
        .iter()
        .map(|n| c.node(n))
        .collect();
    for d in &nodes {
        up(d);
    }
    let mut sizes = vec![41 * MIB, 42 * MIB, 45 * MIB];
    sizes.extend((0..57).map(|i| 256 * 1024 + i * 4096));
    let files = files(&c.env.media, &sizes);
    assert!(
        wait_until(LONG, || c.all_done(files.len())),
        "not all done: {:?}\n{}",
        c.rows()
            .values()
            .filter(|r| r["state"] != "done")
            .collect::<Vec<_>>(),
        nodes
            .iter()
            .map(|d| d.log())
            .collect::<Vec<_>>()
            .join("\n----\n")
    );
    c.assert_each_once(&files);
    let per_node: Vec<usize> = nodes.iter().map(|d| d.count("upload done")).collect();
    assert_eq!(per_node.iter().sum::<usize>(), files.len(), "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "one node did everything: {per_node:?}"
    );
    // One node scanned the folder; status names the node of each file.
    let scanners = nodes
        .iter()
        .filter(|d| d.count("this node now scans the folder") > 0)
        .count();
    assert_eq!(scanners, 1);
    let named: BTreeSet<String> = c
        .rows()
        .values()
        .map(|r| r["node"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        named.iter().all(|n| n.starts_with("capture-0")),
        "{named:?}"
    );
    for d in nodes {
        common::stop_ok(d);
    }
}

/// One large file, sent slowly by `first`; the row once it has progress.
fn started_upload(c: &Cluster, first: &Daemon) -> (PathBuf, String) {
    up(first);
    let file = files(&c.env.media, &[48 * MIB]).remove(0);
    let key = file.to_str().unwrap().to_owned();
    assert!(
        wait_until(LONG, || c.rows().get(&key).is_some_and(|r| r
            ["bytes_uploaded"]
            .as_u64()
            .unwrap_or(0)
            > 0)),
        "never started: {:?}\n{}",
        c.rows(),
        first.log()
    );
    let vid = c.rows()[&key]["video_id"].as_str().unwrap().to_owned();
    (file, vid)
}

#[test]
fn a_node_killed_mid_upload_is_finished_by_another_on_the_same_video() {
    let Some(c) = cluster("8MiB", "bandwidth_limit = \"8MiB\"") else {
        return;
    };
    let a = c.node("node-a");
    let (file, vid) = started_upload(&c, &a);
    let b = c.node("node-b");
    up(&b);
    signal(&a.child, libc::SIGKILL);
    let key = file.to_str().unwrap().to_owned();
    assert!(
        wait_until(LONG, || c.all_done(1)),
        "{:?}\n{}",
        c.rows(),
        b.log()
    );
    let row = &c.rows()[&key];
    assert_eq!(row["video_id"], vid.as_str(), "the same video");
    assert_eq!(row["node"], "node-b");
    c.assert_each_once(std::slice::from_ref(&file));
    // At most the chunk in flight was sent twice.
    let size = 48 * MIB;
    let sent = c.env.emulator.stats().body_bytes;
    assert!(sent <= size + 8 * MIB + MIB, "sent {sent} for {size}");
    assert!(b.log().contains("took over the uploads"), "{}", b.log());
    common::stop_ok(b);
}

#[test]
fn a_node_paused_past_its_lease_writes_and_sends_nothing_more() {
    let Some(c) = cluster("5MiB", "bandwidth_limit = \"5MiB\"") else {
        return;
    };
    let a = c.node("node-a");
    let (file, vid) = started_upload(&c, &a);
    signal(&a.child, libc::SIGSTOP);
    let b = c.node("node-b");
    let key = file.to_str().unwrap().to_owned();
    assert!(
        wait_until(LONG, || c.rows()[&key]["node"] == "node-b"),
        "never taken over: {:?}\n{}",
        c.rows(),
        b.log()
    );
    signal(&a.child, libc::SIGCONT);
    assert!(
        wait_until(LONG, || c.all_done(1)),
        "{:?}\n{}\n----\n{}",
        c.rows(),
        a.log(),
        b.log()
    );
    assert_eq!(c.rows()[&key]["video_id"], vid.as_str());
    c.assert_each_once(std::slice::from_ref(&file));
    assert!(
        wait_until(Duration::from_secs(20), || a
            .log()
            .contains("lease on it was lost")
            || a.log().contains("lease on the file was lost")),
        "node-a never noticed:\n{}",
        a.log()
    );
    assert_eq!(a.count("upload done"), 0, "{}", a.log());
    common::stop_ok(a);
    common::stop_ok(b);
}

#[test]
fn the_scanning_leader_killed_is_replaced_and_no_file_is_missed_or_doubled() {
    let Some(c) = cluster("8MiB", "") else {
        return;
    };
    let sizes: Vec<u64> = (0..150).map(|i| 64 * 1024 + i).collect();
    let files = files(&c.env.media, &sizes);
    let a = c.node("node-a");
    assert!(
        a.wait_log("this node now scans the folder", LONG),
        "{}",
        a.log()
    );
    let b = c.node("node-b");
    up(&b);
    signal(&a.child, libc::SIGKILL);
    assert!(
        b.wait_log("this node now scans the folder", LONG),
        "node-b never took over the scan:\n{}",
        b.log()
    );
    // A file dropped after the leader died is found by the new one.
    let late = c.env.media.join("late.mp4");
    write_random(&late, 100_000, 999);
    let mut all = files.clone();
    all.push(late);
    assert!(
        wait_until(LONG, || c.all_done(all.len())),
        "{:?}\n{}",
        c.rows()
            .values()
            .filter(|r| r["state"] != "done")
            .collect::<Vec<_>>(),
        b.log()
    );
    c.assert_each_once(&all);
    common::stop_ok(b);
}

#[test]
fn the_database_restarted_under_load_pauses_and_resumes_the_nodes() {
    // A server of this test's own: restarting the shared one would
    // disturb every other test of this binary.
    let Some(server) = pg::private() else {
        return;
    };
    let c = cluster_on(&server, "5MiB", "bandwidth_limit = \"8MiB\"");
    let a = c.node("node-a");
    let b = c.node("node-b");
    for d in [&a, &b] {
        up(d);
    }
    let sizes: Vec<u64> = (0..12).map(|i| 6 * MIB + i * 1000).collect();
    let files = files(&c.env.media, &sizes);
    assert!(wait_until(LONG, || c
        .rows()
        .values()
        .any(|r| r["state"] == "done")));
    server.restart();
    assert!(
        wait_until(LONG, || c.all_done(files.len())),
        "{:?}\n{}\n----\n{}",
        c.rows(),
        a.log(),
        b.log()
    );
    c.assert_each_once(&files);
    let logs = format!("{}\n{}", a.log(), b.log());
    assert!(
        logs.contains("the journal's database answers again"),
        "no node noticed the restart:\n{logs}"
    );
    common::stop_ok(a);
    common::stop_ok(b);
}

#[test]
fn health_says_the_database_is_away_and_recovers_with_it() {
    let Some(server) = pg::private() else {
        return;
    };
    let port = common::free_port();
    let c = cluster_on(
        &server,
        "8MiB",
        &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let a = c.node("node-a");
    up(&a);
    assert!(wait_until(LONG, || common::http_get(port, "/healthz")
        .is_some_and(|(code, _)| code == 200)));
    server.stop();
    let mut body = String::new();
    assert!(
        wait_until(LONG, || match common::http_get(port, "/healthz") {
            Some((503, b)) => {
                body = b;
                true
            }
            _ => false,
        }),
        "{}",
        a.log()
    );
    assert!(
        body.contains("journal's database does not answer"),
        "{body}"
    );
    assert_eq!(
        a.count("waits for its database"),
        1,
        "said once:\n{}",
        a.log()
    );
    server.start();
    assert!(
        wait_until(LONG, || common::http_get(port, "/healthz")
            .is_some_and(|(code, _)| code == 200)),
        "{}",
        a.log()
    );
    // Work goes on after it.
    let f = files(&c.env.media, &[3 * MIB]);
    assert!(wait_until(LONG, || c.all_done(1)), "{}", a.log());
    c.assert_each_once(&f);
    common::stop_ok(a);
}

#[test]
fn a_second_node_with_the_same_name_refuses_to_start() {
    let Some(c) = cluster("8MiB", "") else {
        return;
    };
    let a = c.node("capture-01");
    up(&a);
    let twin = c.node("capture-01");
    let (code, log) = twin.wait(LONG);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("\"capture-01\" is in use by another ingestd")
            && log.contains("INGESTD_JOURNAL__NODE"),
        "{log}"
    );
    // status --nodes lists the one that runs.
    let out = c.env.run(&["status", "--nodes", "--json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes[0]["node"], "capture-01");
    common::stop_ok(a);
}

#[test]
fn a_wrong_url_a_refused_password_or_a_foreign_database_is_a_clear_error() {
    let Some(server) = pg::shared() else {
        return;
    };
    let c = cluster_on(server, "8MiB", "");
    let config = std::fs::read_to_string(&c.env.config).unwrap();
    let password_file = c.env.dir.path().join("journal-password");
    let password = std::fs::read_to_string(&password_file).unwrap();
    let run = |what: &str| {
        let out = c.env.run(&["run", "--once"]);
        let text = common::text(&out);
        assert!(
            !text.contains(password.trim()),
            "{what}: the password shown:\n{text}"
        );
        let check = c.env.run(&["check-config"]);
        let checked = common::text(&check);
        assert!(
            !checked.contains(password.trim()),
            "{what}: check-config shows the password"
        );
        (out.status.code(), text, check.status.code(), checked)
    };
    // Nothing listens on that port.
    let dead = common::free_port();
    let url =
        c.db.url
            .replace(&format!(":{}/", server.port()), &format!(":{dead}/"));
    std::fs::write(&c.env.config, config.replace(&c.db.url, &url)).unwrap();
    let (code, text, check, checked) = run("no server");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("cannot reach the journal's database"),
        "{text}"
    );
    assert_eq!(check, Some(1), "{checked}");
    assert!(checked.contains("check that the server runs"), "{checked}");
    // A refused password.
    std::fs::write(&c.env.config, &config).unwrap();
    std::fs::write(&password_file, "not-the-password\n").unwrap();
    let (code, text, check, checked) = run("wrong password");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("journal.password_file"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    assert_eq!(check, Some(1), "{checked}");
    // A database of another program: refused, left untouched.
    std::fs::write(&password_file, &password).unwrap();
    server.psql(
        &c.db.name,
        "CREATE TABLE invoices (id int); GRANT ALL ON invoices TO ingestd;",
    );
    let (code, text, _, checked) = run("foreign");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is not an ingestd journal"), "{text}");
    assert!(checked.contains("is not an ingestd journal"), "{checked}");
    assert_eq!(
        server
            .psql(
                &c.db.name,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            .trim(),
        "1"
    );
}

#[test]
fn the_account_rate_limit_is_shared_by_the_nodes_through_the_servers_headers() {
    let Some(c) = cluster("8MiB", "") else {
        return;
    };
    // Few requests per window for the whole account: the nodes together
    // must keep to it, every file still uploaded once.
    c.env.emulator.set_rate_limit(12, Duration::from_secs(2));
    let nodes: Vec<Daemon> = ["n1", "n2", "n3"].iter().map(|n| c.node(n)).collect();
    for d in &nodes {
        up(d);
    }
    let sizes: Vec<u64> = (0..30).map(|i| 100_000 + i).collect();
    let files = files(&c.env.media, &sizes);
    assert!(
        wait_until(LONG, || c.all_done(files.len())),
        "{:?}",
        c.rows()
            .values()
            .filter(|r| r["state"] != "done")
            .collect::<Vec<_>>()
    );
    c.assert_each_once(&files);
    let stats = c.env.emulator.stats();
    let refused = stats.responses_by_status.get(&429).copied().unwrap_or(0);
    // Each node may meet the end of a window with its requests in flight.
    assert!(
        refused <= 3 * 2 * (files.len() as u64 / 12 + 1),
        "{refused} requests refused with 429: {stats:?}"
    );
    for d in nodes {
        common::stop_ok(d);
    }
}

/// The target: 10,000 files dropped at once into a folder three nodes
/// watch, every one journaled and uploaded exactly once. Ignored by default
/// (a minute or two in a release build):
/// `cargo test --release --test cluster -- --ignored ten_thousand --nocapture`.
#[test]
#[ignore]
fn ten_thousand_files_dropped_at_once_on_three_nodes_are_each_uploaded_once() {
    let Some(c) = cluster("8MiB", "") else {
        return;
    };
    let n: usize = std::env::var("CLUSTER_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let nodes: Vec<Daemon> = ["n1", "n2", "n3"].iter().map(|n| c.node(n)).collect();
    for d in &nodes {
        up(d);
    }
    let started = std::time::Instant::now();
    let staging = c.env.dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let p = staging.join(format!("f{i:05}.mp4"));
        write_random(&p, 2048 + (i as u64 % 512), i as u64);
        files.push(p);
    }
    // Dropped at once: a rename of each into the watched folder.
    let files: Vec<PathBuf> = files
        .iter()
        .map(|p| {
            let to = c.env.media.join(p.file_name().unwrap());
            std::fs::rename(p, &to).unwrap();
            to
        })
        .collect();
    let dropped = started.elapsed();
    let server = pg::shared().unwrap();
    let done = || -> usize {
        server
            .psql(
                &c.db.name,
                "SELECT count(*) FROM files WHERE state = 'done'",
            )
            .trim()
            .parse()
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(600), || done() == n),
        "{} of {n} done",
        done()
    );
    let took = started.elapsed();
    let rows = server.psql(&c.db.name, "SELECT count(*) FROM files");
    assert_eq!(rows.trim(), n.to_string(), "each file journaled once");
    let videos = c.env.videos();
    assert_eq!(videos.len(), n, "one video per file");
    let by_title: BTreeSet<&str> = videos.iter().map(|v| v.title.as_str()).collect();
    assert_eq!(by_title.len(), n, "no file uploaded twice");
    assert!(videos.iter().all(|v| v.complete));
    let per_node: Vec<usize> = nodes.iter().map(|d| d.count("upload done")).collect();
    assert_eq!(per_node.iter().sum::<usize>(), n, "{per_node:?}");
    eprintln!(
        "{n} files dropped in {:.1}s, all uploaded once in {:.1}s ({:.0} files/s); per node {per_node:?}",
        dropped.as_secs_f64(),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    drop(files);
    for d in nodes {
        common::stop_ok(d);
    }
}
