//! api.video's token API, spoken with the account's API key: the HTTP
//! client of `ingestd token`. It talks to the server and parses its
//! replies; what the command prints or reads locally is `cli::token`'s.
//!
//! The API key is traded for a bearer access token with
//! `POST {base_url}/auth/api-key` (`{"apiKey": KEY}`), which then authorizes
//! `POST /upload-tokens` (create), `GET /upload-tokens` (list, paginated),
//! `GET /upload-tokens/{id}` (show) and `DELETE /upload-tokens/{id}` (delete).
//!
//! The API key is read from `--api-key-file FILE` or the `INGESTD_API_KEY`
//! environment variable, never from a command-line argument (which any local
//! user can read in the process list). Neither the key nor the access token
//! reaches an error message, a `Debug` output or a log line: both travel only
//! in a request body or header, transport errors are stripped of their URL,
//! and server text is scrubbed of them before it is shown.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::problem::redact;
use super::{chain, read_limited, Problem, RateInfo};

/// The environment variable that may hold the API key.
pub const API_KEY_ENV: &str = "INGESTD_API_KEY";

/// The largest `ttl` the API accepts (`token-creation-payload`).
pub const MAX_TTL: u64 = 2_147_483_647;

/// Items asked for per page when listing (the API's maximum).
const PAGE_SIZE: u64 = 100;
/// A server that keeps announcing more pages is not followed forever.
const MAX_PAGES: u64 = 10_000;
/// Every management request is small; a stuck one must not hang the command.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The account's API key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself, for the one request body that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A bearer access token from `/auth/api-key`. Its `Debug` never shows it.
#[derive(Clone)]
struct AccessToken(String);

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// One upload token as the API describes it (schema `upload-token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadTokenInfo {
    /// The token id (`to…`), which is also the token an upload uses.
    pub token: String,
    /// Seconds of validity from creation; 0 = never expires.
    #[serde(default)]
    pub ttl: u64,
    #[serde(rename = "createdAt", default)]
    pub created_at: Option<String>,
    /// Absent or null for a token that never expires.
    #[serde(rename = "expiresAt", default)]
    pub expires_at: Option<String>,
}

/// What was being done when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Authenticate,
    Create,
    List,
    Show,
    Delete,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Authenticate => "authenticating with the API key",
            Operation::Create => "creating an upload token",
            Operation::List => "listing upload tokens",
            Operation::Show => "showing an upload token",
            Operation::Delete => "deleting an upload token",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no API key: write it to a file and pass --api-key-file FILE, or set the \
         {API_KEY_ENV} environment variable (it is never taken from a command-line argument)"
    )]
    MissingKey,
    #[error("cannot read the API key file {}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API key {from} {problem}")]
    BadKey { from: String, problem: &'static str },
    #[error("{op}: an upload token id cannot be empty")]
    EmptyId { op: Operation },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("{op}: the base URL {base} cannot be used for API requests")]
    BaseUrl { op: Operation, base: String },
    /// Nothing reached the server.
    #[error("{op}: cannot connect to {base}: {message}")]
    Connect {
        op: Operation,
        base: String,
        message: String,
    },
    /// The request failed mid-way (reset, timeout, lost reply).
    #[error("{op}: the request to {base} failed: {message}")]
    Transport {
        op: Operation,
        base: String,
        message: String,
    },
    /// The API key (or the access token obtained with it) was refused.
    #[error("{op}: refused ({status}): {problem}; check the API key")]
    Refused {
        op: Operation,
        status: u16,
        problem: Box<Problem>,
    },
    #[error("{op}: there is no upload token {id} ({status}: {problem})")]
    NotFound {
        op: Operation,
        id: String,
        status: u16,
        problem: Box<Problem>,
    },
    #[error("{op}: rate limited by the server (429); retry in {}s", retry_after.as_secs())]
    RateLimited {
        op: Operation,
        retry_after: Duration,
    },
    /// A redirect, or a URL the server does not know: the base URL is wrong.
    #[error("{op}: the server at {base} answered {status} {detail}: check the base URL")]
    Endpoint {
        op: Operation,
        base: String,
        status: u16,
        detail: String,
    },
    #[error("{op}: the server answered {status}: {problem}")]
    Api {
        op: Operation,
        status: u16,
        problem: Box<Problem>,
    },
    #[error("{op}: unreadable reply from the server: {message}")]
    BadReply { op: Operation, message: String },
}

