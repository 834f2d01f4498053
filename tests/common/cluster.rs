//! Several `ingestd run` nodes on one watch folder and one PostgreSQL
//! journal: the shared world of `tests/cluster.rs` and
//! `tests/cluster_crash.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::pg::{self, PgDb, PgServer};
use super::{sha256, toml_path, wait_until, watch, write_random, Daemon, Env};

/// How long a cluster may take to do what a test waits for.
pub const LONG: Duration = Duration::from_secs(120);

/// A shared journal in a fresh database, the emulator, and a watch folder
/// every node watches.
pub struct Cluster {
    pub env: Env,
    pub db: PgDb,
}

/// A cluster whose journal is a fresh database of `server`, with
/// `chunk_size = chunk`, a lease of 3 s, and `extra` in `[upload]`.
pub fn cluster_on(server: &PgServer, chunk: &str, extra: &str) -> Cluster {
    let env = Env::new();
    let db = server.fresh_database("cluster");
    let password_file = env.dir.path().join("journal-password");
    std::fs::write(&password_file, format!("{}\n", db.password)).unwrap();
    let text = format!(
        "[api]\nbase_url = \"{}\"\ntoken_file = {}\nchunk_size = \"{chunk}\"\n\n\
         [journal]\nurl = \"{}\"\npassword_file = {}\nlease = \"3s\"\n\n\
         [upload]\nconcurrency = 2\n{extra}\n{}",
        env.emulator.base_url(),
        toml_path(&env.token_file),
        db.url,
        toml_path(&password_file),
        watch(&env.media, "300ms", ""),
    );
    std::fs::write(&env.config, text).unwrap();
    Cluster { env, db }
}

/// [`cluster_on`] the shared server; `None` when PostgreSQL is not installed.
pub fn cluster(chunk: &str, extra: &str) -> Option<Cluster> {
    Some(cluster_on(pg::shared()?, chunk, extra))
}

impl Cluster {
    /// `ingestd run` as node `name`.
    pub fn node(&self, name: &str) -> Daemon {
        let child = self
            .env
            .cmd(&["run"])
            .env("INGESTD_JOURNAL__NODE", name)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon::from_child(child)
    }

    /// `status --json`, by path.
    pub fn rows(&self) -> BTreeMap<String, serde_json::Value> {
        self.env
            .status()
            .into_iter()
            .map(|r| (r["path"].as_str().unwrap().to_owned(), r))
            .collect()
    }

    pub fn all_done(&self, n: usize) -> bool {
        let rows = self.rows();
        rows.len() == n && rows.values().all(|r| r["state"] == "done")
    }

    /// Every file of `files` is on the emulator once, complete and
    /// byte-exact, and nothing else is.
    pub fn assert_each_once(&self, files: &[PathBuf]) {
        let videos = self.env.videos();
        let mut by_title: BTreeMap<String, usize> = BTreeMap::new();
        for v in &videos {
            *by_title.entry(v.title.clone()).or_default() += 1;
        }
        assert_eq!(
            videos.len(),
            files.len(),
            "one video per file, no duplicate: {by_title:?}"
        );
        let rows = self.rows();
        for f in files {
            let row = &rows[f.to_str().unwrap()];
            let vid = row["video_id"].as_str().unwrap();
            let v = self.env.video(vid);
            assert!(v.complete, "{f:?}: {v:?}");
            assert_eq!(v.sha256.as_deref(), Some(sha256(f).as_str()), "{f:?}");
        }
    }
}

/// `clip-NNN.mp4` in `dir`, one per size, of pseudo-random bytes.
pub fn files(dir: &Path, sizes: &[u64]) -> Vec<PathBuf> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let p = dir.join(format!("clip-{i:03}.mp4"));
            write_random(&p, size, i as u64 + 1);
            p
        })
        .collect()
}

/// Waits until `d` runs (or has already said why it cannot).
pub fn up(d: &Daemon) {
    wait_until(LONG, || {
        let log = d.log();
        log.contains("ingestd running") || log.contains("ingestd: ")
    });
    assert!(d.log().contains("ingestd running"), "{}", d.log());
}
