//! The watcher of one folder: inotify (one watch per directory, so ignored
//! subtrees cost nothing and a new directory is watched before it is listed)
//! or notify's polling watcher (network filesystems, where inotify sees
//! nothing written by other machines).
//!
//! Events are hints: they only say which paths to look at. The handler runs
//! on notify's thread and never blocks: when the channel is full it raises
//! the rescan flag instead, and the folder is reconciled from disk.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Config, Event, EventKind, INotifyWatcher, PollWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};

use super::{show, WatchError};

/// Events waiting for the folder task; beyond this the folder is rescanned.
const CHANNEL_CAPACITY: usize = 1024;

/// What notify's thread tells the folder task.
#[derive(Debug)]
pub(crate) enum Signal {
    /// Look at these paths. `created`: they were created or renamed (a
    /// directory there is new, even if one of that name was watched).
    Paths { paths: Vec<PathBuf>, created: bool },
    /// The watcher failed (a limit, an I/O error).
    Error(notify::Error),
}

/// The sending half, owned by the watcher's event handler.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    tx: mpsc::Sender<Signal>,
    rescan: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

/// The receiving half, owned by the folder task.
#[derive(Debug)]
pub(crate) struct Events {
    pub rx: mpsc::Receiver<Signal>,
    /// Set when events were lost (overflow, full channel): reconcile.
    pub rescan: Arc<AtomicBool>,
    /// Woken when `rescan` is set.
    pub wake: Arc<Notify>,
}

pub(crate) fn channel() -> (Sink, Events) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let rescan = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    (
        Sink {
            tx,
            rescan: rescan.clone(),
            wake: wake.clone(),
        },
        Events { rx, rescan, wake },
    )
}

impl Sink {
    fn lost(&self) {
        self.rescan.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn send(&self, signal: Signal) {
        if self.tx.try_send(signal).is_err() {
            self.lost();
        }
    }

    fn handle(&self, event: notify::Result<Event>) {
        match event {
            Ok(event) if event.need_rescan() => self.lost(),
            Ok(event) => {
                // Reads (ours included: the uploader opens queued files)
                // change nothing.
                let read_only = matches!(
                    event.kind,
                    EventKind::Access(AccessKind::Open(_))
                        | EventKind::Access(AccessKind::Close(AccessMode::Read))
                        | EventKind::Access(AccessKind::Read)
                );
                let created = matches!(
                    event.kind,
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
                );
                if !read_only && !event.paths.is_empty() {
                    self.send(Signal::Paths {
                        paths: event.paths,
                        created,
                    });
                }
            }
            Err(e) => self.send(Signal::Error(e)),
        }
    }
}

/// How a folder is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Inotify,
    Poll,
}

pub(crate) enum Backend {
    Inotify {
        watcher: INotifyWatcher,
        /// The directories watched (absolute), so each is added once.
        watched: HashSet<PathBuf>,
    },
    /// Held to keep polling: dropping it stops its thread.
    Poll { _alive: PollWatcher },
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Inotify { watched, .. } => f
                .debug_struct("Inotify")
                .field("watched", &watched.len())
                .finish(),
            Backend::Poll { .. } => f.write_str("Poll"),
        }
    }
}

impl Backend {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Backend::Inotify { .. } => Kind::Inotify,
            Backend::Poll { .. } => Kind::Poll,
        }
    }

    /// An inotify instance for one folder. Blocking (a thread is started).
    pub(crate) fn inotify(sink: Sink) -> notify::Result<Backend> {
        let watcher = INotifyWatcher::new(
            move |e: notify::Result<Event>| sink.handle(e),
            Config::default().with_follow_symlinks(false),
        )?;
        Ok(Backend::Inotify {
            watcher,
            watched: HashSet::new(),
        })
    }

    /// notify's polling watcher over the folder. Blocking: it walks the tree
    /// once to know what is there.
    pub(crate) fn poll(
        sink: Sink,
        root: &Path,
        recursive: bool,
        interval: Duration,
        follow_symlinks: bool,
    ) -> notify::Result<Backend> {
        let mut watcher = PollWatcher::new(
            move |e: notify::Result<Event>| sink.handle(e),
            Config::default()
                .with_poll_interval(interval.max(Duration::from_millis(10)))
                .with_follow_symlinks(follow_symlinks),
        )?;
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        watcher.watch(root, mode)?;
        Ok(Backend::Poll { _alive: watcher })
    }

    /// Watches one directory (inotify; nothing to do for polling). Blocking.
    /// `fresh`: the directory was (re)created, so a watch of that name may
    /// have died with the old one; watching an inode twice is harmless.
    pub(crate) fn watch_dir(&mut self, dir: &Path, fresh: bool) -> notify::Result<()> {
        match self {
            Backend::Inotify { watcher, watched } => {
                if !fresh && watched.contains(dir) {
                    return Ok(());
                }
                watcher.watch(dir, RecursiveMode::NonRecursive)?;
                watched.insert(dir.to_path_buf());
                Ok(())
            }
            Backend::Poll { .. } => Ok(()),
        }
    }

    /// Whether the files of the directory `dir` are already reported by
    /// this watcher: true once inotify watches it, always for polling (the
    /// poller reports every file of a new directory itself).
    pub(crate) fn covers(&self, dir: &Path) -> bool {
        match self {
            Backend::Inotify { watched, .. } => watched.contains(dir),
            Backend::Poll { .. } => true,
        }
    }

    /// Drops the watches of directories a full walk did not enter (they
    /// vanished, or became ignored).
    pub(crate) fn keep_only(&mut self, dirs: &HashSet<PathBuf>) {
        if let Backend::Inotify { watcher, watched } = self {
            let stale: Vec<PathBuf> = watched.difference(dirs).cloned().collect();
            for dir in stale {
                // The kernel drops the watch of a deleted directory by
                // itself; an error here only means that already happened.
                let _ = watcher.unwatch(&dir);
                watched.remove(&dir);
            }
        }
    }

    /// Forgets a directory that vanished (its watch died with it).
    pub(crate) fn forget_dir(&mut self, dir: &Path) {
        if let Backend::Inotify { watched, .. } = self {
            watched.retain(|d| !d.starts_with(dir));
        }
    }
}

