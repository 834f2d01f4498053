//! The cluster crash suite: three `ingestd run` nodes on one watch folder
//! and one PostgreSQL journal upload a mixed workload while, at random
//! moments, a random node is killed with SIGKILL (and restarted under the
//! same name at once, a little later, or after its lease ran out) or frozen
//! with SIGSTOP past its lease and thawed with SIGCONT. Ignored by default
//! (about a minute in a release build):
//!
//! ```sh
//! cargo test --release --test cluster_crash -- --ignored --nocapture
//! ```
//!
//! `CRASH_SEED` (default 1) picks the workload, the chunk size and every
//! moment; `CRASH_ROUNDS` (default 30) is the most kills and pauses before
//! the nodes are left to finish. The full logs of every node go to
//! `$TMPDIR/cluster_crash-seed-N.log` when the suite fails.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cluster::{cluster_on, Cluster};
use common::pg::{self, PgServer};
use common::{sha256, signal, stop_ok, write_random, Daemon, MIB};

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
/// The lease of `cluster_on`'s config.
const LEASE: Duration = Duration::from_secs(3);
/// `upload.concurrency` of `cluster_on`'s config: uploads in flight per node.
const CONCURRENCY: u64 = 2;
/// Per node.
const BANDWIDTH_MIB: u64 = 8;
/// A file of at most this size goes in one request.
const SINGLE_REQUEST: u64 = 5 * MIB;
/// How long the nodes may take to finish once the disruptions are over.
const FINISH: Duration = Duration::from_secs(300);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One node name's current process, if any.
enum Slot {
    Running(Daemon),
    /// Killed; started again (same name) at `at`.
    Dead {
        at: Instant,
    },
    /// SIGSTOPped; SIGCONT at `at`.
    Paused {
        daemon: Daemon,
        at: Instant,
    },
}

/// What happened, for the summary.
#[derive(Default)]
struct Tally {
    rounds: u64,
    kills: u64,
    restart_now: u64,
    restart_soon: u64,
    restart_past_lease: u64,
    pauses: u64,
}

/// The journal's view of the files, straight from PostgreSQL (cheap to poll).
struct JournalRow {
    name: String,
    state: String,
    video_id: Option<String>,
    sends_in_doubt: u32,
    last_error: Option<String>,
}

fn journal_rows(server: &PgServer, c: &Cluster) -> Vec<JournalRow> {
    let out = server.psql(
        &c.db.name,
        "SELECT convert_from(rel_path, 'UTF8'), state, coalesce(video_id, ''), sends_in_doubt, \
         replace(coalesce(last_error, ''), E'\\n', ' ') FROM files ORDER BY id",
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, '|').collect();
            let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            JournalRow {
                name: f[0].to_owned(),
                state: f[1].to_owned(),
                video_id: some(f[2]),
                sends_in_doubt: f[3].parse().unwrap(),
                last_error: f.get(4).and_then(|s| some(s)),
            }
        })
        .collect()
}

