//! The public assets of a video, as api.video's CDN serves them: the URLs a
//! Video object's `assets` carry, and `GET|HEAD /vod/{videoId}/hls/manifest.m3u8`.
//!
//! The manifest needs no token (assets are public). It answers 404 for an
//! unknown video or an upload not yet complete, 202 with an empty body while
//! the video is "encoding" (for the emulator's encoding time after its last
//! chunk was stored), then 200 with an HLS master playlist. api.video's own
//! uploader polls `assets.hls` the same way: until the reply is not 202 and
//! has a body. These replies count in no rate-limit bucket and carry no
//! `X-RateLimit-*` headers: a CDN serves them, not the API.
//!
//! The asset URLs point at the emulator itself, at the address the client
//! used (see [`origin`]). Only the manifest is served; the other assets are
//! there for their shape. Imports nothing from the product.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::uri::Authority;
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::catalogue::{self as cat, Problem};
use super::conn::LocalAddr;
use super::store::Playback;
use super::App;

/// The path prefix of every public asset.
pub(crate) const PREFIX: &str = "/vod/";

/// The media type of an HLS playlist (RFC 8216).
const HLS_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";

/// A small master playlist: one 720p variant.
const MASTER_PLAYLIST: &str = "#EXTM3U\n\
#EXT-X-VERSION:3\n\
#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=2000000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\"\n\
720p/manifest.m3u8\n";

/// `scheme://host:port` of the emulator as the client reached it: the
/// authority of an absolute-form request target, else the `Host` header,
/// else the local address of the connection (the concrete address even when
/// listening on `0.0.0.0`). The emulator serves plain HTTP only.
pub(crate) fn origin(parts: &Parts) -> String {
    let authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| {
            let host = parts.headers.get(header::HOST)?.to_str().ok()?;
            Authority::from_str(host).ok()
        })
        // User info has no place in the asset URLs.
        .filter(|a| !a.as_str().contains('@') && !a.host().is_empty())
        .map(|a| a.as_str().to_owned())
        .or_else(|| parts.extensions.get::<LocalAddr>().map(|l| l.0.to_string()))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("http://{authority}")
}

/// The `assets` of a Video object: api.video's URL shapes on `origin`.
pub(crate) fn assets(origin: &str, id: &str) -> Value {
    let player = format!("{origin}{PREFIX}{id}");
    json!({
        "iframe": format!(
            "<iframe src=\"{player}\" width=\"100%\" height=\"100%\" frameborder=\"0\" scrolling=\"no\" allowfullscreen=\"\"></iframe>"
        ),
        "player": player,
        "hls": format!("{origin}{PREFIX}{id}/hls/manifest.m3u8"),
        "thumbnail": format!("{origin}{PREFIX}{id}/thumbnail.jpg"),
        "mp4": format!("{origin}{PREFIX}{id}/mp4/source.mp4"),
    })
}

/// Whether a video completed at `completed` is playable at `now`. An encoding
/// time too large to add to the date means never.
pub(crate) fn is_playable(completed: SystemTime, encoding_time: Duration, now: SystemTime) -> bool {
    completed
        .checked_add(encoding_time)
        .is_some_and(|ready| now >= ready)
}

/// `GET|HEAD /vod/{videoId}/hls/manifest.m3u8` (axum answers HEAD with the
/// GET reply's status and headers, without its body).
pub(crate) async fn hls_manifest(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    app.counters
        .manifest_requests
        .fetch_add(1, Ordering::Relaxed);
    match app.store.manifest_request(&id) {
        Playback::Unknown | Playback::Uploading => Problem::new(cat::RESOURCE_NOT_FOUND)
            .name("videoId")
            .into_response(),
        Playback::Completed(at) if is_playable(at, app.encoding_time(), SystemTime::now()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(HLS_CONTENT_TYPE),
            )],
            MASTER_PLAYLIST,
        )
            .into_response(),
        Playback::Completed(_) => (
            StatusCode::ACCEPTED,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(uri: &str, host: Option<&str>, local: Option<&str>) -> Parts {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        if let Some(l) = local {
            parts.extensions.insert(LocalAddr(l.parse().unwrap()));
        }
        parts
    }

    #[test]
    fn origin_is_what_the_client_used() {
        let local = Some("10.0.0.5:8080");
        assert_eq!(
            origin(&parts("/upload", Some("emu.local:9000"), local)),
            "http://emu.local:9000"
        );
        assert_eq!(
            origin(&parts("/upload", Some("[::1]:9000"), local)),
            "http://[::1]:9000"
        );
        assert_eq!(
            origin(&parts("http://abs:1/upload", Some("other:2"), local)),
            "http://abs:1"
        );
        // No usable Host: the connection's own address.
        assert_eq!(
            origin(&parts("/upload", None, local)),
            "http://10.0.0.5:8080"
        );
        assert_eq!(
            origin(&parts("/upload", Some("a b/c"), local)),
            "http://10.0.0.5:8080"
        );
        assert_eq!(
            origin(&parts("/upload", Some("user@h:1"), local)),
            "http://10.0.0.5:8080"
        );
        assert_eq!(origin(&parts("/upload", None, None)), "http://localhost");
    }

    #[test]
    fn asset_urls_have_api_video_shapes() {
        let a = assets("http://127.0.0.1:4000", "vi1");
        assert_eq!(a["hls"], "http://127.0.0.1:4000/vod/vi1/hls/manifest.m3u8");
        assert_eq!(a["player"], "http://127.0.0.1:4000/vod/vi1");
        assert_eq!(
            a["thumbnail"],
            "http://127.0.0.1:4000/vod/vi1/thumbnail.jpg"
        );
        assert_eq!(a["mp4"], "http://127.0.0.1:4000/vod/vi1/mp4/source.mp4");
        assert!(a["iframe"]
            .as_str()
            .is_some_and(|i| i.starts_with("<iframe src=\"http://127.0.0.1:4000/vod/vi1\"")));
    }

    #[test]
    fn playable_after_the_encoding_time_never_overflows() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let s = Duration::from_secs(3);
        assert!(is_playable(t, Duration::ZERO, t));
        assert!(!is_playable(t, s, t + Duration::from_secs(2)));
        assert!(is_playable(t, s, t + s));
        assert!(!is_playable(
            t,
            Duration::MAX,
            t + Duration::from_secs(1 << 40)
        ));
    }

    #[test]
    fn the_playlist_is_a_master_playlist() {
        assert!(MASTER_PLAYLIST.starts_with("#EXTM3U\n"));
        assert!(MASTER_PLAYLIST.contains("#EXT-X-STREAM-INF:BANDWIDTH="));
        assert!(MASTER_PLAYLIST.ends_with(".m3u8\n"));
    }
}