/// The inotify limit an error hit, if any: the sysctl to raise and a value.
pub(crate) fn inotify_limit(e: &notify::Error) -> Option<(&'static str, u32)> {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => Some(("fs.inotify.max_user_watches", 524_288)),
        // inotify_init: too many instances for this user (or, rarely, too
        // many open files for the process).
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc_emfile()) => {
            Some(("fs.inotify.max_user_instances", 1024))
        }
        _ => None,
    }
}

/// EMFILE without a libc dependency.
fn libc_emfile() -> i32 {
    rustix::io::Errno::MFILE.raw_os_error()
}

/// The error to log when an inotify limit forces a folder to polling.
pub(crate) fn limit_error(path: &Path, e: &notify::Error) -> Option<WatchError> {
    inotify_limit(e).map(|(sysctl, suggested)| WatchError::InotifyLimit {
        path: path.to_path_buf(),
        sysctl,
        suggested,
    })
}

/// Filesystems where inotify does not see changes made by other machines,
/// by `statfs` f_type: polled when `mode = "auto"`.
const NETWORK_FILESYSTEMS: &[(u64, &str)] = &[
    (0x6969, "NFS"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x517B, "SMB"),
    (0x6573_5546, "FUSE"),
    (0x0102_1997, "9P"),
];

/// The name of the network filesystem with this `statfs` magic, if it is one.
pub(crate) fn network_filesystem(magic: u64) -> Option<&'static str> {
    NETWORK_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic & 0xFFFF_FFFF)
        .map(|(_, name)| *name)
}

/// The network filesystem `path` lives on, if any (`None` when local or
/// when `statfs` fails: inotify is tried, and a failure falls back anyway).
pub(crate) fn network_filesystem_of(path: &Path) -> Option<&'static str> {
    let st = rustix::fs::statfs(path).ok()?;
    // f_type is a signed or unsigned word depending on the platform; magics
    // are 32-bit, so sign extension is masked off.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64 as u64;
    network_filesystem(magic)
}

/// A log-friendly description of a watcher error.
pub(crate) fn describe(e: &notify::Error) -> String {
    let paths: Vec<String> = e.paths.iter().map(|p| show(p)).collect();
    if paths.is_empty() {
        e.kind_string()
    } else {
        format!("{} ({})", e.kind_string(), paths.join(", "))
    }
}

trait KindString {
    fn kind_string(&self) -> String;
}

impl KindString for notify::Error {
    fn kind_string(&self) -> String {
        match &self.kind {
            notify::ErrorKind::Generic(s) => s.clone(),
            notify::ErrorKind::Io(e) => e.to_string(),
            notify::ErrorKind::PathNotFound => "no such path".into(),
            notify::ErrorKind::WatchNotFound => "no such watch".into(),
            notify::ErrorKind::InvalidConfig(_) => "invalid watcher configuration".into(),
            notify::ErrorKind::MaxFilesWatch => "the inotify watch limit is reached".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_magics() {
        assert_eq!(network_filesystem(0x6969), Some("NFS"));
        assert_eq!(network_filesystem(0xFF53_4D42), Some("CIFS"));
        // CIFS as a sign-extended 32-bit word.
        assert_eq!(
            network_filesystem(0xFF53_4D42u32 as i32 as i64 as u64),
            Some("CIFS")
        );
        assert_eq!(network_filesystem(0xFE53_4D42), Some("SMB2"));
        assert_eq!(network_filesystem(0x517B), Some("SMB"));
        assert_eq!(network_filesystem(0x6573_5546), Some("FUSE"));
        assert_eq!(network_filesystem(0x0102_1997), Some("9P"));
        // ext4, xfs, tmpfs, btrfs
        for local in [0xEF53u64, 0x5846_5342, 0x0102_1994, 0x9123_683E] {
            assert_eq!(network_filesystem(local), None);
        }
    }

    #[test]
    fn limit_errors_name_the_sysctl() {
        let e = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        let err = limit_error(Path::new("/srv/capture"), &e)
            .unwrap()
            .to_string();
        assert!(err.contains("fs.inotify.max_user_watches"), "{err}");
        assert!(err.contains("sysctl"), "{err}");
        assert!(err.contains("/srv/capture"), "{err}");
        let e = notify::Error::io(std::io::Error::from_raw_os_error(libc_emfile()));
        let err = limit_error(Path::new("/x"), &e).unwrap().to_string();
        assert!(err.contains("fs.inotify.max_user_instances"), "{err}");
        let e = notify::Error::generic("other");
        assert!(limit_error(Path::new("/x"), &e).is_none());
    }

    #[tokio::test]
    async fn a_full_channel_asks_for_a_rescan_instead_of_blocking() {
        let (sink, events) = channel();
        for _ in 0..CHANNEL_CAPACITY + 5 {
            sink.handle(Ok(Event::new(EventKind::Any).add_path("/x".into())));
        }
        assert!(events.rescan.load(Ordering::SeqCst));
        let (sink, events) = channel();
        sink.handle(Ok(
            Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)
        ));
        assert!(events.rescan.load(Ordering::SeqCst));
        events.wake.notified().await;
    }
}
