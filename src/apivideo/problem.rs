//! What api.video's replies mean: the rate-limit headers, problem-JSON
//! bodies, and every status classified once into an [`ApiError`] that says
//! what the caller must do (retry, pause everything, give up on the file).
//! Server text is scrubbed of the token before it is kept. No requests here.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::Deserialize;

use super::MAX_REPLY_BYTES;
use crate::config::UploadToken;

/// An accepted request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// The videoId of the reply, when it could be read.
    pub video_id: Option<String>,
    /// The full Video object, when the reply carries more than the videoId
    /// (the completing chunk).
    pub video: Option<serde_json::Value>,
    pub rate: RateInfo,
}

/// The rate-limit headers api.video puts on every response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Seconds until the window resets.
    pub retry_after: Option<u64>,
}

impl RateInfo {
    pub(crate) fn from_headers(h: &HeaderMap) -> RateInfo {
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        RateInfo {
            limit: num("x-ratelimit-limit"),
            remaining: num("x-ratelimit-remaining"),
            retry_after: num("x-ratelimit-retry-after"),
        }
    }
}

/// A problem-JSON error body: `{type, title, status, detail?, name?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Problem {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl Problem {
    /// The problem in an error reply's body, or one that says what the body
    /// was. Every field passes through `clean` (to remove secrets), and
    /// control characters become spaces: server text goes into logs, where
    /// it must not start lines of its own.
    pub(crate) fn from_reply(body: &[u8], clean: impl Fn(&str) -> String) -> Problem {
        let mut problem: Problem = serde_json::from_slice(body).unwrap_or_else(|_| Problem {
            title: Some(if body.is_empty() {
                "empty reply".to_owned()
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                format!("unreadable reply: {}", text.trim())
            }),
            ..Problem::default()
        });
        for field in [
            &mut problem.kind,
            &mut problem.title,
            &mut problem.detail,
            &mut problem.name,
        ] {
            if let Some(v) = field.as_mut() {
                *v = clean(v)
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
            }
        }
        problem
    }

    /// The last path segment of `type`, e.g. `video-content-range-by-bytes-range-overlap`.
    pub fn slug(&self) -> Option<&str> {
        let t = self.kind.as_deref()?;
        t.rsplit('/').next().filter(|s| !s.is_empty())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.title) {
            (Some(k), Some(t)) => write!(f, "{k}: {t}")?,
            (Some(k), None) => write!(f, "{k}")?,
            (None, Some(t)) => write!(f, "{t}")?,
            (None, None) => write!(f, "no problem details")?,
        }
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// What the caller must do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try the same chunk again later (backoff).
    Retry,
    /// The token (or the account) is refused: pause all uploads, keep every file's state.
    Token,
    /// The TLS handshake is refused (an untrusted authority, an expired
    /// certificate, another name, no TLS on the port): pause all uploads
    /// until it works again.
    Tls,
    /// This file cannot be uploaded as it is: mark it failed.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing reached the server (connection refused, DNS): safe to resend.
    #[error("cannot connect to {base}: {message}")]
    Connect { base: String, message: String },
    /// The request may or may not have been stored (reset, timeout, lost reply).
    #[error("request to {base} failed mid-way: {message}")]
    Ambiguous { base: String, message: String },
    /// The TLS handshake failed, while connecting, for a reason that does
    /// not pass by itself: nothing was sent.
    #[error("TLS with {host} failed: {cause}; {todo}")]
    Tls {
        host: String,
        cause: String,
        todo: String,
    },
    /// 401, or a suspended account: no upload can succeed with this token.
    #[error("upload token refused ({status}): {problem}")]
    Token { status: u16, problem: Problem },
    /// A redirect, or a URL the server does not know: `api.base_url` is
    /// wrong for every file, so everything pauses.
    #[error("the server at {base} answered {status} {detail}: check api.base_url")]
    Endpoint {
        base: String,
        status: u16,
        detail: String,
    },
    /// 429: wait `retry_after`.
    #[error("rate limited by the server (429); retry in {}s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// 5xx or another transient status.
    #[error("server error {status}: {problem}")]
    Server { status: u16, problem: Problem },
    /// Another 4xx: the file itself is refused.
    #[error("rejected ({status}) {problem}")]
    Rejected { status: u16, problem: Problem },
    /// The request could not be built (a local file error while streaming, or a bug).
    #[error("{0}")]
    Local(String),
}

