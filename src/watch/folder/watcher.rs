//! How one folder is watched: inotify, or notify's polling watcher on
//! network filesystems, when asked, or once inotify hits its limits; and
//! the adding of a watch per directory walked.
//!
//! It only manages the watcher: events are read by the folder task and
//! judged by the hint step, never here.

use std::path::Path;

use tracing::{debug, info, warn};

use super::Folder;
use crate::config::WatchMode;
use crate::watch::notifier::{self, Backend, Kind, Sink};
use crate::watch::show;

impl Folder {
    pub(crate) fn is_polling(&self) -> bool {
        self.backend.as_ref().map(Backend::kind) == Some(Kind::Poll)
    }

    /// Starts watching: inotify, or polling on network filesystems, when
    /// asked, or when inotify cannot (its limits). Never fails: the periodic
    /// reconcile is the last resort.
    pub(crate) async fn start_watching(&mut self, sink: Sink) {
        let root = self.root.clone();
        let mode = self.settings.mode;
        let kind = tokio::task::spawn_blocking(move || match mode {
            WatchMode::Events => Kind::Inotify,
            WatchMode::Poll => Kind::Poll,
            WatchMode::Auto => match notifier::network_filesystem_of(&root) {
                Some(fs) => {
                    info!(folder = %show(&root), filesystem = fs,
                        "network filesystem: polling it (inotify does not see other machines' writes)");
                    Kind::Poll
                }
                None => Kind::Inotify,
            },
        })
        .await
        .unwrap_or(Kind::Poll);
        self.sink = Some(sink.clone());
        self.backend = None;
        if kind == Kind::Inotify {
            let made = tokio::task::spawn_blocking(move || Backend::inotify(sink)).await;
            match made {
                Ok(Ok(backend)) => {
                    self.backend = Some(backend);
                    return;
                }
                Ok(Err(e)) => self.warn_fallback(&e),
                Err(e) => warn!(folder = %show(&self.root), error = %e,
                    "cannot start inotify; polling the folder instead"),
            }
        }
        self.start_polling().await;
    }

    fn warn_fallback(&self, e: &notify::Error) {
        match notifier::limit_error(&self.root, e) {
            Some(limit) => warn!(folder = %show(&self.root), "{limit}"),
            None => warn!(folder = %show(&self.root), error = %notifier::describe(e),
                "cannot watch the folder with inotify; polling it instead"),
        }
    }

    /// Replaces the watcher by notify's polling watcher.
    pub(crate) async fn start_polling(&mut self) {
        self.backend = None;
        let Some(sink) = self.sink.clone() else {
            return;
        };
        let root = self.root.clone();
        let recursive = self.settings.recursive;
        let interval = self.settings.poll_interval;
        let follow = self.settings.follow_symlinks;
        let made = tokio::task::spawn_blocking(move || {
            Backend::poll(sink, &root, recursive, interval, follow)
        })
        .await;
        match made {
            Ok(Ok(backend)) => {
                info!(folder = %show(&self.root), interval = %humantime::format_duration(interval),
                    "polling the watch folder");
                self.backend = Some(backend);
            }
            Ok(Err(e)) => warn!(folder = %show(&self.root), error = %notifier::describe(&e),
                "cannot poll the folder; only the periodic scans will find its files"),
            Err(e) => warn!(folder = %show(&self.root), error = %e,
                "cannot poll the folder; only the periodic scans will find its files"),
        }
    }

    /// After an inotify limit: the folder is polled from now on.
    pub(crate) async fn fall_back_to_polling(&mut self) {
        if let Some(e) = self.limit_hit.take() {
            if self.backend.as_ref().map(Backend::kind) == Some(Kind::Inotify) {
                self.warn_fallback(&e);
                self.start_polling().await;
            }
        }
    }
}

/// Adds a watch for `dir` unless a limit was already hit.
pub(super) fn watch_dir(
    backend: Option<&mut Backend>,
    dir: &Path,
    fresh: bool,
    limit: &mut Option<notify::Error>,
) {
    let Some(backend) = backend else {
        return;
    };
    if limit.is_some() {
        return;
    }
    if let Err(e) = backend.watch_dir(dir, fresh) {
        if notifier::inotify_limit(&e).is_some() {
            *limit = Some(e);
        } else {
            // Vanished or unreadable: the walk finds out and says so.
            debug!(dir = %show(dir), error = %notifier::describe(&e), "cannot watch a directory");
        }
    }
}
