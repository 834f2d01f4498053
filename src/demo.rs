//! `ingestd demo`: the whole upload pipeline on one machine, with nothing to
//! configure: a built-in emulator on loopback, a temporary folder of sample
//! files, the journal, the workers, and a check of every byte at the end.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{
    ApiSettings, JournalSettings, Settings, TokenSource, UploadSettings, UploadToken,
};
use crate::daemon::{self, DaemonError};
use crate::emulator::{Emulator, EmulatorOptions};
use crate::journal::Journal;
use crate::status;

const MIB: u64 = 1024 * 1024;
const DEMO_TOKEN: &str = "to1demoToken0000000000000";

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

/// The SHA-256 of a file, hex, read in blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
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

fn write_sample(path: &Path, size: u64, rng: &mut fastrand::Rng) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
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

/// Runs the demo; true when every file was uploaded and verified.
pub async fn run(shutdown: CancellationToken) -> Result<bool, DemoError> {
    let dir = std::env::temp_dir().join(format!("ingestd-demo-{}", std::process::id()));
    let result = run_in(&dir, shutdown).await;
    // The demo leaves nothing behind.
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path, shutdown: CancellationToken) -> Result<bool, DemoError> {
    let media = dir.join("capture");
    let data = dir.join("emulator");
    std::fs::create_dir_all(&media).map_err(io("create the demo folder"))?;
    let emulator = Emulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        EmulatorOptions {
            data_dir: data,
            tokens: vec![DEMO_TOKEN.to_owned()],
            rate_limit: 100,
            rate_window: std::time::Duration::from_secs(60),
        },
    )
    .await
    .map_err(io("start the emulator"))?;
    println!("▶ api.video emulator listening on {}", emulator.base_url());

    let mut rng = fastrand::Rng::with_seed(7);
    let samples: [(&str, u64); 4] = [
        ("interview.mp4", 3 * MIB / 2),
        ("b-roll.mov", 23 * MIB),
        ("drone shot.mkv", 9 * MIB + 12_345),
        ("empty.mp4", 0),
    ];
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, size) in samples {
        let p = media.join(name);
        write_sample(&p, size, &mut rng).map_err(io(format!("write {}", p.display())))?;
        println!("▶ wrote {} ({})", p.display(), bytesize::ByteSize(size));
        files.push(p);
    }

    let base_url = match emulator.base_url().parse() {
        Ok(u) => u,
        Err(e) => {
            return Err(DemoError::Io {
                what: "parse the emulator URL".into(),
                source: std::io::Error::other(e),
            })
        }
    };
    let settings = Settings {
        source: None,
        api: ApiSettings {
            base_url,
            token: Some((UploadToken::new(DEMO_TOKEN), TokenSource::Inline)),
            chunk_size: 8 * MIB,
        },
        journal: JournalSettings {
            path: dir.join("journal.db"),
        },
        upload: UploadSettings {
            concurrency: 2,
            bandwidth_limit: 0,
        },
        watches: Vec::new(),
    };
    println!(
        "▶ uploading in chunks of {} with 2 workers; journal at {}",
        bytesize::ByteSize(settings.api.chunk_size),
        settings.journal.path.display()
    );
    let results = daemon::upload_files(&settings, &files, shutdown).await?;

    println!("\n▶ verifying every upload at the emulator (SHA-256):");
    let videos = emulator.videos();
    let mut all_ok = true;
    for r in &results {
        let Some(row) = &r.row else {
            println!(
                "  skipped   {}: {}",
                r.path.display(),
                r.note.as_deref().unwrap_or("")
            );
            continue;
        };
        let local = sha256_file(&r.path).map_err(io(format!("hash {}", r.path.display())))?;
        let remote = videos
            .iter()
            .find(|v| Some(&v.video_id) == row.video_id.as_ref())
            .and_then(|v| v.sha256.clone());
        let ok = remote.as_deref() == Some(local.as_str());
        all_ok &= ok;
        println!(
            "  {} {:<16} {}  sha256 {}…",
            if ok { "✔" } else { "✘" },
            r.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            row.video_id.as_deref().unwrap_or("-"),
            &local[..16],
        );
    }
    let journal = Journal::open_read_only(&settings.journal.path)?;
    println!(
        "\n▶ ingestd status\n{}",
        status::to_table(&journal.list(None)?)
    );
    emulator.shutdown().await;
    if all_ok {
        println!("All files uploaded once, byte for byte. Try `ingestd --help` next.");
    } else {
        println!("Some files did not verify: see above.");
    }
    Ok(all_ok)
}
