//! `POST /upload?token=…`: faults, rate limit, authentication, streaming
//! multipart parsing into a temporary file, then the video rules.
//!
//! A file part is a part with a file name (or a field named `file`). As at
//! api.video, the one file part of a request is taken whatever its field
//! name; none is `uploaded-file-no-file`, two or more are
//! `uploaded-file-multiple-files`.
//!
//! It applies faults but does not choose them (`faults`), and leaves the
//! per-video rules to `store`. Imports nothing from the product.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::BodyDataStream;
use axum::extract::{Request, State};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::catalogue::{self as cat, Problem};
use super::conn::ConnKill;
use super::faults::Fault;
use super::range::{self, ContentRange};
use super::rate::RateBucket;
use super::store::{Accepted, Chunk, MAX_CHUNK};
use super::{vod, App};

/// Longest `videoId` value kept (anything longer cannot name a video).
const MAX_VIDEO_ID_FIELD: usize = 256;
/// How much of the body a `ResetMidBody` fault reads when the length is unknown.
const RESET_READ_UNKNOWN: u64 = 64 * 1024;

pub(super) async fn upload(State(app): State<Arc<App>>, req: Request) -> Response {
    let kill = req.extensions().get::<ConnKill>().cloned();
    if let Some(k) = &kill {
        k.request_started();
    }
    app.counters.upload_requests.fetch_add(1, Ordering::Relaxed);
    let fault = app.next_fault();
    if let Some(f) = &fault {
        app.counters.faults_injected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(fault = ?f, "emulator: injecting fault");
    }
    if let Some(Fault::Latency(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }
    let rate = app.rate_acquire(RateBucket::Uploads);
    let (parts, body) = req.into_parts();
    let mut body = body.into_data_stream();

    let mut response = match fault {
        Some(Fault::Status503) => {
            drain(&mut body).await;
            Problem::new(cat::SERVICE_UNAVAILABLE).into_response()
        }
        Some(Fault::ResetMidBody) => {
            let want = content_length(&parts)
                .map(|n| (n / 2).max(1))
                .unwrap_or(RESET_READ_UNKNOWN);
            read_some(&mut body, want).await;
            kill_connection(kill.as_ref()).await;
            // Only reached when the request did not come through our server loop.
            Problem::new(cat::SERVER_ERROR).into_response()
        }
        Some(Fault::Reject(ref slug)) => {
            drain(&mut body).await;
            let error = cat::ALL
                .iter()
                .find(|e| e.slug == Some(slug.as_str()))
                .copied()
                .unwrap_or(cat::INVALID_PAYLOAD);
            Problem::new(error).into_response()
        }
        _ if !rate.allowed => {
            drain(&mut body).await;
            Problem::new(cat::TOO_MANY_REQUESTS).into_response()
        }
        _ => match handle(&app, &parts, &mut body).await {
            Ok(Accepted::Intermediate(video_id)) => (
                StatusCode::CREATED,
                Json(serde_json::json!({ "videoId": video_id })),
            )
                .into_response(),
            Ok(Accepted::Complete(video)) => (StatusCode::CREATED, Json(video)).into_response(),
            Err(problem) => problem.into_response(),
        },
    };
    if fault == Some(Fault::GarbageReply) {
        let status = response.status();
        response = (status, "<html><body>502 Bad Gateway (proxy)</body></html>").into_response();
    }
    rate.apply(response.headers_mut());
    app.record_status(response.status());
    tracing::debug!(
        status = response.status().as_u16(),
        content_range = ?parts.headers.get(header::CONTENT_RANGE),
        "emulator: POST /upload"
    );
    if fault == Some(Fault::LostReply) {
        kill_connection(kill.as_ref()).await;
    }
    response
}

#[derive(Deserialize)]
struct UploadQuery {
    token: Option<String>,
}

/// Everything after the faults and the rate limit.
async fn handle(app: &App, parts: &Parts, body: &mut BodyDataStream) -> Result<Accepted, Problem> {
    let token = axum::extract::Query::<UploadQuery>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|q| q.0.token)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        drain(body).await;
        return Err(Problem::new(cat::AUTHENTICATION_MISSING_UPLOAD_TOKEN).name("token"));
    };
    if !app.token_is_valid(&token) {
        drain(body).await;
        return Err(Problem::new(cat::AUTHENTICATION_INVALID_UPLOAD_TOKEN).name("token"));
    }
    let range = match parts.headers.get(header::CONTENT_RANGE) {
        None => None,
        Some(value) => match value.to_str().ok().and_then(range::parse) {
            Some(r) => Some(r),
            None => {
                drain(body).await;
                return Err(Problem::new(cat::CR_MALFORMED).name("Content-Range"));
            }
        },
    };
    let boundary = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        drain(body).await;
        return Err(Problem::new(cat::UPLOADED_FILE_NO_FILE).name("file"));
    };

    let received = receive(app, body, boundary).await;
    drain(body).await;
    let received = received?;

    let file = match (received.file_parts, received.file) {
        (0, _) | (_, None) => return Err(Problem::new(cat::UPLOADED_FILE_NO_FILE).name("file")),
        (1, Some(file)) => file,
        _ => return Err(Problem::new(cat::UPLOADED_FILE_MULTIPLE_FILES).name("file")),
    };
    if file.size == 0 {
        return Err(Problem::new(cat::UPLOADED_FILE_EMPTY).name("file"));
    }
    // A server going down stores nothing more on this connection; once the
    // chunk is being stored, it sends the reply before closing.
    let conn = parts.extensions.get::<ConnKill>();
    if conn.is_some_and(|k| !k.begin_store()) {
        kill_connection(conn).await;
    }
    apply(app, received.video_id, range, file, vod::origin(parts)).await
}

