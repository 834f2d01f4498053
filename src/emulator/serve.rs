//! HTTP serving: the router, the accept loop, one hyper connection per
//! accepted socket, and taking the server down and up again.
//!
//! Each accepted TCP connection is served by hyper directly (not `axum::serve`)
//! so that a fault can drop one connection without a reply.
//!
//! It owns connections, not request rules: those are the handlers' (`upload`,
//! `auth`, `tokens`, `control`, `vod`). Imports nothing from the product.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::catalogue::{self as cat, Problem};
use super::conn::{ConnKill, LocalAddr};
use super::{auth, control, rate, tokens, upload, vod, App};

/// Where the server task is, for [`Emulator::set_down`](super::Emulator::set_down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    Up,
    Down,
    /// The address could not be bound again after a down period.
    Failed(String),
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/upload", post(upload::upload))
        .route("/auth/api-key", post(auth::authenticate))
        .route("/auth/refresh", post(auth::refresh))
        .route("/upload-tokens", get(tokens::list).post(tokens::create))
        .route(
            "/upload-tokens/{token}",
            get(tokens::show).delete(tokens::delete),
        )
        .route("/_emulator/videos", get(control::control_videos))
        .route("/_emulator/stats", get(control::control_stats))
        .route("/_emulator/faults", post(control::control_faults))
        .route("/_emulator/tokens", put(control::control_tokens))
        .route("/vod/{video_id}/hls/manifest.m3u8", get(vod::hls_manifest))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            rate_headers,
        ))
        .with_state(app)
}

/// Adds the `X-RateLimit-*` headers to every response that has none yet,
/// except the public assets' (a CDN serves those, not the API).
async fn rate_headers(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with(vod::PREFIX) {
        return next.run(req).await;
    }
    let mut response = next.run(req).await;
    if !response.headers().contains_key(rate::LIMIT_HEADER) {
        app.rate_peek().apply(response.headers_mut());
    }
    response
}

async fn not_found(req: Request) -> Response {
    upload::drain(&mut req.into_body().into_data_stream()).await;
    Problem::new(cat::UNRECOGNIZED_REQUEST_URL).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    upload::drain(&mut req.into_body().into_data_stream()).await;
    Problem::new(cat::METHOD_NOT_ALLOWED).into_response()
}

/// How long open connections get to finish when the emulator shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a connection storing a chunk gets to send its reply when the
/// server goes down (it may be assembling a large file).
const DOWN_GRACE: Duration = Duration::from_secs(10);
/// How long to keep trying to bind the address again after a down period.
const REBIND_FOR: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown`; goes down and comes back up as
/// `want_down` says, reporting each change on `phase`.
pub(crate) async fn serve(
    mut listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
    mut want_down: watch::Receiver<bool>,
    phase: watch::Sender<Phase>,
) {
    loop {
        // Up: the connections of this period end when it does.
        let tracker = TaskTracker::new();
        let period = CancellationToken::new();
        let stop = loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break true,
                r = want_down.wait_for(|d| *d) => break r.is_err(),
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    tracker.spawn(serve_connection(
                        stream,
                        router.clone(),
                        shutdown.clone(),
                        period.clone(),
                    ));
                }
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "emulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        drop(listener);
        if stop {
            shutdown.cancel();
        } else {
            period.cancel();
        }
        tracker.close();
        tracker.wait().await;
        if stop {
            break;
        }
        tracing::info!(%addr, "emulator down");
        phase.send_replace(Phase::Down);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = want_down.wait_for(|d| !*d) => if r.is_err() { break },
        }
        listener = match rebind(addr, &shutdown).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "emulator: cannot bind the address again");
                phase.send_replace(Phase::Failed(format!("cannot bind {addr} again: {e}")));
                return;
            }
        };
        tracing::info!(%addr, "emulator up again");
        phase.send_replace(Phase::Up);
    }
    tracing::info!("emulator stopped");
}

/// Binds `addr` again, retrying for a while (a connection may hold the port
/// for a moment).
async fn rebind(addr: SocketAddr, shutdown: &CancellationToken) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + REBIND_FOR;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline || shutdown.is_cancelled() => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "emulator: bind failed; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    shutdown: CancellationToken,
    down: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok().map(LocalAddr);
    let resetter = Resetter::new(&stream);
    let conn_kill = ConnKill::new();
    let kill = conn_kill.token.clone();
    let request_kill = conn_kill.clone();
    let tower = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(request_kill.clone());
        if let Some(local) = local {
            req.extensions_mut().insert(local);
        }
        tower.call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "emulator: connection ended with an error");
            }
        }
        _ = kill.cancelled() => {
            tracing::debug!("emulator: dropping a connection (fault)");
            resetter.reset();
        }
        _ = down.cancelled() => {
            if conn_kill.going_down() {
                resetter.reset();
            } else {
                // A chunk is being stored: its reply goes out, then the
                // connection closes.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = kill.cancelled() => resetter.reset(),
                    _ = tokio::time::sleep(DOWN_GRACE) => resetter.reset(),
                }
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = kill.cancelled() => resetter.reset(),
                _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
            }
        }
    }
    // `conn` (and with it the socket) is dropped here.
}

/// Sets `SO_LINGER 0` on a connection about to be dropped so the peer sees a
/// reset. It keeps a duplicate of the socket's descriptor because hyper owns
/// the stream itself.
struct Resetter {
    #[cfg(unix)]
    fd: Option<std::os::fd::OwnedFd>,
}

impl Resetter {
    fn new(stream: &TcpStream) -> Resetter {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            Resetter {
                fd: stream.as_fd().try_clone_to_owned().ok(),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = stream;
            Resetter {}
        }
    }

    fn reset(self) {
        #[cfg(unix)]
        if let Some(fd) = self.fd {
            // The duplicate shares the socket (and its non-blocking mode);
            // dropping it only closes the duplicate descriptor.
            match TcpStream::from_std(std::net::TcpStream::from(fd)) {
                Ok(dup) => {
                    if let Err(e) = dup.set_zero_linger() {
                        tracing::debug!(error = %e, "emulator: cannot set SO_LINGER");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "emulator: cannot set SO_LINGER"),
            }
        }
    }
}
