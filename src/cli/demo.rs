//! `ingestd demo`: the whole pipeline on one machine, with nothing to
//! configure: a built-in emulator on loopback, a temporary watch folder, the
//! daemon, sample files arriving the way cameras write them, and a check of
//! every byte at the end.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::status;
use crate::config::{
    AfterUpload, ApiSettings, HookEvent, HookSettings, HookTarget, JournalSettings, Settings,
    TokenSource, UploadSettings, UploadToken, WatchSettings,
};
use crate::daemon::{self, DaemonError};
use crate::emulator::{Emulator, EmulatorOptions};
use crate::journal::{FileState, Journal};

const MIB: u64 = 1024 * 1024;
const DEMO_TOKEN: &str = "to1demoToken0000000000000";
/// How long the demo waits for everything before it gives up.
const DEMO_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// How long the emulator encodes a video before it plays.
const ENCODING_TIME: Duration = Duration::from_secs(3);

/// A command hook appending each event's JSON, one per line, to `events`:
/// what a site's script would send on to its MAM or chat.
fn demo_hook(events: &Path) -> HookSettings {
    HookSettings {
        key: "demo-printer".into(),
        named: true,
        events: HookEvent::ALL.to_vec(),
        target: HookTarget::Command {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                // One write per event: two deliveries at once never mix.
                r#"printf '%s\n' "$(cat)" >> "$1""#.into(),
                "demo-hook".into(),
                events.display().to_string(),
            ],
        },
        timeout: Duration::from_secs(10),
    }
}

/// The SHA-256 of a file, hex, read in blocks.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn append_random(path: &Path, size: u64, rng: &mut fastrand::Rng) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut f = std::io::BufWriter::new(f);
    let mut block = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        rng.fill(&mut block);
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()
}

