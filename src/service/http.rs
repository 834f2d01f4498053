//! The `[metrics] listen` endpoint: `GET /metrics` (Prometheus text format)
//! and `GET /healthz` (JSON, 200 or 503).

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics::{Exposition, JournalView};
use super::{scrub, Vitals, WatchersState};
use crate::journal::now_ms;

/// A scrape does not wait longer than this for the journal (it may be busy
/// with a large batch); the counters are served without the journal gauges.
const JOURNAL_WAIT: Duration = Duration::from_secs(5);
/// On shutdown, how long open connections get to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot listen on {addr} (metrics.listen): {source}; choose another address or port, or remove [metrics] listen to turn the endpoint off")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the metrics endpoint on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `"ok"`, or `"refused"` when the server refused the upload token.
    pub token: &'static str,
    /// `"ok"`, or `"refused"` when the TLS handshake with the server is
    /// refused (an untrusted authority, an expired certificate, another
    /// name, no TLS on the port).
    pub tls: &'static str,
    /// `"ok"`, `"starting"` (first scan not done), `"unavailable"` (a watch
    /// folder is away: a share unmounted or not answering) or `"stopped"`.
    pub watchers: &'static str,
    /// Why it is unhealthy, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Health {
    pub fn of(vitals: &Vitals) -> Health {
        let gate = vitals.gate.state();
        let refused = gate.refused;
        let watchers = vitals.watchers.state();
        let mut reasons = Vec::new();
        if let Some(why) = &refused {
            reasons.push(format!(
                "uploads paused: upload token refused: {}",
                scrub(why)
            ));
        }
        if let Some(why) = &gate.tls {
            reasons.push(format!("uploads paused: {}", scrub(why)));
        }
        if let Some(since) = vitals.journal.disk().away_since() {
            reasons.push(format!(
                "everything paused: the journal's database does not answer (for {}s); no file is claimed, every file keeps its state, and work resumes by itself when it is back",
                (now_ms() - since).max(0) / 1000
            ));
        }
        if let Some(since) = vitals.journal.disk().full_since() {
            reasons.push(format!(
                "everything paused: the journal's disk is full (for {}s); free space on it and work resumes by itself",
                (now_ms() - since).max(0) / 1000
            ));
        }
        if let Some(away) = vitals.shares.summary() {
            reasons.push(format!(
                "{}; its uploads wait and nothing under it is marked gone",
                scrub(&away)
            ));
        }
        match &watchers {
            WatchersState::Running => {}
            WatchersState::Starting => {
                reasons.push("the first scan of the watch folders is not finished".to_owned())
            }
            WatchersState::Stopped(why) => {
                reasons.push(format!("the watch stage stopped: {}", scrub(why)))
            }
        }
        Health {
            token: if refused.is_some() { "refused" } else { "ok" },
            tls: if gate.tls.is_some() { "refused" } else { "ok" },
            watchers: if watchers == WatchersState::Running && !vitals.shares.away().is_empty() {
                "unavailable"
            } else {
                watchers.as_str()
            },
            reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.reason.is_none()
    }
}

/// The endpoint, bound but not yet serving: binding first lets the daemon
/// refuse to start on a taken port, and tests learn the port of `:0`.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    pub async fn bind(listen: SocketAddr) -> Result<MetricsServer, ServiceError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServiceError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServiceError::Bind {
            addr: listen,
            source,
        })?;
        Ok(MetricsServer { listener, addr })
    }

    /// The address actually bound (the port chosen for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `cancel`, then gives open connections a moment.
    pub async fn serve(
        self,
        vitals: Vitals,
        cancel: CancellationToken,
    ) -> Result<(), ServiceError> {
        let addr = self.addr;
        info!(%addr, "metrics on http://{addr}/metrics, health on http://{addr}/healthz");
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .with_state(vitals);
        let stop = cancel.clone();
        let server = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .into_future();
        tokio::pin!(server);
        // A client that keeps its connection open must not hold the
        // daemon's exit: after the grace period the server is dropped.
        let deadline = async {
            cancel.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            r = &mut server => r.map_err(|source| ServiceError::Serve { addr, source }),
            _ = deadline => Ok(()),
        }
    }
}

/// Binds `listen` and serves `/metrics` and `/healthz` until `cancel`.
pub async fn serve_metrics(
    listen: SocketAddr,
    vitals: Vitals,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    MetricsServer::bind(listen)
        .await?
        .serve(vitals, cancel)
        .await
}

async fn journal_view(vitals: &Vitals) -> Option<JournalView> {
    let read = vitals.journal.call(|j| {
        Ok(JournalView {
            counts: j.counts()?,
            oldest_waiting_since: j.oldest_waiting_since()?,
            unfinished_by_root: j.unfinished_by_root()?,
            orphans: j.orphan_count()?,
            hooks_pending: j.pending_by_hook()?,
        })
    });
    match tokio::time::timeout(JOURNAL_WAIT, read).await {
        Ok(Ok(view)) => Some(view),
        Ok(Err(e)) => {
            warn!("metrics: cannot read the journal: {e}");
            None
        }
        Err(_) => {
            warn!(
                "metrics: the journal did not answer within {}s",
                JOURNAL_WAIT.as_secs()
            );
            None
        }
    }
}

async fn metrics(State(vitals): State<Vitals>) -> Response {
    let journal = journal_view(&vitals).await;
    let watches = vitals.watches.get();
    let body = Exposition {
        counters: vitals.metrics.snapshot(),
        journal,
        now_ms: now_ms(),
        token_ok: vitals.gate.state().refused.is_none(),
        tls_ok: vitals.gate.state().tls.is_none(),
        watchers_ok: vitals.watchers.state() == WatchersState::Running
            && vitals.shares.away().is_empty(),
        watches: &watches,
        hook_keys: &vitals.hook_keys,
        hook_deliveries: vitals.hooks.snapshot(),
        bandwidth: vitals.throttle.now(),
    }
    .render();
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response()
}

async fn healthz(State(vitals): State<Vitals>) -> Response {
    let health = Health::of(&vitals);
    let status = if health.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}
