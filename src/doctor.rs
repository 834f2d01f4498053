//! `ingestd check-config`, beyond parsing: does the machine fit the
//! configuration? Watch folders readable, `move_to` writable on the same
//! filesystem, the inotify limits, the token file's permissions, and (with
//! `--online`) whether the server accepts the token, without creating
//! anything.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{AfterUpload, Settings, TokenSource, WatchMode, WatchSettings};
use crate::journal::show_path;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

impl Finding {
    fn ok(m: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            message: m.into(),
        }
    }
    fn warn(m: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warning,
            message: m.into(),
        }
    }
    fn error(m: impl Into<String>) -> Finding {
        Finding {
            level: Level::Error,
            message: m.into(),
        }
    }
}

/// The nearest existing ancestor of `p` (for a `move_to` not yet created).
fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    let mut cur = Some(p);
    while let Some(c) = cur {
        if c.exists() {
            return Some(c.to_path_buf());
        }
        cur = c.parent();
    }
    None
}

/// Whether a file can be created in `dir` (tried for real, then removed).
fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".ingestd-check-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Directories under `root` (up to `cap`), as inotify needs one watch each.
fn count_dirs(root: &Path, recursive: bool, cap: u64) -> u64 {
    let mut n = 1;
    if !recursive {
        return n;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += 1;
                if n >= cap {
                    return n;
                }
                stack.push(e.path());
            }
        }
    }
    n
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn check_watch(w: &WatchSettings, out: &mut Vec<Finding>) -> u64 {
    let shown = show_path(&w.path);
    if let Err(e) = crate::watch::check_folder(w) {
        out.push(Finding::error(e.to_string()));
        return 0;
    }
    out.push(Finding::ok(format!("watch folder {shown} is readable")));
    let needs_write = !matches!(w.after_upload, AfterUpload::Keep) || w.sidecar;
    if needs_write {
        match writable(&w.path) {
            Ok(()) => out.push(Finding::ok(format!("watch folder {shown} is writable"))),
            Err(e) => out.push(Finding::error(format!(
                "watch folder {shown} is not writable ({e}), but after_upload/sidecar need it to be (systemd: ReadWritePaths={shown})"
            ))),
        }
    }
    if let AfterUpload::Move(to) = &w.after_upload {
        let target = show_path(to);
        match existing_ancestor(to) {
            None => out.push(Finding::error(format!(
                "move_to {target}: no part of it exists"
            ))),
            Some(base) => {
                match writable(&base) {
                    Ok(()) => out.push(Finding::ok(format!("move_to {target} is writable"))),
                    Err(e) => out.push(Finding::error(format!(
                        "move_to {target} is not writable ({e}): files could not be moved after upload"
                    ))),
                }
                let same = std::fs::metadata(&base)
                    .ok()
                    .zip(std::fs::metadata(&w.path).ok())
                    .map(|(a, b)| a.dev() == b.dev());
                if same == Some(false) {
                    out.push(Finding::error(format!(
                        "move_to {target} is on another filesystem than {shown}: a move would be a copy, not an atomic rename; put it on the same filesystem"
                    )));
                }
            }
        }
    }
    if w.mode == WatchMode::Poll {
        0
    } else {
        count_dirs(&w.path, w.recursive, 10_000_000)
    }
}

fn exposed_message(path: &Path, mode: u32) -> String {
    format!(
        "the token file {} can be read by others (mode {:o}): chmod 600 it",
        show_path(path),
        mode & 0o777
    )
}

/// The warning for a token file (or systemd credential) that users other
/// than its owner may read; `None` when it is private, inline or unreadable
/// (loading the configuration already read it). Names the path, never the
/// token.
pub fn exposed_token_file(settings: &Settings) -> Option<String> {
    let (Some((_, TokenSource::File(p))) | Some((_, TokenSource::Credentials(p)))) =
        &settings.api.token
    else {
        return None;
    };
    let mode = std::fs::metadata(p).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| exposed_message(p, mode))
}

/// Every check that needs no network.
pub fn check(settings: &Settings) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut dirs = 0;
    for w in &settings.watches {
        dirs += check_watch(w, &mut out);
    }
    if dirs > 0 {
        match read_number("/proc/sys/fs/inotify/max_user_watches") {
            Some(limit) if dirs * 10 > limit * 8 => out.push(Finding::warn(format!(
                "{dirs} directories to watch, inotify allows {limit} per user: raise it with `sysctl -w fs.inotify.max_user_watches={}` (persist in /etc/sysctl.d/90-ingestd.conf), or folders fall back to polling",
                (dirs * 2).max(limit * 2)
            ))),
            Some(limit) => out.push(Finding::ok(format!(
                "{dirs} directories to watch, within the inotify limit of {limit}"
            ))),
            None => {}
        }
    }
    match &settings.api.token {
        None => out.push(Finding::error(
            "no upload token: set api.token, api.token_file, or $CREDENTIALS_DIRECTORY/upload-token",
        )),
        Some((_, TokenSource::File(p))) | Some((_, TokenSource::Credentials(p))) => {
            match std::fs::metadata(p) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    out.push(Finding::warn(exposed_message(p, m.permissions().mode())))
                }
                Ok(_) => out.push(Finding::ok(format!(
                    "the token file {} is private",
                    show_path(p)
                ))),
                Err(e) => out.push(Finding::error(format!(
                    "the token file {}: {e}",
                    show_path(p)
                ))),
            }
        }
        Some((_, TokenSource::Inline)) => out.push(Finding::ok(
            "upload token set inline (a token_file or systemd credential keeps it out of the config)",
        )),
    }
    let journal = &settings.journal.path;
    match existing_ancestor(journal.parent().unwrap_or(Path::new("."))) {
        Some(dir) => match writable(&dir) {
            Ok(()) => out.push(Finding::ok(format!(
                "the journal's directory {} is writable",
                show_path(&dir)
            ))),
            Err(e) => out.push(Finding::error(format!(
                "the journal's directory {} is not writable: {e}",
                show_path(&dir)
            ))),
        },
        None => out.push(Finding::error(format!(
            "the journal {}: no part of its path exists",
            show_path(journal)
        ))),
    }
    out
}

/// Asks the server whether it accepts the token, creating nothing: an
/// upload request without a file part. A good token gets 400
/// `uploaded-file-no-file`, a bad one 401.
pub async fn check_online(settings: &Settings) -> Finding {
    let Some((token, _)) = &settings.api.token else {
        return Finding::error("no upload token to check");
    };
    let client = match crate::apivideo::http_client() {
        Ok(c) => c,
        Err(e) => return Finding::error(e.to_string()),
    };
    let mut url = settings.api.upload_url();
    url.query_pairs_mut().append_pair("token", token.expose());
    let form = reqwest::multipart::Form::new().text("check", "ingestd");
    let base = settings.api.base_url.to_string();
    let request = client
        .post(url)
        .multipart(form)
        .timeout(std::time::Duration::from_secs(30));
    match request.send().await {
        Err(e) => Finding::error(format!("cannot reach {base}: {}", e.without_url())),
        Ok(r) => {
            let status = r.status().as_u16();
            let body = crate::apivideo::read_limited(r).await.unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            match status {
                400 if body.contains("uploaded-file-no-file") => {
                    Finding::ok(format!("{base} accepts the upload token"))
                }
                401 => Finding::error(format!(
                    "{base} refuses the upload token (401): it is unknown, deleted or expired"
                )),
                s => Finding::warn(format!(
                    "{base} answered {s} to a token check; expected 400 uploaded-file-no-file"
                )),
            }
        }
    }
}