/// Runs the demo; true when every file was uploaded once and verified.
pub async fn run(shutdown: CancellationToken) -> Result<bool, DemoError> {
    let dir = std::env::temp_dir().join(format!("ingestd-demo-{}", std::process::id()));
    let result = run_in(&dir, shutdown).await;
    // The demo leaves nothing behind.
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// What the camera does, step by step, with the pause before each step.
enum Step {
    Write(&'static str, u64),
    Append(&'static str, u64),
    Rename(&'static str, &'static str),
    Pause(Duration),
}

fn script() -> Vec<Step> {
    use Step::*;
    let mut steps = vec![
        Write("interview.mp4", 3 * MIB / 2),
        Write("b-roll.mov", 23 * MIB),
        Write("notes.txt", 2_000),
        Write(".DS_Store", 6_148),
        Write("camera-2.mp4.part", 4 * MIB),
        Pause(Duration::from_millis(300)),
        Append("camera-2.mp4.part", 3 * MIB),
        Rename("camera-2.mp4.part", "camera-2.mp4"),
    ];
    // A recording still being written: it grows for a few seconds.
    for _ in 0..8 {
        steps.push(Append("slow recording.mxf", MIB));
        steps.push(Pause(Duration::from_millis(400)));
    }
    steps
}

/// The files that must end uploaded, and those that must be ignored.
const EXPECTED: [&str; 4] = [
    "interview.mp4",
    "b-roll.mov",
    "camera-2.mp4",
    "slow recording.mxf",
];

async fn run_in(dir: &Path, shutdown: CancellationToken) -> Result<bool, DemoError> {
    let media = dir.join("capture");
    std::fs::create_dir_all(&media).map_err(io("create the demo folder"))?;
    let emulator = Emulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        EmulatorOptions {
            data_dir: dir.join("emulator"),
            tokens: vec![DEMO_TOKEN.to_owned()],
            api_keys: Vec::new(),
            rate_limit: 100,
            rate_window: Duration::from_secs(60),
        },
    )
    .await
    .map_err(io("start the emulator"))?;
    // Like api.video, the emulator takes a while to encode a video before
    // its HLS manifest answers 200: the daemon watches for that.
    emulator.set_encoding_time(ENCODING_TIME);
    let base_url = emulator.base_url().parse().map_err(|e| DemoError::Io {
        what: "parse the emulator URL".into(),
        source: std::io::Error::other(e),
    })?;
    let events = dir.join("hook-events.jsonl");
    let mut watch = WatchSettings::new(&media);
    watch.settle = Duration::from_secs(1);
    watch.after_upload = AfterUpload::Keep;
    watch.sidecar = true;
    let settings = Settings {
        source: None,
        api: ApiSettings {
            base_url,
            token: Some((UploadToken::new(DEMO_TOKEN), TokenSource::Inline)),
            chunk_size: 8 * MIB,
        },
        journal: JournalSettings {
            path: dir.join("journal.db"),
            postgres: None,
        },
        upload: UploadSettings {
            concurrency: 2,
            bandwidth_limit: Default::default(),
            in_doubt: Default::default(),
            sha256: true,
            playable_timeout: Duration::from_secs(60),
        },
        log: Default::default(),
        watches: vec![watch],
        metrics: Default::default(),
        hooks: vec![demo_hook(&events)],
    };
    println!("ingestd demo: the whole pipeline on this machine, nothing leaves it.\n");
    println!("  api.video emulator   {}", emulator.base_url());
    println!(
        "  watch folder         {}  (settle 1s, sidecars on)",
        media.display()
    );
    println!("  journal              {}", settings.journal.path.display());
    println!("  chunks               8 MiB, 2 uploads at a time");
    println!(
        "  encoding             {}s at the emulator before a video plays",
        ENCODING_TIME.as_secs()
    );
    println!(
        "  hook                 a command appending each event's JSON to {}\n",
        events.display()
    );

    let stop = shutdown.child_token();
    let daemon = tokio::spawn(daemon::run(
        settings.clone(),
        daemon::Reloads::none(),
        stop.clone(),
    ));

    // The camera writes into the folder while the daemon watches.
    let start = Instant::now();
    let folder = media.clone();
    let camera = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut rng = fastrand::Rng::with_seed(7);
        for step in script() {
            match step {
                Step::Write(name, size) | Step::Append(name, size) => {
                    append_random(&folder.join(name), size, &mut rng)?
                }
                Step::Rename(from, to) => std::fs::rename(folder.join(from), folder.join(to))?,
                Step::Pause(d) => std::thread::sleep(d),
            }
        }
        Ok(())
    });
    println!("  time   file                  state");
    let mut seen: BTreeMap<String, FileState> = BTreeMap::new();
    let mut playable_seen: Vec<i64> = Vec::new();
    let mut hook_lines = 0;
    let mut camera = Some(camera);
    let all_done = loop {
        if let Some(c) = camera.as_mut().filter(|c| c.is_finished()) {
            c.await
                .map_err(|e| DemoError::Io {
                    what: "write the sample files".into(),
                    source: std::io::Error::other(e),
                })?
                .map_err(io("write the sample files"))?;
            camera = None;
        }
        let (rows, playable) = match Journal::open_configured_read_only(&settings.journal) {
            Ok(j) => (
                j.list(None).unwrap_or_default(),
                j.playable_states().unwrap_or_default(),
            ),
            Err(_) => Default::default(),
        };
        let at = start.elapsed().as_secs_f64();
        for r in &rows {
            let name = r.identity.rel_path.display().to_string();
            if seen.get(&name) != Some(&r.state) {
                let detail = match (r.state, &r.video_id) {
                    (FileState::Done, Some(v)) => format!("→ {v}"),
                    (FileState::Uploading, _) if r.bytes_uploaded > 0 => format!(
                        "{} of {}",
                        bytesize::ByteSize(r.bytes_uploaded),
                        bytesize::ByteSize(r.identity.size)
                    ),
                    (FileState::Settling, _) => {
                        format!("{} so far", bytesize::ByteSize(r.identity.size))
                    }
                    _ => String::new(),
                };
                println!(
                    "  {:>5.1}s {:<21} {:<10}{}",
                    start.elapsed().as_secs_f64(),
                    name,
                    r.state.as_str(),
                    detail
                );
                seen.insert(name, r.state);
            }
            if let Some((Some(when), _)) = playable.get(&r.id) {
                if !playable_seen.contains(&r.id) {
                    playable_seen.push(r.id);
                    let after = r.done_at.map_or(0, |d| (when - d).max(0));
                    println!(
                        "  {at:>5.1}s {:<21} {:<10}the HLS manifest answers, {:.1}s after the upload",
                        r.identity.rel_path.display().to_string(),
                        "playable",
                        after as f64 / 1000.0
                    );
                }
            }
        }
        let delivered = std::fs::read_to_string(&events).unwrap_or_default();
        // Only whole lines: a hook may be writing the next one.
        let whole = delivered.rfind('\n').map_or("", |end| &delivered[..end]);
        for line in whole.lines().skip(hook_lines) {
            hook_lines += 1;
            let event: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let path = event["file"]["path"].as_str().unwrap_or("");
            println!(
                "  {at:>5.1}s {:<21} {:<10}event {}",
                Path::new(path)
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                "hook ←",
                event["event"].as_str().unwrap_or("?"),
            );
        }
        let done = EXPECTED.iter().all(|n| {
            rows.iter().any(|r| {
                r.identity.rel_path == Path::new(n)
                    && r.state == FileState::Done
                    && matches!(playable.get(&r.id), Some((Some(_), _)))
            })
        }) && hook_lines >= 2 * EXPECTED.len();
        if done && camera.is_none() {
            break true;
        }
        if start.elapsed() > DEMO_DEADLINE || stop.is_cancelled() || daemon.is_finished() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.cancel();
    match daemon.await {
        Ok(r) => r?,
        Err(e) => {
            return Err(DemoError::Io {
                what: "run the daemon".into(),
                source: std::io::Error::other(e),
            })
        }
    }
    if !all_done {
        println!("\nThe demo did not finish in time: see the log above.");
        emulator.shutdown().await;
        return Ok(false);
    }

    println!("\nEvery upload checked at the emulator (SHA-256 of the file there vs here):");
    let videos = emulator.videos();
    let journal = Journal::open_configured_read_only(&settings.journal)?;
    let rows = journal.list(None)?;
    let mut ok = true;
    for name in EXPECTED {
        let Some(row) = rows
            .iter()
            .find(|r| r.identity.rel_path == Path::new(name) && r.state == FileState::Done)
        else {
            ok = false;
            continue;
        };
        let path: PathBuf = row.path();
        let local = tokio::task::spawn_blocking(move || sha256_file(&path))
            .await
            .map_err(|e| DemoError::Io {
                what: "hash".into(),
                source: std::io::Error::other(e),
            })?
            .map_err(io(format!("hash {name}")))?;
        let remote = videos
            .iter()
            .find(|v| Some(&v.video_id) == row.video_id.as_ref())
            .and_then(|v| v.sha256.clone());
        let same = remote.as_deref() == Some(local.as_str());
        ok &= same;
        println!(
            "  {} {:<21} {}  {}…",
            if same { "✔" } else { "✘" },
            name,
            row.video_id.as_deref().unwrap_or("-"),
            &local[..16]
        );
    }
    let complete = videos.iter().filter(|v| v.complete).count();
    println!(
        "  {} complete videos at the emulator for {} files: {}",
        complete,
        EXPECTED.len(),
        if complete == EXPECTED.len() {
            "each uploaded exactly once"
        } else {
            "MISMATCH"
        }
    );
    ok &= complete == EXPECTED.len();
    let ignored: Vec<&str> = ["notes.txt", ".DS_Store", "camera-2.mp4.part"]
        .into_iter()
        .filter(|n| !rows.iter().any(|r| r.identity.rel_path == Path::new(n)))
        .collect();
    println!(
        "  never journaled, as they should not be: {}",
        ignored.join(", ")
    );

    let playable = journal.playable_states()?;
    println!("\n$ ingestd status\n{}", status::to_table(&rows, &playable));
    let sidecar = media.join("interview.mp4.ingestd.json");
    if let Ok(text) = std::fs::read_to_string(&sidecar) {
        println!("$ cat {}\n{}", sidecar.display(), text.trim_end());
    }
    emulator.shutdown().await;
    if ok {
        println!("\nAll files uploaded once, byte for byte. Next: config.example.toml and `ingestd --help`.");
    } else {
        println!("\nSome files did not verify: see above.");
    }
    Ok(ok)
}
