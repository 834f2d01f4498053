//! SIGHUP: the configuration read again and applied to what runs. What a
//! reload cannot change is named, and keeps its start-up value. The
//! bandwidth timetable, configuration applied by the clock, is followed
//! here too.

use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::DaemonError;
use crate::config::{self, Settings};
use crate::service::Notifier;
use crate::upload::Uploader;

/// Applies a reloaded configuration to running workers: a new token and a
/// new HTTP client (the trust store read again) reopen the gate; the bandwidth limit (or timetable) and the number of workers change at once;
/// a new list of watch folders restarts the watch stage. The journal, the
/// server and the chunk size stay as they were (a restart changes them).
pub fn apply_reload(uploader: &Uploader, settings: &Settings) -> Result<(), DaemonError> {
    let token = settings.require_token()?.clone();
    // First what can fail, so that a refused reload changes nothing.
    uploader.client.rebuild_http()?;
    uploader.client.set_token(token);
    uploader.gate.replaced();
    uploader
        .throttle
        .set_limit(settings.upload.bandwidth_limit.clone());
    uploader
        .slots
        .send_replace(settings.upload.concurrency.max(1));
    uploader.watches.set(settings.watches.clone());
    uploader.work.notify_waiters();
    Ok(())
}

/// The settings a reload cannot apply that differ from those ingestd
/// started with.
fn needs_restart(started: &Settings, new: &Settings) -> Vec<&'static str> {
    [
        ("api.base_url", started.api.base_url != new.api.base_url),
        (
            "api.chunk_size",
            started.api.chunk_size != new.api.chunk_size,
        ),
        ("journal.path", started.journal.path != new.journal.path),
        (
            "journal.url, password, node, lease or heartbeat",
            started.journal.postgres != new.journal.postgres,
        ),
        ("metrics.listen", started.metrics != new.metrics),
        ("log.format", started.log.format != new.log.format),
        (
            "upload.in_doubt",
            started.upload.in_doubt != new.upload.in_doubt,
        ),
        ("upload.sha256", started.upload.sha256 != new.upload.sha256),
        (
            "upload.playable_timeout",
            started.upload.playable_timeout != new.upload.playable_timeout,
        ),
        ("[[hook]]", started.hooks != new.hooks),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Where reload requests come from: `main` turns each SIGHUP into one.
#[derive(Debug)]
pub struct Reloads {
    requests: mpsc::Receiver<()>,
    /// The configuration file read again (`None`: the default one).
    config_path: Option<PathBuf>,
    /// Why no request can come (SIGHUP could not be listened for), said
    /// once the daemon logs.
    off: Option<String>,
}

impl Reloads {
    /// Reloads asked for on `requests`, reading `config_path` again.
    pub fn new(requests: mpsc::Receiver<()>, config_path: Option<PathBuf>) -> Reloads {
        Reloads {
            requests,
            config_path,
            off: None,
        }
    }

    /// Nothing ever asks for a reload (the demo).
    pub fn none() -> Reloads {
        Reloads::new(mpsc::channel(1).1, None)
    }

    /// Nothing can ask for a reload, for this reason (logged by the daemon).
    pub fn off(why: String) -> Reloads {
        Reloads {
            off: Some(why),
            ..Reloads::none()
        }
    }
}

/// Re-reads the configuration on each request until `stop`; a bad one is
/// logged and ignored. Meanwhile, follows the bandwidth timetable's
/// boundaries.
pub(super) async fn follow_reloads(
    uploader: Uploader,
    reloads: Reloads,
    started: Settings,
    notifier: Option<Notifier>,
    stop: CancellationToken,
) {
    let Reloads {
        mut requests,
        config_path,
        off,
    } = reloads;
    if let Some(why) = off {
        warn!("cannot listen for SIGHUP, reloading is off: {why}");
    }
    let mut listening = true;
    loop {
        tokio::select! {
            asked = requests.recv(), if listening => if asked.is_none() {
                listening = false;
                continue;
            },
            // A timetable's boundaries are applied (and logged) on time,
            // even while nothing uploads.
            _ = uploader.throttle.next_boundary() => continue,
            _ = stop.cancelled() => return,
        }
        info!("SIGHUP: reloading the configuration");
        if let Some(n) = &notifier {
            n.reloading();
        }
        let path = config_path.clone();
        let load = tokio::task::spawn_blocking(move || config::load(path.as_deref()));
        // A stop does not wait for a read stuck on a dead mount.
        let loaded = tokio::select! {
            loaded = load => loaded,
            _ = stop.cancelled() => return,
        };
        let applied = match loaded {
            Ok(Ok(settings)) => {
                let ignored = needs_restart(&started, &settings);
                if !ignored.is_empty() {
                    warn!(
                        "changed in the configuration but applied only by a restart: {}; \
                         ingestd keeps using the values it started with",
                        ignored.join(", ")
                    );
                }
                apply_reload(&uploader, &settings).map_err(|e| e.to_string())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("reloading failed: {e}")),
        };
        match applied {
            Ok(()) => info!("configuration reloaded; uploads resume"),
            Err(e) => error!("the new configuration is refused, the old one stays: {e}"),
        }
        // Ends the reload for systemd, whatever its outcome.
        if let Some(n) = &notifier {
            n.ready();
        }
    }
}
