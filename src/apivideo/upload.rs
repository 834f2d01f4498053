//! The upload client: `POST {base_url}/upload?token=…` with a multipart body
//! (one `file` part, an optional `videoId` field) and, for files larger than
//! a chunk, `Content-Range`. The token travels only in the request URL,
//! which never reaches an error message or a log line. What a reply means
//! is `problem`'s.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::header::CONTENT_RANGE;
use reqwest::multipart::{Form, Part};
use reqwest::{Body, Url};

use super::problem::{
    chain, classify, read_limited, scrub, transport_error, ApiError, RateInfo, Reply,
};
use super::tls::refused_handshake;
use super::{ByteRange, USER_AGENT};
use crate::config::{ApiSettings, UploadToken};

/// Builds the HTTP client every request of the process uses.
pub fn http_client() -> Result<reqwest::Client, ApiError> {
    // reqwest is built without a bundled TLS provider choice; ring is ours.
    // An error means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        .tcp_keepalive(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(60))
        // A redirect would carry the token (in the URL and the Referer) to
        // another host, and turn the POST into a GET of some portal page.
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .build()
        .map_err(|e| ApiError::Local(format!("cannot build the HTTP client: {}", chain(&e))))
}

/// The api.video upload client. Cheap to clone; the token and the HTTP
/// client (with the trust store it read) can be replaced while uploads run
/// (SIGHUP).
#[derive(Clone)]
pub struct Client {
    http: Arc<RwLock<reqwest::Client>>,
    base_url: Url,
    token: Arc<RwLock<UploadToken>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(base_url: Url, token: UploadToken) -> Result<Client, ApiError> {
        Ok(Client {
            http: Arc::new(RwLock::new(http_client()?)),
            base_url,
            token: Arc::new(RwLock::new(token)),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    pub fn set_token(&self, token: UploadToken) {
        // A poisoned lock only means a writer panicked mid-assignment of a
        // whole value; the value itself is still a valid token.
        let mut t = self.token.write().unwrap_or_else(|p| p.into_inner());
        *t = token;
    }

    /// Builds the HTTP client again, so that the trust store (the system's,
    /// or the bundle `SSL_CERT_FILE` names) is read again. Requests on
    /// their way finish on the old one.
    pub fn rebuild_http(&self) -> Result<(), ApiError> {
        self.set_http(http_client()?);
        Ok(())
    }

    fn set_http(&self, http: reqwest::Client) {
        // A poisoned lock only means a writer panicked mid-assignment of a
        // whole value; the value itself is still a valid client.
        *self.http.write().unwrap_or_else(|p| p.into_inner()) = http;
    }

    fn http(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn token(&self) -> UploadToken {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn upload_url(&self, token: &UploadToken) -> Url {
        let mut url = upload_endpoint(&self.base_url);
        url.query_pairs_mut().append_pair("token", token.expose());
        url
    }

    /// Asks the server whether it accepts the token, creating nothing: an
    /// upload request without a file is refused for the missing file (400
    /// `uploaded-file-no-file`) only once the token was accepted.
    pub(crate) async fn check_token(&self) -> TokenCheck {
        self.check_token_with(&self.http()).await
    }

    /// [`Client::check_token`] over a new HTTP client (the trust store read
    /// again, no pooled connection, so a real handshake); when the
    /// handshake gets through, later requests use that client too.
    pub(crate) async fn probe_tls(&self) -> Result<TokenCheck, ApiError> {
        let fresh = http_client()?;
        let check = self.check_token_with(&fresh).await;
        if !matches!(check, TokenCheck::Tls(_)) {
            self.set_http(fresh);
        }
        Ok(check)
    }

    async fn check_token_with(&self, http: &reqwest::Client) -> TokenCheck {
        let token = self.token();
        let form = Form::new().text("check", "ingestd");
        let request = http
            .post(self.upload_url(&token))
            .multipart(form)
            .timeout(Duration::from_secs(30));
        match request.send().await {
            Err(e) => {
                let e = e.without_url();
                let text = scrub(&chain(&e), &token);
                match refused_handshake(&e) {
                    Some(t) => {
                        TokenCheck::Tls(scrub(&format!("{}; {} ({text})", t.cause, t.todo), &token))
                    }
                    None => TokenCheck::Unreachable(text),
                }
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let body = read_limited(r).await.unwrap_or_default();
                let body = String::from_utf8_lossy(&body);
                match status {
                    400 if body.contains("uploaded-file-no-file") => TokenCheck::Accepted,
                    401 => TokenCheck::Refused,
                    s => TokenCheck::Unexpected(s),
                }
            }
        }
    }

    /// Sends one request: `body` holds `range.len` bytes of the file. With
    /// `ranged`, a `Content-Range` header says where they go; without it the
    /// body is the whole file.
    pub async fn send(
        &self,
        file_name: &str,
        range: ByteRange,
        ranged: bool,
        video_id: Option<&str>,
        body: Body,
    ) -> Result<Reply, ApiError> {
        let token = self.token();
        let part = Part::stream_with_length(body, range.len)
            .file_name(file_name.to_owned())
            .mime_str("application/octet-stream")
            .map_err(|e| ApiError::Local(format!("bad mime type: {e}")))?;
        let mut form = Form::new();
        if let Some(v) = video_id {
            form = form.text("videoId", v.to_owned());
        }
        form = form.part("file", part);
        let mut req = self.http().post(self.upload_url(&token)).multipart(form);
        if ranged {
            req = req.header(CONTENT_RANGE, range.content_range());
        }
        let base = self.base_url.to_string();
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(&base, e, &token))?;
        let status = resp.status();
        let rate = RateInfo::from_headers(resp.headers());
        let body = read_limited(resp)
            .await
            .map_err(|e| transport_error(&base, e, &token))?;
        classify(status, rate, &body, &token).map_err(|e| match e {
            ApiError::Endpoint { status, detail, .. } => ApiError::Endpoint {
                base,
                status,
                detail,
            },
            e => e,
        })
    }
}

/// What a token check found (see [`Client::check_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Accepted,
    /// 401: unknown, deleted or expired.
    Refused,
    /// Another status than a token check expects.
    Unexpected(u16),
    /// No reply (the transport error, without the URL).
    Unreachable(String),
    /// The TLS handshake was refused: the cause in words, what to do, and
    /// the transport error.
    Tls(String),
}

/// `{base}/upload`, the upload endpoint under any base path, without the token.
fn upload_endpoint(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/upload", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

impl ApiSettings {
    /// `{base_url}/upload`, without the token (the caller adds `?token=`).
    pub fn upload_url(&self) -> Url {
        upload_endpoint(&self.base_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_url_keeps_base_path_and_encodes_token() {
        let c = Client::new(
            Url::parse("http://127.0.0.1:9/prefix").unwrap(),
            UploadToken::new("a b&c"),
        )
        .unwrap();
        let u = c.upload_url(&c.token());
        assert_eq!(u.as_str(), "http://127.0.0.1:9/prefix/upload?token=a+b%26c");
        assert!(!format!("{c:?}").contains("a b&c"));
    }
}