impl ApiError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::Connect { .. }
            | ApiError::Ambiguous { .. }
            | ApiError::RateLimited { .. }
            | ApiError::Server { .. }
            | ApiError::Local(_) => ErrorClass::Retry,
            ApiError::Token { .. } | ApiError::Endpoint { .. } => ErrorClass::Token,
            ApiError::Rejected { .. } => ErrorClass::Permanent,
            ApiError::Tls { .. } => ErrorClass::Tls,
        }
    }

    /// Whether the request may have been stored although no reply says so.
    pub(crate) fn is_ambiguous(&self) -> bool {
        matches!(self, ApiError::Ambiguous { .. })
    }

    fn slug(&self) -> Option<&str> {
        match self {
            ApiError::Rejected { problem, .. } => problem.slug(),
            _ => None,
        }
    }

    /// The server already holds this range (or part): after an ambiguous
    /// failure this means "already stored".
    pub(crate) fn is_already_stored(&self) -> bool {
        matches!(
            self.slug(),
            Some("video-content-range-by-bytes-range-overlap")
                | Some("video-content-range-by-part-part-already-sent")
        )
    }

    /// The video is already complete: a resent last chunk that was stored.
    pub(crate) fn is_already_complete(&self) -> bool {
        self.slug() == Some("video-source-already-uploaded")
    }

    /// The videoId sent does not exist (any more) on the server.
    pub(crate) fn is_unknown_video(&self) -> bool {
        matches!(self, ApiError::Rejected { status: 404, problem } if problem.slug() != Some("unrecognized-request-url"))
    }
}

/// A reply body, at most [`MAX_REPLY_BYTES`] of it.
pub(crate) async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_REPLY_BYTES.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(out)
}

/// The error and its causes on one line, without the request URL.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Removes the token from text that came from elsewhere (a server's detail).
pub(crate) fn scrub(text: &str, token: &UploadToken) -> String {
    redact(text, [Some(token.expose())])
}

/// `text` with every non-empty secret replaced by `<redacted>`: the one way
/// server text loses the secrets it may echo (upload token, API key, access
/// token).
pub(crate) fn redact<'a>(text: &str, secrets: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let mut out = text.to_owned();
    for secret in secrets.into_iter().flatten() {
        if !secret.is_empty() {
            out = out.replace(secret, "<redacted>");
        }
    }
    out
}

pub(super) fn transport_error(base: &str, e: reqwest::Error, token: &UploadToken) -> ApiError {
    let connect = e.is_connect();
    let host = e
        .url()
        .and_then(|u| u.host_str())
        .unwrap_or("the server")
        .to_owned();
    let e = e.without_url();
    if let Some(t) = super::tls::refused_handshake(&e) {
        return ApiError::Tls {
            host,
            cause: scrub(&t.cause, token),
            todo: t.todo,
        };
    }
    let mut message = scrub(&chain(&e), token);
    if let Some(t) = super::tls::tls_trouble(&e) {
        // TLS trouble on a connection already up (a record garbled, an
        // alert mid-reply): the request may have got through, so it is in
        // doubt like any other broken exchange.
        message = format!(
            "TLS broke off mid-request: {} ({message})",
            scrub(&t.cause, token)
        );
    }
    if connect {
        ApiError::Connect {
            base: base.to_owned(),
            message,
        }
    } else {
        ApiError::Ambiguous {
            base: base.to_owned(),
            message,
        }
    }
}