/// Applies the chunk in its own task, so that a client that goes away while
/// the chunk is being stored cannot leave the video half-updated.
async fn apply(
    app: &App,
    video_id: Option<String>,
    range: Option<ContentRange>,
    chunk: Chunk,
    origin: String,
) -> Result<Accepted, Problem> {
    let store = Arc::clone(&app.store);
    let task = tokio::spawn(async move {
        store
            .apply(video_id.as_deref(), range, chunk, &origin)
            .await
    });
    match task.await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "emulator: chunk task failed");
            Err(Problem::new(cat::SERVER_ERROR))
        }
    }
}

#[derive(Default)]
struct Received {
    /// The first file part, whatever its field name: api.video takes the one
    /// file of the request (the official Node.js client names the field
    /// after the file).
    file: Option<Chunk>,
    /// How many file parts the request held.
    file_parts: u32,
    video_id: Option<String>,
}

/// Reads the multipart body: the first file part goes to a temporary file (at
/// most [`MAX_CHUNK`] bytes are written; the rest is only counted, since a
/// larger body is always rejected), other parts are read and discarded.
async fn receive(
    app: &App,
    body: &mut BodyDataStream,
    boundary: String,
) -> Result<Received, Problem> {
    let mut multipart = multer::Multipart::new(body, boundary);
    let mut received = Received::default();
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(invalid_payload(&e)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        if file_name.is_some() || name == "file" {
            received.file_parts += 1;
            if received.file.is_some() {
                while let Some(bytes) = field.chunk().await.map_err(|e| invalid_payload(&e))? {
                    app.counters
                        .body_bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                continue;
            }
            let (tmp, mut out) = app.store.temp_file().await.map_err(|e| io_problem(&e))?;
            let mut size = 0u64;
            while let Some(bytes) = field.chunk().await.map_err(|e| invalid_payload(&e))? {
                let n = bytes.len() as u64;
                app.counters.body_bytes.fetch_add(n, Ordering::Relaxed);
                if size + n <= MAX_CHUNK {
                    out.write_all(&bytes).await.map_err(|e| io_problem(&e))?;
                }
                size += n;
            }
            out.flush().await.map_err(|e| io_problem(&e))?;
            drop(out);
            received.file = Some(Chunk {
                tmp,
                size,
                file_name,
            });
        } else if name == "videoId" {
            let mut value = Vec::new();
            while let Some(bytes) = field.chunk().await.map_err(|e| invalid_payload(&e))? {
                let room = MAX_VIDEO_ID_FIELD.saturating_sub(value.len());
                value.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            let value = String::from_utf8_lossy(&value).into_owned();
            if received.video_id.is_none() && !value.is_empty() {
                received.video_id = Some(value);
            }
        } else {
            while field
                .chunk()
                .await
                .map_err(|e| invalid_payload(&e))?
                .is_some()
            {}
        }
    }
    Ok(received)
}

fn invalid_payload(e: &multer::Error) -> Problem {
    Problem::new(cat::INVALID_PAYLOAD).detail(e.to_string())
}

fn io_problem(e: &std::io::Error) -> Problem {
    tracing::error!(error = %e, "emulator: cannot store the request body");
    Problem::new(cat::SERVER_ERROR)
}

fn content_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads and discards the rest of a body (so a client in the middle of
/// sending sees a clean response, not a broken pipe).
pub(super) async fn drain(body: &mut BodyDataStream) {
    while let Some(item) = body.next().await {
        if item.is_err() {
            break;
        }
    }
}

/// Reads at least `want` bytes of the body (or all of it).
async fn read_some(body: &mut BodyDataStream, want: u64) {
    let mut read = 0u64;
    while read < want {
        match body.next().await {
            Some(Ok(bytes)) => read += bytes.len() as u64,
            _ => break,
        }
    }
}

/// Drops the request's TCP connection (with a reset) and never returns; the
/// handler is dropped with the connection. Returns at once when the request
/// did not come through the emulator's own connection loop.
async fn kill_connection(kill: Option<&ConnKill>) {
    if let Some(kill) = kill {
        kill.kill();
        std::future::pending::<()>().await;
    }
}