/// A client of the upload-token endpoints. It authenticates on first use
/// and again, once, when a request is refused with a 401 (an access token
/// lasts an hour).
pub struct TokenClient {
    http: reqwest::Client,
    base_url: Url,
    key: ApiKey,
    access: Mutex<Option<AccessToken>>,
}

impl fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct AccessReply {
    access_token: String,
}

#[derive(Deserialize)]
struct ListReply {
    #[serde(default)]
    data: Vec<UploadTokenInfo>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(rename = "pagesTotal", default)]
    pages_total: Option<u64>,
}

struct Reply {
    status: StatusCode,
    rate: RateInfo,
    body: Vec<u8>,
}

impl TokenClient {
    pub fn new(base_url: Url, key: ApiKey) -> Result<TokenClient, TokenError> {
        // The shared client: no redirects followed, no Referer, our User-Agent.
        let http = super::http_client().map_err(|e| TokenError::Client(e.to_string()))?;
        Ok(TokenClient {
            http,
            base_url,
            key,
            access: Mutex::new(None),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// Trades the API key for a fresh access token (done on first use anyway).
    pub async fn authenticate(&self) -> Result<(), TokenError> {
        self.fresh_access_token().await.map(|_| ())
    }

    /// Creates an upload token; `ttl` in seconds, `None` or 0 = never expires.
    pub async fn create(&self, ttl: Option<u64>) -> Result<UploadTokenInfo, TokenError> {
        let op = Operation::Create;
        let body = match ttl {
            Some(ttl) => serde_json::json!({ "ttl": ttl }),
            None => serde_json::json!({}),
        };
        let url = self.url(op, &["upload-tokens"])?;
        let reply = self
            .call(op, Method::POST, url, Some(body.to_string()))
            .await?;
        let info: UploadTokenInfo = self.check_and_parse(op, None, &reply)?;
        if info.token.is_empty() {
            return Err(TokenError::BadReply {
                op,
                message: "the new token has an empty id".to_owned(),
            });
        }
        Ok(info)
    }

    /// Every active upload token, following the pages to the end.
    pub async fn list(&self) -> Result<Vec<UploadTokenInfo>, TokenError> {
        let op = Operation::List;
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        let mut page = 1u64;
        loop {
            let mut url = self.url(op, &["upload-tokens"])?;
            url.query_pairs_mut()
                .append_pair("sortBy", "createdAt")
                .append_pair("sortOrder", "asc")
                .append_pair("currentPage", &page.to_string())
                .append_pair("pageSize", &PAGE_SIZE.to_string());
            let reply = self.call(op, Method::GET, url, None).await?;
            let list: ListReply = self.check_and_parse(op, None, &reply)?;
            let items = list.data.len() as u64;
            // A token created between two requests shifts the pages: the
            // same token may come twice.
            for token in list.data {
                if seen.insert(token.token.clone()) {
                    all.push(token);
                }
            }
            let more = match list.pagination.and_then(|p| p.pages_total) {
                Some(total) => page < total,
                None => items >= PAGE_SIZE,
            };
            if !more || items == 0 {
                return Ok(all);
            }
            page += 1;
            if page > MAX_PAGES {
                return Err(TokenError::BadReply {
                    op,
                    message: format!("the server announces more than {MAX_PAGES} pages"),
                });
            }
        }
    }

    /// One upload token.
    pub async fn show(&self, id: &str) -> Result<UploadTokenInfo, TokenError> {
        let op = Operation::Show;
        let url = self.token_url(op, id)?;
        let reply = self.call(op, Method::GET, url, None).await?;
        self.check_and_parse(op, Some(id), &reply)
    }

    /// Deletes an upload token: uploads with it are refused from now on.
    pub async fn delete(&self, id: &str) -> Result<(), TokenError> {
        let op = Operation::Delete;
        let url = self.token_url(op, id)?;
        let reply = self.call(op, Method::DELETE, url, None).await?;
        self.check(op, Some(id), &reply)
    }

    /// `{base_url}/seg/seg…`, each segment percent-encoded.
    fn url(&self, op: Operation, segments: &[&str]) -> Result<Url, TokenError> {
        let mut url = self.base_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut path = url.path_segments_mut().map_err(|()| TokenError::BaseUrl {
                op,
                base: self.base_url.to_string(),
            })?;
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        Ok(url)
    }

    fn token_url(&self, op: Operation, id: &str) -> Result<Url, TokenError> {
        let id = id.trim();
        if id.is_empty() {
            return Err(TokenError::EmptyId { op });
        }
        self.url(op, &["upload-tokens", id])
    }

    fn cached_access_token(&self) -> Option<AccessToken> {
        // A poisoned lock only means a writer panicked while assigning a
        // whole value; the value itself is still usable.
        self.access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn fresh_access_token(&self) -> Result<AccessToken, TokenError> {
        let op = Operation::Authenticate;
        let url = self.url(op, &["auth", "api-key"])?;
        let body = serde_json::json!({ "apiKey": self.key.expose() }).to_string();
        let reply = self.send(op, Method::POST, url, None, Some(body)).await?;
        let access: AccessReply = self.check_and_parse(op, None, &reply)?;
        if access.access_token.is_empty() {
            return Err(TokenError::BadReply {
                op,
                message: "the access token is empty".to_owned(),
            });
        }
        let token = AccessToken(access.access_token);
        *self.access.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
        Ok(token)
    }

    /// Sends an authorized request; on a 401 with an access token from an
    /// earlier request (it may have expired), authenticates again and
    /// resends once.
    async fn call(
        &self,
        op: Operation,
        method: Method,
        url: Url,
        body: Option<String>,
    ) -> Result<Reply, TokenError> {
        let (token, fresh) = match self.cached_access_token() {
            Some(t) => (t, false),
            None => (self.fresh_access_token().await?, true),
        };
        let reply = self
            .send(op, method.clone(), url.clone(), Some(&token), body.clone())
            .await?;
        if reply.status == StatusCode::UNAUTHORIZED && !fresh {
            let token = self.fresh_access_token().await?;
            return self.send(op, method, url, Some(&token), body).await;
        }
        Ok(reply)
    }

    async fn send(
        &self,
        op: Operation,
        method: Method,
        url: Url,
        bearer: Option<&AccessToken>,
        body: Option<String>,
    ) -> Result<Reply, TokenError> {
        let mut req = self
            .http
            .request(method.clone(), url)
            .timeout(REQUEST_TIMEOUT)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(token) = bearer {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.0)).map_err(|_| {
                    TokenError::BadReply {
                        op,
                        message: "the access token cannot be sent in a header".to_owned(),
                    }
                })?;
            value.set_sensitive(true);
            req = req.header(AUTHORIZATION, value);
        }
        if let Some(body) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(op, e, bearer))?;
        let status = resp.status();
        let rate = RateInfo::from_headers(resp.headers());
        let body = read_limited(resp)
            .await
            .map_err(|e| self.transport_error(op, e, bearer))?;
        tracing::debug!(%op, %method, status = status.as_u16(), "upload-token API request");
        Ok(Reply { status, rate, body })
    }

    fn transport_error(
        &self,
        op: Operation,
        e: reqwest::Error,
        bearer: Option<&AccessToken>,
    ) -> TokenError {
        let connect = e.is_connect();
        let e = e.without_url();
        let mut message = chain(&e);
        if let Some(t) = super::tls::tls_trouble(&e) {
            message = format!("TLS refused: {}; {} ({message})", t.cause, t.todo);
        }
        let message = self.scrub(&message, bearer);
        let base = self.base_url.to_string();
        if connect {
            TokenError::Connect { op, base, message }
        } else {
            TokenError::Transport { op, base, message }
        }
    }

    /// Removes the API key and access tokens from text that came from elsewhere.
    fn scrub(&self, text: &str, extra: Option<&AccessToken>) -> String {
        let cached = self.cached_access_token();
        redact(
            text,
            [
                Some(self.key.expose()),
                extra.map(|t| t.0.as_str()),
                cached.as_ref().map(|t| t.0.as_str()),
            ],
        )
    }

    fn check_and_parse<T: serde::de::DeserializeOwned>(
        &self,
        op: Operation,
        id: Option<&str>,
        reply: &Reply,
    ) -> Result<T, TokenError> {
        self.check(op, id, reply)?;
        serde_json::from_slice(&reply.body).map_err(|e| TokenError::BadReply {
            op,
            message: self.scrub(&e.to_string(), None),
        })
    }

    /// Turns a non-2xx reply into the error it means.
    fn check(&self, op: Operation, id: Option<&str>, reply: &Reply) -> Result<(), TokenError> {
        let status = reply.status;
        if status.is_success() {
            return Ok(());
        }
        let code = status.as_u16();
        let body = &reply.body;
        let problem = Problem::from_reply(body, |v| self.scrub(v, None));
        let base = self.base_url.to_string();
        if status.is_redirection() {
            return Err(TokenError::Endpoint {
                op,
                base,
                status: code,
                detail: "(a redirect)".to_owned(),
            });
        }
        if problem.slug() == Some("unrecognized-request-url") {
            return Err(TokenError::Endpoint {
                op,
                base,
                status: code,
                detail: format!("({problem})"),
            });
        }
        let refused = match op {
            // The documented reply to a wrong key is a 400.
            Operation::Authenticate => matches!(code, 400 | 401 | 403),
            _ => matches!(code, 401 | 403),
        };
        let problem = Box::new(problem);
        Err(match (refused, code, id) {
            (true, ..) => TokenError::Refused {
                op,
                status: code,
                problem,
            },
            (false, 404, Some(id)) => TokenError::NotFound {
                op,
                id: id.trim().to_owned(),
                status: code,
                problem,
            },
            (false, 429, _) => TokenError::RateLimited {
                op,
                retry_after: Duration::from_secs(reply.rate.retry_after.unwrap_or(1).max(1)),
            },
            _ => TokenError::Api {
                op,
                status: code,
                problem,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "keySECRETkeySECRET";

    fn client() -> TokenClient {
        TokenClient::new(
            Url::parse("http://127.0.0.1:9/prefix/").unwrap(),
            ApiKey::new(KEY),
        )
        .unwrap()
    }

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            rate: RateInfo::default(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_ids() {
        let c = client();
        assert_eq!(
            c.url(Operation::Authenticate, &["auth", "api-key"])
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/prefix/auth/api-key"
        );
        assert_eq!(
            c.token_url(Operation::Show, "a/b?c").unwrap().as_str(),
            "http://127.0.0.1:9/prefix/upload-tokens/a%2Fb%3Fc"
        );
        assert!(matches!(
            c.token_url(Operation::Delete, " "),
            Err(TokenError::EmptyId { .. })
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let c = client();
        *c.access.lock().unwrap() = Some(AccessToken("accessSECRET".to_owned()));
        let shown = format!("{c:?} {:?}", ApiKey::new(KEY));
        assert!(
            !shown.contains(KEY) && !shown.contains("accessSECRET"),
            "{shown}"
        );
        let body = format!(
            r#"{{"type":"x","title":"bad key {KEY} or accessSECRET","detail":"{KEY}","status":400}}"#
        );
        let e = c
            .check(Operation::Authenticate, None, &reply(400, &body))
            .unwrap_err();
        assert!(matches!(e, TokenError::Refused { .. }), "{e:?}");
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains(KEY) && !shown.contains("accessSECRET"),
            "{shown}"
        );
        let e = c
            .check_and_parse::<UploadTokenInfo>(
                Operation::Create,
                None,
                &reply(200, &format!(r#"{{"token": 1, "x": "{KEY}"}}"#)),
            )
            .unwrap_err();
        assert!(!format!("{e} {e:?}").contains(KEY));
    }

    #[test]
    fn replies_are_classified() {
        let c = client();
        let problem = |slug: &str, status: u16| {
            format!(
                r#"{{"type":"https://docs.api.video/reference/{slug}","title":"T","status":{status}}}"#
            )
        };
        let e = c
            .check(
                Operation::Show,
                Some("toX"),
                &reply(404, &problem("resource-not-found", 404)),
            )
            .unwrap_err();
        assert!(matches!(e, TokenError::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("toX") && e.to_string().contains("resource-not-found"));
        let e = c
            .check(
                Operation::List,
                None,
                &reply(404, &problem("unrecognized-request-url", 404)),
            )
            .unwrap_err();
        assert!(matches!(e, TokenError::Endpoint { .. }), "{e:?}");
        let e = c.check(Operation::List, None, &reply(302, "")).unwrap_err();
        assert!(matches!(e, TokenError::Endpoint { .. }), "{e:?}");
        let e = c
            .check(Operation::List, None, &reply(401, &problem("x", 401)))
            .unwrap_err();
        assert!(matches!(e, TokenError::Refused { .. }), "{e:?}");
        let e = c
            .check(
                Operation::Create,
                None,
                &reply(400, &problem("invalid-attribute", 400)),
            )
            .unwrap_err();
        assert!(matches!(e, TokenError::Api { status: 400, .. }), "{e:?}");
        assert!(e.to_string().starts_with("creating an upload token"), "{e}");
        let e = c.check(Operation::List, None, &reply(429, "")).unwrap_err();
        assert!(matches!(e, TokenError::RateLimited { .. }), "{e:?}");
        let e = c
            .check(Operation::List, None, &reply(500, "<html>"))
            .unwrap_err();
        assert!(e.to_string().contains("unreadable reply"), "{e}");
        assert!(c
            .check(Operation::Delete, Some("toX"), &reply(204, ""))
            .is_ok());
    }
}