/// Turns a status and a body into a [`Reply`] or the [`ApiError`] it means.
pub fn classify(
    status: StatusCode,
    rate: RateInfo,
    body: &[u8],
    token: &UploadToken,
) -> Result<Reply, ApiError> {
    let code = status.as_u16();
    if status.is_success() {
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let video_id = json
            .as_ref()
            .and_then(|v| v.get("videoId"))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let video = json.filter(|v| v.as_object().is_some_and(|o| o.len() > 1));
        return Ok(Reply {
            status: code,
            video_id,
            video,
            rate,
        });
    }
    let problem = Problem::from_reply(body, |v| scrub(v, token));
    if status.is_redirection() || problem.slug() == Some("unrecognized-request-url") {
        return Err(ApiError::Endpoint {
            base: String::new(),
            status: code,
            detail: if status.is_redirection() {
                "(a redirect)".to_owned()
            } else {
                format!("({problem})")
            },
        });
    }
    Err(match code {
        401 | 403 => ApiError::Token {
            status: code,
            problem,
        },
        429 => ApiError::RateLimited {
            retry_after: Duration::from_secs(rate.retry_after.unwrap_or(1).max(1)),
        },
        408 | 425 | 500..=599 => ApiError::Server {
            status: code,
            problem,
        },
        _ => ApiError::Rejected {
            status: code,
            problem,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> UploadToken {
        UploadToken::new("to1secretSECRETsecret")
    }

    fn problem_body(slug: &str, status: u16) -> Vec<u8> {
        format!(
            r#"{{"type":"https://docs.api.video/reference/{slug}","title":"T","status":{status}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn success_replies() {
        let r = classify(
            StatusCode::CREATED,
            RateInfo::default(),
            br#"{"videoId":"vi123"}"#,
            &tok(),
        )
        .unwrap();
        assert_eq!(r.video_id.as_deref(), Some("vi123"));
        assert!(r.video.is_none(), "an intermediate reply is not a Video");
        let r = classify(
            StatusCode::CREATED,
            RateInfo::default(),
            br#"{"videoId":"vi123","title":"x"}"#,
            &tok(),
        )
        .unwrap();
        assert!(r.video.is_some());
        // Garbage on a 2xx is still an acceptance, without a videoId.
        let r = classify(StatusCode::CREATED, RateInfo::default(), b"<html>", &tok()).unwrap();
        assert_eq!(r.video_id, None);
    }

    #[test]
    fn every_status_class_is_classified() {
        let c = |status: u16, body: &[u8]| {
            classify(
                StatusCode::from_u16(status).unwrap(),
                RateInfo {
                    retry_after: Some(7),
                    ..RateInfo::default()
                },
                body,
                &tok(),
            )
            .unwrap_err()
        };
        let e = c(
            401,
            &problem_body("authentication-invalid-upload-token", 401),
        );
        assert_eq!(e.class(), ErrorClass::Token);
        assert_eq!(c(403, b"").class(), ErrorClass::Token);
        let e = c(429, &problem_body("too-many-requests", 429));
        assert_eq!(e.class(), ErrorClass::Retry);
        assert!(
            matches!(e, ApiError::RateLimited { retry_after } if retry_after == Duration::from_secs(7))
        );
        for s in [500, 502, 503, 504, 408] {
            assert_eq!(c(s, b"oops").class(), ErrorClass::Retry, "{s}");
        }
        let e = c(400, &problem_body("uploaded-file-too-large", 400));
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e.to_string().contains("uploaded-file-too-large"), "{e}");
        let e = c(
            400,
            &problem_body("video-content-range-by-bytes-range-overlap", 400),
        );
        assert!(e.is_already_stored());
        let e = c(400, &problem_body("video-source-already-uploaded", 400));
        assert!(e.is_already_complete());
        let e = c(404, &problem_body("resource-not-found", 404));
        assert!(e.is_unknown_video());
        assert_eq!(e.class(), ErrorClass::Permanent);
        // A wrong base_url affects every file: pause, do not fail them all.
        let e = c(404, &problem_body("unrecognized-request-url", 404));
        assert!(!e.is_unknown_video());
        assert_eq!(e.class(), ErrorClass::Token);
        assert!(e.to_string().contains("api.base_url"), "{e}");
        assert_eq!(c(302, b"").class(), ErrorClass::Token);
        // Garbage JSON on an error status still classifies by status.
        let e = c(400, b"{not json");
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e.to_string().contains("unreadable reply"), "{e}");
    }

    #[test]
    fn token_is_scrubbed_from_server_text() {
        let body = br#"{"type":"x","title":"bad token to1secretSECRETsecret","status":401}"#;
        let e = classify(StatusCode::UNAUTHORIZED, RateInfo::default(), body, &tok()).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("to1secretSECRETsecret"), "{shown}");
    }

    #[test]
    fn server_text_cannot_forge_log_lines() {
        let body = b"<html>\nERROR forged line\r\n</html>";
        let e = classify(StatusCode::BAD_GATEWAY, RateInfo::default(), body, &tok()).unwrap_err();
        let shown = e.to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r'), "{shown:?}");
        let body = br#"{"type":"x","title":"a\nb","status":400}"#;
        let e = classify(StatusCode::BAD_REQUEST, RateInfo::default(), body, &tok()).unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn rate_headers_are_read() {
        let mut h = HeaderMap::new();
        h.insert("X-RateLimit-Limit", "100".parse().unwrap());
        h.insert("X-RateLimit-Remaining", "0".parse().unwrap());
        h.insert("X-RateLimit-Retry-After", "12".parse().unwrap());
        assert_eq!(
            RateInfo::from_headers(&h),
            RateInfo {
                limit: Some(100),
                remaining: Some(0),
                retry_after: Some(12)
            }
        );
    }
}