#[test]
#[ignore = "the cluster crash suite: run with --release -- --ignored --nocapture"]
fn three_nodes_killed_and_paused_at_random_upload_every_file_once() {
    let Some(server) = pg::shared() else {
        return;
    };
    let seed = env_u64("CRASH_SEED", 1);
    let max_rounds = env_u64("CRASH_ROUNDS", 30);
    let mut rng = fastrand::Rng::with_seed(seed);
    let chunk = [8, 10, 12, 16][rng.usize(0..4)] * MIB;
    println!(
        "cluster crash suite: seed {seed} (CRASH_SEED), at most {max_rounds} rounds (CRASH_ROUNDS)"
    );
    let c = cluster_on(
        server,
        &format!("{}MiB", chunk / MIB),
        &format!("bandwidth_limit = \"{BANDWIDTH_MIB}MiB\""),
    );

    // Three files over 40 MiB, eight chunked ones, and small ones sent in one
    // request each: 30 to 45 files.
    let n = rng.usize(30..=45);
    let sizes: Vec<u64> = (0..n)
        .map(|i| match i {
            0..=2 => rng.u64(41 * MIB..=56 * MIB),
            3..=10 => rng.u64(SINGLE_REQUEST + 1..=24 * MIB),
            _ => rng.u64(64 * 1024..=SINGLE_REQUEST),
        })
        .collect();
    let total: u64 = sizes.iter().sum();

    let mut slots: Vec<Slot> = NODES.iter().map(|n| Slot::Running(c.node(n))).collect();
    // Every process that ran, by node name: the logs outlive the processes.
    let mut history: Vec<(&str, Daemon)> = Vec::new();
    for s in &slots {
        if let Slot::Running(d) = s {
            common::cluster::up(d);
        }
    }
    let started = Instant::now();
    let files: Vec<PathBuf> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let p = c.env.media.join(format!("take-{i:03}.mov"));
            write_random(&p, size, seed * 1000 + i as u64);
            p
        })
        .collect();

    let mut tally = Tally::default();
    // Restarts refused: "the node name … is in use by another ingestd".
    let mut refused: Vec<String> = Vec::new();
    // Any other exit of a node nobody killed.
    let mut exited: Vec<String> = Vec::new();
    let mut next_action = Instant::now() + Duration::from_millis(rng.u64(300..1500));
    let mut next_poll = Instant::now();
    let all_done =
        |rows: &[JournalRow]| rows.len() == files.len() && rows.iter().all(|r| r.state == "done");
    let fail = |why: String, slots: &[Slot], history: &[(&str, Daemon)]| -> ! {
        let path = std::env::temp_dir().join(format!("cluster_crash-seed-{seed}.log"));
        let mut all = String::new();
        let mut excerpt = String::new();
        let live = slots.iter().zip(NODES).filter_map(|(s, n)| match s {
            Slot::Running(d) | Slot::Paused { daemon: d, .. } => Some((n, d)),
            Slot::Dead { .. } => None,
        });
        for (name, d) in history.iter().map(|(n, d)| (*n, d)).chain(live) {
            let log = d.log();
            all.push_str(&format!("===== {name} (pid {})\n{log}\n", d.child.id()));
            let notable: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            excerpt.push_str(&format!(
                "--- {name} (pid {}): {} warnings and errors, the last ones:\n{}\n",
                d.child.id(),
                notable.len(),
                notable[notable.len().saturating_sub(8)..].join("\n")
            ));
        }
        std::fs::write(&path, all).unwrap();
        panic!(
            "seed {seed}: {why}\nthe full logs: {}\n{excerpt}",
            path.display()
        );
    };

    // Kill and pause until every file is done or the rounds are spent.
    while tally.rounds < max_rounds {
        let now = Instant::now();
        if now >= next_poll {
            let rows = journal_rows(server, &c);
            if all_done(&rows) {
                break;
            }
            if let Some(r) = rows
                .iter()
                .find(|r| r.state == "failed" || r.state == "gone")
            {
                let why = format!("{} became {}: {:?}", r.name, r.state, r.last_error);
                fail(why, &slots, &history);
            }
            if !exited.is_empty() {
                fail(
                    format!("a node exited by itself: {}", exited.join("\n")),
                    &slots,
                    &history,
                );
            }
            next_poll = now + Duration::from_millis(250);
        }
        for (i, s) in slots.iter_mut().enumerate() {
            // A node that exited by itself: refused a restart under its own
            // name (counted, started again shortly), or a failure.
            if let Slot::Running(d) = s {
                if !d.running() {
                    let log = d.log();
                    let Slot::Running(d) = std::mem::replace(
                        s,
                        Slot::Dead {
                            at: now + Duration::from_millis(500),
                        },
                    ) else {
                        unreachable!()
                    };
                    history.push((NODES[i], d));
                    match log
                        .lines()
                        .find(|l| l.contains("is in use by another ingestd"))
                    {
                        Some(line) => refused.push(format!("{}: {line}", NODES[i])),
                        None => exited.push(format!("{}: {log}", NODES[i])),
                    }
                    continue;
                }
            }
            match s {
                Slot::Dead { at } if now >= *at => *s = Slot::Running(c.node(NODES[i])),
                Slot::Paused { daemon, at } if now >= *at => {
                    signal(&daemon.child, libc::SIGCONT);
                    let Slot::Paused { daemon, .. } = std::mem::replace(s, Slot::Dead { at: now })
                    else {
                        unreachable!()
                    };
                    *s = Slot::Running(daemon);
                }
                _ => {}
            }
        }
        if now >= next_action {
            next_action = now + Duration::from_millis(rng.u64(300..2500));
            let running: Vec<usize> = (0..slots.len())
                .filter(|&i| matches!(slots[i], Slot::Running(_)))
                .collect();
            if !running.is_empty() {
                let i = running[rng.usize(0..running.len())];
                tally.rounds += 1;
                let Slot::Running(mut d) = std::mem::replace(&mut slots[i], Slot::Dead { at: now })
                else {
                    unreachable!()
                };
                if rng.u8(0..100) < 25 {
                    // Frozen past its lease: the others take its files over.
                    signal(&d.child, libc::SIGSTOP);
                    tally.pauses += 1;
                    let at = now + LEASE + Duration::from_millis(rng.u64(500..3000));
                    slots[i] = Slot::Paused { daemon: d, at };
                } else {
                    d.child.kill().unwrap(); // SIGKILL
                    let _ = d.child.wait();
                    tally.kills += 1;
                    history.push((NODES[i], d));
                    let delay = match rng.u8(0..3) {
                        0 => {
                            tally.restart_now += 1;
                            Duration::ZERO
                        }
                        1 => {
                            tally.restart_soon += 1;
                            Duration::from_millis(rng.u64(200..2500))
                        }
                        _ => {
                            tally.restart_past_lease += 1;
                            LEASE + Duration::from_millis(rng.u64(500..3000))
                        }
                    };
                    if delay.is_zero() {
                        slots[i] = Slot::Running(c.node(NODES[i]));
                    } else {
                        slots[i] = Slot::Dead { at: now + delay };
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let disrupted_for = started.elapsed();

    // Then every node back, and let them finish.
    for (i, s) in slots.iter_mut().enumerate() {
        match std::mem::replace(s, Slot::Dead { at: Instant::now() }) {
            Slot::Running(d) => *s = Slot::Running(d),
            Slot::Dead { .. } => *s = Slot::Running(c.node(NODES[i])),
            Slot::Paused { daemon, .. } => {
                signal(&daemon.child, libc::SIGCONT);
                *s = Slot::Running(daemon);
            }
        }
    }
    let deadline = Instant::now() + FINISH;
    let rows = loop {
        let rows = journal_rows(server, &c);
        if all_done(&rows) {
            break rows;
        }
        if let Some(r) = rows
            .iter()
            .find(|r| r.state == "failed" || r.state == "gone")
        {
            let why = format!("{} became {}: {:?}", r.name, r.state, r.last_error);
            fail(why, &slots, &history);
        }
        if Instant::now() >= deadline {
            let left: Vec<String> = rows
                .iter()
                .filter(|r| r.state != "done")
                .map(|r| format!("{} {} {:?}", r.name, r.state, r.last_error))
                .collect();
            let why = format!(
                "not every file done {FINISH:?} after the last disruption: {} of {} journaled, left: {left:?}",
                rows.len(),
                files.len()
            );
            fail(why, &slots, &history);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let took = started.elapsed();
    // Nodes that exited by themselves while the others finished.
    for (i, s) in slots.iter_mut().enumerate() {
        if let Slot::Running(d) = s {
            if !d.running() {
                let log = d.log();
                match log
                    .lines()
                    .find(|l| l.contains("is in use by another ingestd"))
                {
                    Some(line) => refused.push(format!("{}: {line}", NODES[i])),
                    None => exited.push(format!("{}: {log}", NODES[i])),
                }
                let Slot::Running(d) = std::mem::replace(s, Slot::Dead { at: Instant::now() })
                else {
                    unreachable!()
                };
                history.push((NODES[i], d));
            }
        }
    }

    // Every file done, on the emulator's videoId, complete and byte-exact.
    let videos = c.env.videos();
    let status = c.rows();
    let mut problems = Vec::new();
    if !exited.is_empty() {
        problems.push(format!("a node exited by itself: {}", exited.join("\n")));
    }
    let mut complete: HashMap<&str, u32> = HashMap::new();
    let mut unfinished: HashMap<&str, u32> = HashMap::new();
    for v in &videos {
        let m = if v.complete {
            &mut complete
        } else {
            &mut unfinished
        };
        *m.entry(v.title.as_str()).or_default() += 1;
    }
    let names: Vec<&str> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    let foreign: Vec<&str> = videos
        .iter()
        .map(|v| v.title.as_str())
        .filter(|t| !names.contains(t))
        .collect();
    if !foreign.is_empty() {
        problems.push(format!("videos that are no file's: {foreign:?}"));
    }
    let mut in_doubt = 0;
    let mut extra_unfinished = 0;
    let mut duplicates = Vec::new();
    for (f, &name) in files.iter().zip(&names) {
        let size = std::fs::metadata(f).unwrap().len();
        let Some(row) = rows.iter().find(|r| r.name == name) else {
            problems.push(format!("{name}: not journaled"));
            continue;
        };
        in_doubt += row.sends_in_doubt;
        let cs = complete.get(name).copied().unwrap_or(0);
        let us = unfinished.get(name).copied().unwrap_or(0);
        extra_unfinished += us;
        if cs > 1 {
            duplicates.push((name, cs));
        }
        let Some(vid) = row.video_id.as_deref() else {
            problems.push(format!("{name}: done without a videoId"));
            continue;
        };
        let st = &status[f.to_str().unwrap()];
        if st["video_id"].as_str() != Some(vid) || st["state"] != "done" {
            problems.push(format!("{name}: status says {st}"));
        }
        match videos.iter().find(|v| v.video_id == vid) {
            None => problems.push(format!("{name}: its videoId {vid} is not at the emulator")),
            Some(v) if !v.complete => problems.push(format!("{name}: {vid} is not complete")),
            Some(v) if v.title != name => {
                problems.push(format!("{name}: {vid} is the video of {}", v.title))
            }
            Some(v) if v.sha256.as_deref() != Some(sha256(f).as_str()) => {
                problems.push(format!("{name}: {vid} differs from the file (SHA-256)"))
            }
            Some(_) => {}
        }
        // A chunked file is uploaded exactly once, whatever happened.
        if size > SINGLE_REQUEST && cs != 1 {
            problems.push(format!(
                "{name} ({size} bytes, chunked) has {cs} complete videos"
            ));
        }
        // Any extra video is a request the journal counted in doubt for
        // that very file (a creating request in flight at a kill or a
        // takeover), and the row says so.
        let extra = cs.saturating_sub(1) + us;
        if extra > row.sends_in_doubt {
            problems.push(format!(
                "{name}: {} duplicate(s) and {us} unfinished video(s), but only {} request(s) in doubt",
                cs.saturating_sub(1),
                row.sends_in_doubt
            ));
        }
        if extra > 0
            && !row
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("may also hold"))
        {
            problems.push(format!(
                "{name}: {extra} extra video(s), but its row does not say so: {:?}",
                row.last_error
            ));
        }
    }
    let stats = c.env.emulator.stats();
    if stats.videos_created != videos.len() as u64 {
        problems.push(format!(
            "the emulator created {} videos and lists {}",
            stats.videos_created,
            videos.len()
        ));
    }
    // Re-sent bytes: at most the chunk in flight of each upload a kill or a
    // pause interrupted, and one chunk more.
    let disruptions = tally.kills + tally.pauses;
    let resent = stats.body_bytes.saturating_sub(total);
    let bound = (disruptions * CONCURRENCY + 1) * chunk;
    if resent > bound {
        problems.push(format!(
            "{resent} bytes received beyond the files for {} kills and {} pauses (bound {bound})",
            tally.kills, tally.pauses
        ));
    }

    let mut all_logs: Vec<(&str, String)> = history.iter().map(|(n, d)| (*n, d.log())).collect();
    for (s, n) in slots.iter().zip(NODES) {
        if let Slot::Running(d) = s {
            all_logs.push((n, d.log()));
        }
    }
    let takeover_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("took over the uploads of a node"))
            .count()
    };
    let takeovers: usize = all_logs.iter().map(|(_, l)| takeover_lines(l)).sum();
    let lost: usize = all_logs
        .iter()
        .map(|(_, l)| l.matches("lease on the file was lost").count())
        .sum();
    let mut done_by: Vec<(&str, usize)> = NODES
        .iter()
        .map(|n| {
            let k = all_logs
                .iter()
                .filter(|(m, _)| m == n)
                .map(|(_, l)| l.matches("upload done").count())
                .sum();
            (*n, k)
        })
        .collect();
    done_by.sort();

    println!(
        "cluster crash suite (seed {seed}): {} files, {:.0} MiB ({} over 40 MiB), chunk {} MiB, \
         3 nodes at {BANDWIDTH_MIB} MiB/s each; {} rounds in {:.1}s: {} SIGKILLs (restarted at once {}, \
         after < lease {}, after > lease {}), {} SIGSTOP/SIGCONT past the lease; {takeovers} takeovers, \
         {lost} leases lost; every file done after {:.1}s",
        files.len(),
        total as f64 / MIB as f64,
        sizes.iter().filter(|&&s| s > 40 * MIB).count(),
        chunk / MIB,
        tally.rounds,
        disrupted_for.as_secs_f64(),
        tally.kills,
        tally.restart_now,
        tally.restart_soon,
        tally.restart_past_lease,
        tally.pauses,
        took.as_secs_f64()
    );
    println!(
        "  {} videos ({} complete) for {} files, {} of no file; requests in doubt {in_doubt}, \
         of which left an unfinished video {extra_unfinished}, a duplicate of a one-request file {} {duplicates:?}; \
         uploads done per node {done_by:?}",
        videos.len(),
        videos.iter().filter(|v| v.complete).count(),
        files.len(),
        foreign.len(),
        duplicates.iter().map(|(_, n)| n - 1).sum::<u32>(),
    );
    println!(
        "  bytes received {:.1} MiB for {:.1} MiB of files (ratio {:.3}); beyond the files {:.1} MiB \
         ({:.2} chunks), {:.1} MiB per kill or pause (bound {:.0} MiB)",
        stats.body_bytes as f64 / MIB as f64,
        total as f64 / MIB as f64,
        stats.body_bytes as f64 / total as f64,
        resent as f64 / MIB as f64,
        resent as f64 / chunk as f64,
        resent as f64 / MIB as f64 / disruptions.max(1) as f64,
        bound as f64 / MIB as f64,
    );
    println!(
        "  restarts refused (\"node name … in use\", the killed process's pid): {}{}",
        refused.len(),
        refused
            .first()
            .map(|l| format!(", the first: {l}"))
            .unwrap_or_default()
    );
    // A node killed and started again at once on the same host, under the
    // same name, must run: the process the journal names is dead.
    if !refused.is_empty() {
        problems.push(format!(
            "{} restart(s) under the same name refused after a SIGKILL:\n{}",
            refused.len(),
            refused.join("\n")
        ));
    }
    if !problems.is_empty() {
        fail(problems.join("\n"), &slots, &history);
    }
    for s in slots {
        if let Slot::Running(d) = s {
            stop_ok(d);
        }
    }
}
