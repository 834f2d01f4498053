//! `ingestd status`: the journal as a table for people or JSON for scripts.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use super::hooks_status;
use crate::config::{BandwidthLimit, Rate, Settings};
use crate::display::show_path;
use crate::journal::{now_ms, FileRow, FileState, Journal, JournalError, NodeRecord, Orphan};
use crate::upload::{Clock, SystemClock};

/// One file as `status --json` prints it. The field names are a contract.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FileStatus {
    pub id: i64,
    pub path: String,
    pub state: FileState,
    pub size: u64,
    pub bytes_uploaded: u64,
    pub progress_percent: f64,
    /// Bytes per second since the current upload attempt started (uploading only).
    pub rate_bytes_per_second: Option<u64>,
    pub video_id: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Unix milliseconds.
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub done_at: Option<i64>,
    /// The SHA-256 of the whole file (lowercase hex), once it is done.
    pub sha256: Option<String>,
    /// In a shared journal: the node holding the file, or that last held it.
    pub node: Option<String>,
    /// Unix milliseconds: when the video's HLS manifest first answered.
    pub playable_at: Option<i64>,
    /// Why a done video is not watched for playable, or gave up.
    pub playable_note: Option<String>,
}

impl FileStatus {
    /// The row `r`, whose stored SHA-256 is `sha256`.
    fn of(r: &FileRow, sha256: Option<&str>) -> Self {
        FileStatus {
            id: r.id,
            path: String::from_utf8_lossy(std::os::unix::ffi::OsStrExt::as_bytes(
                r.path().as_os_str(),
            ))
            .into_owned(),
            state: r.state,
            size: r.identity.size,
            bytes_uploaded: r.bytes_uploaded,
            progress_percent: percent(r.bytes_uploaded, r.identity.size),
            rate_bytes_per_second: rate(r),
            video_id: r.video_id.clone(),
            attempts: r.attempts,
            last_error: r.last_error.clone(),
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            done_at: r.done_at,
            sha256: sha256.map(str::to_owned),
            node: None,
            playable_at: None,
            playable_note: None,
        }
    }
}

/// Bytes per second of an upload in progress, as far as the journal tells:
/// acknowledged bytes over the time since the attempt started. A resumed
/// upload counts only what this attempt sent (the journal does not know the
/// offset it resumed from, so the rate is a lower bound then).
fn rate(r: &FileRow) -> Option<u64> {
    if r.state != FileState::Uploading {
        return None;
    }
    let started = r.started_at?;
    let secs = (r.updated_at.max(now_ms()) - started) as f64 / 1000.0;
    (secs > 0.5).then(|| (r.bytes_uploaded as f64 / secs) as u64)
}

fn percent(done: u64, size: u64) -> f64 {
    if size == 0 {
        return 100.0;
    }
    ((done as f64 / size as f64) * 1000.0).floor() / 10.0
}

/// `ingestd status [--json] [--state S…] [--orphans]`: no token needed, so
/// it works while the token is broken; the journal is opened read-only.
pub fn status(settings: &Settings, show: Show, states: &[FileState]) -> Result<(), JournalError> {
    let Show {
        json,
        orphans,
        nodes,
        hooks,
    } = show;
    let journal = Journal::open_configured_read_only(&settings.journal)?;
    if hooks {
        let backlogs = journal.hook_backlogs()?;
        let pending = journal.pending_deliveries(hooks_status::LISTED)?;
        if json {
            println!(
                "{}",
                hooks_status::to_json(&settings.hooks, &backlogs, &pending)
            );
        } else {
            print!(
                "{}",
                hooks_status::to_table(&settings.hooks, &backlogs, &pending)
            );
        }
        return Ok(());
    }
    if nodes {
        if journal.node().is_none() {
            return Err(JournalError::NotShared);
        }
        let nodes = journal.nodes()?;
        if json {
            println!("{}", nodes_to_json(&nodes));
        } else {
            print!("{}", nodes_to_table(&nodes));
        }
        return Ok(());
    }
    if orphans {
        let orphans = journal.orphans()?;
        if json {
            println!("{}", orphans_to_json(&orphans));
        } else {
            print!("{}", orphans_to_table(&orphans));
        }
        return Ok(());
    }
    let filter = (!states.is_empty()).then_some(states);
    let rows = journal.list_hashed(filter)?;
    let playable = journal.playable_states()?;
    if json {
        let nodes = journal.file_nodes()?;
        println!("{}", to_json(&rows, &nodes, &playable));
    } else {
        let rows: Vec<FileRow> = rows.into_iter().map(|(r, _)| r).collect();
        print!("{}", to_table(&rows, &playable));
        if let Some(line) = bandwidth_line(&settings.upload.bandwidth_limit) {
            println!("{line}");
        }
    }
    Ok(())
}

/// `bandwidth: 10 MiB/s until 18:00 (timetable), then unlimited`: what the
/// configured timetable (or pause) says holds now, in this machine's local
/// time, as the daemon reads it; `None` for a plain size.
fn bandwidth_line(limit: &BandwidthLimit) -> Option<String> {
    if limit.timetable().is_none() && *limit != BandwidthLimit::Constant(Rate::Pause) {
        return None;
    }
    let clock = SystemClock;
    let holding = limit.at(clock.zone().to_datetime(clock.now()));
    Some(format!("bandwidth: {holding} (upload.bandwidth_limit)"))
}

