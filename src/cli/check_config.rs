//! `ingestd check-config`, beyond parsing: does the machine fit the
//! configuration? Watch folders readable, how each will be watched (inotify
//! or polling) and whether `settle` outlasts its mount's attribute cache,
//! `move_to` writable on the same filesystem, the inotify limits, the token
//! file's permissions, and (with `--online`) whether the server accepts the
//! token, without creating anything.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::apivideo::{Client, TokenCheck};
use crate::config::{
    AfterUpload, HookSettings, HookTarget, Settings, TokenSource, WatchMode, WatchSettings,
};
use crate::display::show_path;
use crate::hooks::check_command;
use crate::journal::{Journal, PgTarget};
use crate::roots::mountinfo::{self, AttrCache, Mount};

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

/// How the daemon will watch a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watcher {
    Inotify,
    Poll,
}

/// How the daemon will watch `w`, which lives on `mount` (`None`: not
/// known), and the finding that says so and why. Mirrors the daemon's
/// choice: `auto` polls network filesystems, as inotify only sees the
/// writes of this machine.
fn watcher_of(w: &WatchSettings, mount: Option<&Mount>) -> (Watcher, Finding) {
    let network = mount.and_then(|m| Some((m.network_kind()?, m.fs_type.as_str())));
    let (watcher, why) = match (w.mode, network) {
        (WatchMode::Poll, _) => (Watcher::Poll, String::new()),
        (WatchMode::Events, _) => (Watcher::Inotify, String::new()),
        (WatchMode::Auto, Some((kind, fs))) => (
            Watcher::Poll,
            format!(", and it is on {kind} ({fs}): inotify does not see other machines' writes"),
        ),
        (WatchMode::Auto, None) => (
            Watcher::Inotify,
            match mount {
                Some(m) => format!(", local filesystem {}", m.fs_type),
                // The daemon asks statfs, which can still find a network
                // filesystem where mountinfo could not be read.
                None => ", filesystem unknown here: polled instead if it is a network one".into(),
            },
        ),
    };
    let how = match watcher {
        Watcher::Poll => format!(
            "polled every {}",
            humantime::format_duration(w.poll_interval)
        ),
        Watcher::Inotify => "watched with inotify".into(),
    };
    let message = format!(
        "watch folder {}: {how} (mode = \"{}\"{why})",
        show_path(&w.path),
        w.mode.as_str()
    );
    match (w.mode, network) {
        (WatchMode::Events, Some((kind, fs))) => (
            watcher,
            Finding::warn(format!(
                "{message}, but it is on {kind} ({fs}): files other machines write there are only found by the periodic rescan. Set mode = \"auto\" or \"poll\""
            )),
        ),
        _ => (watcher, Finding::ok(message)),
    }
}

/// The warning for a `settle` that a file's attributes can outlast in the
/// client's cache: a file still growing on another machine would look
/// unchanged here for that long, and be uploaded cut short.
fn settle_finding(w: &WatchSettings, mount: Option<&Mount>) -> Option<Finding> {
    let mount = mount?;
    let AttrCache::UpTo(cache) = mount.attr_cache() else {
        return None;
    };
    if w.settle >= cache {
        return None;
    }
    let kind = mount.network_kind().unwrap_or("network");
    let (option, fix) = match kind {
        "NFS" => ("acregmax", "actimeo=0 (noac)"),
        _ => ("actimeo", "actimeo=0"),
    };
    Some(Finding::warn(format!(
        "watch folder {}: settle = {} is shorter than the {kind} attribute cache of this mount ({option} up to {}): a file another machine is still writing can look settled here. Set settle to at least {}, or mount with {fix}",
        show_path(&w.path),
        humantime::format_duration(w.settle),
        humantime::format_duration(cache),
        humantime::format_duration(cache),
    )))
}