/// Each row with its stored SHA-256, as `status --json` prints them.
pub(crate) fn to_json(
    rows: &[(FileRow, Option<String>)],
    nodes: &HashMap<i64, String>,
    playable: &Playable,
) -> String {
    let all: Vec<FileStatus> = rows
        .iter()
        .map(|(r, sha256)| {
            let (playable_at, playable_note) = playable.get(&r.id).cloned().unwrap_or_default();
            FileStatus {
                node: nodes.get(&r.id).cloned(),
                playable_at,
                playable_note,
                ..FileStatus::of(r, sha256.as_deref())
            }
        })
        .collect();
    // Serializing plain data with string keys cannot fail.
    serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".to_owned())
}

fn age(ms: i64) -> String {
    let secs = (now_ms() - ms).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Each done file's playable time and note ([`Journal::playable_states`]).
pub(crate) type Playable = crate::journal::PlayableStates;

/// A readable table and a summary line.
pub(crate) fn to_table(rows: &[FileRow], playable: &Playable) -> String {
    let mut out = String::new();
    let header = [
        "ID", "STATE", "PROGRESS", "SIZE", "RATE", "VIDEO", "TRIES", "AGE", "PATH",
    ];
    let mut lines: Vec<[String; 9]> = vec![header.map(str::to_owned)];
    for r in rows {
        lines.push([
            r.id.to_string(),
            r.state.to_string(),
            format!("{:.1}%", percent(r.bytes_uploaded, r.identity.size)),
            bytesize::ByteSize(r.identity.size).to_string(),
            rate(r).map_or_else(|| "-".into(), |b| format!("{}/s", bytesize::ByteSize(b))),
            r.video_id.clone().unwrap_or_else(|| "-".into()),
            r.attempts.to_string(),
            age(r.updated_at),
            show_path(&r.path()),
        ]);
    }
    let mut widths = [0usize; 9];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    for (i, l) in lines.iter().enumerate() {
        let mut line = String::new();
        for (j, (c, w)) in l.iter().zip(widths).enumerate() {
            if j == 8 {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i > 0 {
            let r = &rows[i - 1];
            // A done row keeps a note only when it matters (a videoId that
            // is unknown, an extra video api.video may hold).
            if let Some(e) = &r.last_error {
                let _ = writeln!(out, "      └ {}", e.escape_debug());
            }
            match playable.get(&r.id) {
                Some((Some(at), _)) => {
                    let after = r.done_at.map_or(0, |done| (at - done).max(0) / 1000);
                    let _ = writeln!(out, "      └ playable {after}s after its upload");
                }
                Some((None, Some(note))) => {
                    let _ = writeln!(out, "      └ {}", note.escape_debug());
                }
                Some((None, None)) => {
                    let _ = writeln!(out, "      └ encoding: not playable yet");
                }
                None => {}
            }
        }
    }
    let mut counts: BTreeMap<FileState, usize> = BTreeMap::new();
    for r in rows {
        *counts.entry(r.state).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let _ = writeln!(
        out,
        "{} files: {}",
        rows.len(),
        if summary.is_empty() {
            "none".to_owned()
        } else {
            summary.join(", ")
        }
    );
    out
}

/// What `status` shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Show {
    pub json: bool,
    pub orphans: bool,
    pub nodes: bool,
    pub hooks: bool,
}

/// `status --nodes --json`.
pub(crate) fn nodes_to_json(nodes: &[NodeRecord]) -> String {
    let all: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "node": n.name,
                "host": n.host,
                "pid": n.pid,
                "started_at": n.started_at,
                "heard_ms_ago": n.heard_ms_ago,
                "uploading": n.uploading.iter().map(|(id, p)| serde_json::json!({
                    "id": id,
                    "path": show_path(p),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".to_owned())
}

/// `status --nodes`: a line per node, then the files each holds.
pub(crate) fn nodes_to_table(nodes: &[NodeRecord]) -> String {
    let mut out = String::new();
    for n in nodes {
        let _ = writeln!(
            out,
            "{}  on {} (pid {})  heard {}s ago  uploading {}",
            n.name,
            n.host,
            n.pid,
            n.heard_ms_ago.max(0) / 1000,
            n.uploading.len()
        );
        for (id, p) in &n.uploading {
            let _ = writeln!(out, "    {id}  {}", show_path(p));
        }
    }
    let _ = writeln!(out, "{} node(s)", nodes.len());
    out
}

/// `status --orphans --json`: the videos started and abandoned.
pub(crate) fn orphans_to_json(orphans: &[Orphan]) -> String {
    let all: Vec<serde_json::Value> = orphans
        .iter()
        .map(|o| {
            serde_json::json!({
                "file_id": o.file_id,
                "path": show_path(&o.path),
                "video_id": o.video_id,
                "at": o.at,
                "why": o.why,
            })
        })
        .collect();
    serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".to_owned())
}

/// `status --orphans`: one block per video to delete in the dashboard.
pub(crate) fn orphans_to_table(orphans: &[Orphan]) -> String {
    let mut out = String::new();
    for o in orphans {
        let _ = writeln!(
            out,
            "{}  {}  {} ago  file {}  {}",
            o.video_id.as_deref().unwrap_or("(videoId unknown)"),
            show_path(&o.path),
            age(o.at),
            o.file_id,
            o.why.escape_debug()
        );
    }
    let _ = writeln!(
        out,
        "{} orphan video(s): started on api.video by ingestd and abandoned; delete them in the dashboard if you do not want them",
        orphans.len()
    );
    out
}