/// Checks one folder, `mounts` being this machine's (`None`: unreadable);
/// returns the inotify watches it will take.
fn check_watch(w: &WatchSettings, mounts: Option<&[Mount]>, out: &mut Vec<Finding>) -> u64 {
    let shown = show_path(&w.path);
    if let Err(e) = crate::watch::check_folder(w) {
        out.push(Finding::error(e.to_string()));
        return 0;
    }
    out.push(Finding::ok(format!("watch folder {shown} is readable")));
    // statfs in the daemon follows symlinks; so must the lookup here.
    let real = std::fs::canonicalize(&w.path).unwrap_or_else(|_| w.path.clone());
    let mount = mounts.and_then(|all| mountinfo::mount_of(all, &real));
    let (watcher, finding) = watcher_of(w, mount);
    out.push(finding);
    out.extend(settle_finding(w, mount));
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
    match watcher {
        Watcher::Poll => 0,
        Watcher::Inotify => count_dirs(&w.path, w.recursive, 10_000_000),
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
    let mounts = match mountinfo::read() {
        Ok(m) => Some(m),
        Err(_) if settings.watches.is_empty() => None,
        Err(e) => {
            out.push(Finding::warn(format!(
                "{e}: the filesystems of the watch folders are not known, so neither how mode = \"auto\" will watch them nor whether settle outlasts an NFS/SMB attribute cache"
            )));
            None
        }
    };
    let mut dirs = 0;
    for w in &settings.watches {
        dirs += check_watch(w, mounts.as_deref(), &mut out);
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
    for hook in &settings.hooks {
        out.push(check_hook(hook));
    }
    let journal = &settings.journal.path;
    if settings.journal.postgres.is_some() {
        // A shared journal is checked by connecting to it (see `run`).
        return out;
    }
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

/// A command hook's program must exist and be executable here; a
/// webhook is said as it will be called (its secret never).
fn check_hook(hook: &HookSettings) -> Finding {
    let events: Vec<&str> = hook.events.iter().map(|e| e.as_str()).collect();
    let takes = events.join(", ");
    match &hook.target {
        HookTarget::Command { argv } => {
            let program = argv.first().map_or("", String::as_str);
            match check_command(program) {
                Ok(path) => Finding::ok(format!(
                    "hook {}: runs {} on {takes}",
                    hook.key,
                    show_path(&path)
                )),
                Err(why) => Finding::error(format!("hook {}: {why}", hook.key)),
            }
        }
        HookTarget::Webhook { secret, .. } => Finding::ok(format!(
            "hook {}: {} on {takes}, {}",
            hook.key,
            hook.describe(),
            if secret.is_some() {
                "signed (X-Ingestd-Signature)"
            } else {
                "unsigned (secret_file signs it)"
            }
        )),
    }
}

/// Asks the server whether it accepts the token, creating nothing: an
/// upload request without a file part. A good token gets 400
/// `uploaded-file-no-file`, a bad one 401.
pub(crate) async fn check_online(settings: &Settings) -> Finding {
    let Some((token, _)) = &settings.api.token else {
        return Finding::error("no upload token to check");
    };
    let client = match Client::new(settings.api.base_url.clone(), token.clone()) {
        Ok(c) => c,
        Err(e) => return Finding::error(e.to_string()),
    };
    let base = settings.api.base_url.to_string();
    match client.check_token().await {
        TokenCheck::Unreachable(e) => Finding::error(format!("cannot reach {base}: {e}")),
        TokenCheck::Tls(e) => Finding::error(format!("TLS with {base} refused: {e}")),
        TokenCheck::Accepted => Finding::ok(format!("{base} accepts the upload token")),
        TokenCheck::Refused => Finding::error(format!(
            "{base} refuses the upload token (401): it is unknown, deleted or expired"
        )),
        TokenCheck::Unexpected(s) => Finding::warn(format!(
            "{base} answered {s} to a token check; expected 400 uploaded-file-no-file"
        )),
    }
}

/// `ingestd check-config [--online]`: the settings as understood, then one
/// line per finding. Exit 78 without a token, 1 when the machine does not
/// fit the configuration.
/// Connects to the shared journal and says whether its schema is this
/// ingestd's (an empty database is set up by the first `ingestd run`).
async fn check_shared_journal(target: PgTarget) -> Finding {
    let shown = target.shown.clone();
    let node = target.node.clone();
    let r = tokio::task::spawn_blocking(move || Journal::postgres_schema(&target)).await;
    match r {
        Ok(Ok((0, _))) => Finding::ok(format!(
            "the shared journal {shown} answers; its database is empty: the first `ingestd run` \
             sets it up (this node: {node})"
        )),
        Ok(Ok((found, supported))) if found == supported as i64 => Finding::ok(format!(
            "the shared journal {shown} answers, with the schema this ingestd writes \
             (version {found}; this node: {node})"
        )),
        Ok(Ok((found, supported))) if found < supported as i64 => Finding::ok(format!(
            "the shared journal {shown} answers, with schema version {found}: the first \
             `ingestd run` of this version brings it to {supported} (nodes running an older \
             ingestd should be upgraded too)"
        )),
        Ok(Ok((found, supported))) => Finding::error(format!(
            "the shared journal {shown} has schema version {found}, newer than this ingestd's \
             {supported}: upgrade ingestd on this node"
        )),
        Ok(Err(e)) => Finding::error(e.to_string()),
        Err(e) => Finding::error(format!("the shared journal {shown}: {e}")),
    }
}

pub async fn run(settings: &Settings, online: bool) -> ExitCode {
    print!("{}", settings.render());
    let mut findings = check(settings);
    if let Some(p) = &settings.journal.postgres {
        findings.push(check_shared_journal(PgTarget::from(p)).await);
    }
    if online {
        findings.push(check_online(settings).await);
    }
    println!();
    for f in &findings {
        let tag = match f.level {
            Level::Ok => "ok   ",
            Level::Warning => "warn ",
            Level::Error => "error",
        };
        println!("# {tag} {}", f.message);
    }
    if let Err(e) = settings.require_token() {
        eprintln!("ingestd: invalid configuration: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if findings.iter().any(|f| f.level == Level::Error) {
        eprintln!("ingestd: the configuration is valid, but this machine does not fit it (see the errors above)");
        return ExitCode::FAILURE;
    }
    eprintln!("configuration OK");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const EXT4: &str =
        "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro";
    const NFS_DEFAULT: &str = "40 22 0:45 / /srv/nas rw,relatime shared:30 - nfs4 nas:/export/video rw,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.5,local_lock=none,addr=10.0.0.2";
    const NFS_ACTIMEO_0: &str = "41 22 0:46 / /srv/nas rw,relatime shared:31 - nfs nas:/export/video rw,vers=3,rsize=65536,actimeo=0,hard,proto=tcp";
    const CIFS: &str = "44 22 0:49 / /srv/nas rw,relatime shared:34 - cifs //fs/share rw,vers=3.1.1,cache=strict,uid=0,actimeo=30";

    fn mount(line: &str) -> Mount {
        match mountinfo::parse(line).pop() {
            Some(m) => m,
            None => panic!("not a mountinfo line: {line}"),
        }
    }

    fn watch(path: &str, mode: WatchMode, settle: u64) -> WatchSettings {
        let mut w = WatchSettings::new(path);
        w.mode = mode;
        w.settle = Duration::from_secs(settle);
        w.poll_interval = Duration::from_secs(30);
        w
    }

    #[test]
    fn settle_shorter_than_nfs_default_cache_warns() {
        let w = watch("/srv/nas", WatchMode::Auto, 10);
        let f = settle_finding(&w, Some(&mount(NFS_DEFAULT)));
        assert_eq!(
            f,
            Some(Finding::warn(
                "watch folder /srv/nas: settle = 10s is shorter than the NFS attribute cache of this mount (acregmax up to 1m): a file another machine is still writing can look settled here. Set settle to at least 1m, or mount with actimeo=0 (noac)"
            ))
        );
    }

    #[test]
    fn settle_longer_than_cache_is_fine() {
        let w = watch("/srv/nas", WatchMode::Auto, 90);
        assert_eq!(settle_finding(&w, Some(&mount(NFS_DEFAULT))), None);
        let w = watch("/srv/nas", WatchMode::Auto, 60);
        assert_eq!(settle_finding(&w, Some(&mount(NFS_DEFAULT))), None);
    }

    #[test]
    fn no_settle_warning_without_an_attribute_cache() {
        let w = watch("/srv/nas", WatchMode::Auto, 10);
        assert_eq!(settle_finding(&w, Some(&mount(NFS_ACTIMEO_0))), None);
        assert_eq!(settle_finding(&w, Some(&mount(EXT4))), None);
        assert_eq!(settle_finding(&w, None), None);
    }

    #[test]
    fn settle_shorter_than_smb_cache_warns() {
        let w = watch("/srv/nas", WatchMode::Poll, 10);
        let f = settle_finding(&w, Some(&mount(CIFS)));
        assert!(f.as_ref().is_some_and(|f| f.level == Level::Warning
            && f.message
                .contains("SMB attribute cache of this mount (actimeo up to 30s)")));
    }

    #[test]
    fn auto_on_local_ext4_uses_inotify() {
        let w = watch("/srv/cap", WatchMode::Auto, 10);
        let (watcher, f) = watcher_of(&w, Some(&mount(EXT4)));
        assert_eq!(watcher, Watcher::Inotify);
        assert_eq!(
            f,
            Finding::ok("watch folder /srv/cap: watched with inotify (mode = \"auto\", local filesystem ext4)")
        );
    }

    #[test]
    fn auto_on_nfs_is_polled() {
        let w = watch("/srv/nas", WatchMode::Auto, 10);
        let (watcher, f) = watcher_of(&w, Some(&mount(NFS_DEFAULT)));
        assert_eq!(watcher, Watcher::Poll);
        assert_eq!(
            f,
            Finding::ok("watch folder /srv/nas: polled every 30s (mode = \"auto\", and it is on NFS (nfs4): inotify does not see other machines' writes)")
        );
    }

    #[test]
    fn mode_poll_is_polled_and_events_uses_inotify() {
        let w = watch("/srv/cap", WatchMode::Poll, 10);
        let (watcher, f) = watcher_of(&w, Some(&mount(EXT4)));
        assert_eq!(watcher, Watcher::Poll);
        assert_eq!(
            f,
            Finding::ok("watch folder /srv/cap: polled every 30s (mode = \"poll\")")
        );
        let w = watch("/srv/cap", WatchMode::Events, 10);
        let (watcher, f) = watcher_of(&w, Some(&mount(EXT4)));
        assert_eq!(watcher, Watcher::Inotify);
        assert_eq!(
            f,
            Finding::ok("watch folder /srv/cap: watched with inotify (mode = \"events\")")
        );
        let (watcher, f) = watcher_of(&w, Some(&mount(NFS_DEFAULT)));
        assert_eq!(watcher, Watcher::Inotify);
        assert_eq!(f.level, Level::Warning);
    }

    #[test]
    fn auto_on_an_unknown_filesystem_assumes_inotify() {
        let w = watch("/srv/cap", WatchMode::Auto, 10);
        let (watcher, f) = watcher_of(&w, None);
        assert_eq!(watcher, Watcher::Inotify);
        assert!(f.message.contains("filesystem unknown here"), "{f:?}");
    }

    #[test]
    fn polled_folders_take_no_inotify_watches() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("a/b"))?;
        let root = std::fs::canonicalize(dir.path())?;
        let shown = root.to_string_lossy().replace(' ', "\\040");
        let nfs = NFS_DEFAULT.replace("/srv/nas", &shown);
        let ext4 = EXT4.replace(" / / ", &format!(" / {shown} "));
        let path = root.to_string_lossy().into_owned();
        let mut out = Vec::new();
        let on = |line: &str| vec![mount(EXT4), mount(line)];
        let auto = watch(&path, WatchMode::Auto, 90);
        assert_eq!(check_watch(&auto, Some(&on(&nfs)), &mut out), 0);
        assert_eq!(check_watch(&auto, Some(&on(&ext4)), &mut out), 3);
        let poll = watch(&path, WatchMode::Poll, 90);
        assert_eq!(check_watch(&poll, Some(&on(&ext4)), &mut out), 0);
        assert!(out.iter().all(|f| f.level == Level::Ok), "{out:?}");
        Ok(())
    }
}
