//! Upload-token management and the book of every credential.
//!
//! - `GET /upload-tokens` (paginated), `GET /upload-tokens/{id}` → 200/404:
//!   the *reads* rate-limit bucket;
//! - `POST /upload-tokens {ttl}` → 200, `DELETE /upload-tokens/{id}` →
//!   204/404: the *writes* bucket;
//!
//! each authorised by the API key (HTTP Basic or a bearer access token, see
//! `auth`). api.video limits reads and writes apart from uploads, with the
//! same `X-RateLimit-*` headers and 429s.
//!
//! Every upload token of the emulator lives in one [`TokenBook`]: the tokens
//! given at start (or with `set_tokens`), which never expire, and those
//! created here, which expire `ttl` seconds after creation (`ttl` 0: never).
//! A token is valid for `POST /upload` from its creation until it expires or
//! is deleted. The book also holds the API keys and the access and refresh
//! tokens handed out for them.
//!
//! Imports nothing from the product.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::authorize;
use super::catalogue::{self as cat, Problem};
use super::rate::RateBucket;
use super::store::{atom, lock};
use super::App;

/// How long an access token from `/auth/api-key` is valid (api.video: one hour).
pub(crate) const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How long a refresh token is valid. api.video publishes no lifetime; a
/// bound keeps a long-running emulator from holding every one it handed out.
pub(crate) const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The largest `ttl` of the `token-creation-payload` schema.
pub(crate) const MAX_TTL: u64 = 2_147_483_647;
const DEFAULT_PAGE_SIZE: u64 = 25;
const MAX_PAGE_SIZE: u64 = 100;

/// API keys, the access and refresh tokens handed out for them, and every
/// upload token.
#[derive(Default)]
pub(crate) struct TokenBook {
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    api_keys: HashSet<String>,
    access: HashMap<String, Access>,
    /// Refresh tokens, each used up by `/auth/refresh`, which hands out the
    /// next one (the spec: "the refresh token from the last time you used
    /// the auth/refresh endpoint").
    refresh: HashMap<String, Access>,
    uploads: HashMap<String, UploadToken>,
    next_seq: u64,
}

/// An access or refresh token: the API key it was handed out for.
struct Access {
    api_key: String,
    expires: Instant,
}

/// What `/auth/api-key` and `/auth/refresh` hand out.
pub(crate) struct AccessPair {
    pub(crate) access: String,
    pub(crate) refresh: String,
}

#[derive(Debug, Clone)]
struct UploadToken {
    /// Creation order, which breaks ties between equal `createdAt` seconds.
    seq: u64,
    ttl: u64,
    created_at: SystemTime,
    /// `None`: never expires.
    expires: Option<Instant>,
    /// Given at start or with `set_tokens` (not created through the API).
    preset: bool,
}

impl UploadToken {
    fn is_active(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }

    fn json(&self, id: &str) -> Value {
        let mut v = json!({
            "token": id,
            "ttl": self.ttl,
            "createdAt": atom(self.created_at),
        });
        // Like the API's examples: a token that never expires has no expiresAt.
        if self.ttl > 0 {
            if let Some(at) = self.created_at.checked_add(Duration::from_secs(self.ttl)) {
                v["expiresAt"] = Value::String(atom(at));
            }
        }
        v
    }
}

impl Book {
    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn purge_expired(&mut self, now: Instant) {
        self.uploads.retain(|_, t| t.is_active(now));
        self.access.retain(|_, a| now < a.expires);
        self.refresh.retain(|_, r| now < r.expires);
    }

    /// A new access token and refresh token for `api_key`.
    fn hand_out(&mut self, api_key: &str) -> AccessPair {
        let now = Instant::now();
        self.purge_expired(now);
        let access = random_alphanumeric("", 64);
        self.access.insert(
            access.clone(),
            Access {
                api_key: api_key.to_owned(),
                expires: now + ACCESS_TOKEN_TTL,
            },
        );
        let refresh = random_alphanumeric("", 64);
        self.refresh.insert(
            refresh.clone(),
            Access {
                api_key: api_key.to_owned(),
                expires: now + REFRESH_TOKEN_TTL,
            },
        );
        AccessPair { access, refresh }
    }
}

impl TokenBook {
    pub(crate) fn new(presets: &[String], api_keys: &[String]) -> TokenBook {
        let book = TokenBook::default();
        book.set_presets(presets.to_vec());
        book.set_api_keys(api_keys.to_vec());
        book
    }

    /// Replaces the preset upload tokens (those that never expire and were
    /// not created through the API); tokens created through the API stay.
    pub(crate) fn set_presets(&self, tokens: Vec<String>) {
        let wanted: HashSet<String> = tokens.into_iter().collect();
        let mut book = lock(&self.inner);
        book.uploads
            .retain(|id, t| !t.preset || wanted.contains(id));
        for id in wanted {
            let seq = book.seq();
            let entry = book.uploads.entry(id).or_insert(UploadToken {
                seq,
                ttl: 0,
                created_at: SystemTime::now(),
                expires: None,
                preset: true,
            });
            entry.preset = true;
            entry.ttl = 0;
            entry.expires = None;
        }
    }

    /// Replaces the accepted API keys; access and refresh tokens of removed
    /// keys stop working.
    pub(crate) fn set_api_keys(&self, keys: Vec<String>) {
        let mut book = lock(&self.inner);
        book.api_keys = keys.into_iter().filter(|k| !k.is_empty()).collect();
        let keys = book.api_keys.clone();
        book.access.retain(|_, a| keys.contains(&a.api_key));
        book.refresh.retain(|_, r| keys.contains(&r.api_key));
    }

    /// Whether `key` is one of the configured API keys (HTTP Basic).
    pub(crate) fn api_key_is_valid(&self, key: &str) -> bool {
        lock(&self.inner).api_keys.contains(key)
    }

    /// Whether `POST /upload?token=…` accepts this token now.
    pub(crate) fn upload_token_is_valid(&self, token: &str) -> bool {
        lock(&self.inner)
            .uploads
            .get(token)
            .is_some_and(|t| t.is_active(Instant::now()))
    }

    /// A new access token and refresh token for a configured API key.
    pub(crate) fn authenticate(&self, api_key: &str) -> Option<AccessPair> {
        let mut book = lock(&self.inner);
        if !book.api_keys.contains(api_key) {
            return None;
        }
        Some(book.hand_out(api_key))
    }

    /// Trades a refresh token (used up) for a new access and refresh token,
    /// while its API key is configured.
    pub(crate) fn refresh(&self, refresh_token: &str) -> Option<AccessPair> {
        let mut book = lock(&self.inner);
        let used = book.refresh.remove(refresh_token)?;
        if Instant::now() >= used.expires || !book.api_keys.contains(&used.api_key) {
            return None;
        }
        Some(book.hand_out(&used.api_key))
    }

    pub(crate) fn access_token_is_valid(&self, token: &str) -> bool {
        let book = lock(&self.inner);
        book.access
            .get(token)
            .is_some_and(|a| Instant::now() < a.expires && book.api_keys.contains(&a.api_key))
    }

    fn create(&self, ttl: u64) -> Value {
        let now = Instant::now();
        let mut book = lock(&self.inner);
        let mut id = random_alphanumeric("to", 22);
        while book.uploads.contains_key(&id) {
            id = random_alphanumeric("to", 22);
        }
        let seq = book.seq();
        let token = UploadToken {
            seq,
            ttl,
            created_at: SystemTime::now(),
            expires: if ttl == 0 {
                None
            } else {
                // Beyond what Instant can hold is as good as never.
                now.checked_add(Duration::from_secs(ttl))
            },
            preset: false,
        };
        let json = token.json(&id);
        book.uploads.insert(id, token);
        json
    }

    /// The active tokens, in creation order.
    fn active(&self) -> Vec<(String, UploadToken)> {
        let mut book = lock(&self.inner);
        book.purge_expired(Instant::now());
        let mut all: Vec<_> = book
            .uploads
            .iter()
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        all.sort_by_key(|(_, t)| t.seq);
        all
    }

    fn get(&self, id: &str) -> Option<Value> {
        let book = lock(&self.inner);
        book.uploads
            .get(id)
            .filter(|t| t.is_active(Instant::now()))
            .map(|t| t.json(id))
    }

    /// Removes an active token; false if there is none by that id.
    fn delete(&self, id: &str) -> bool {
        let mut book = lock(&self.inner);
        book.purge_expired(Instant::now());
        book.uploads.remove(id).is_some()
    }
}

/// `prefix` followed by `n` random ASCII letters and digits.
fn random_alphanumeric(prefix: &str, n: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + n);
    s.push_str(prefix);
    for _ in 0..n {
        s.push(fastrand::alphanumeric());
    }
    s
}

/// Counts the request in `bucket`, then answers it with `respond` (or 429
/// past the limit), with the bucket's `X-RateLimit-*` headers either way. A
/// request is counted before it is authorised, as an upload is before its
/// token is checked.
fn limited(app: &App, bucket: RateBucket, respond: impl FnOnce() -> Response) -> Response {
    let rate = app.rate_acquire(bucket);
    let mut response = if rate.allowed {
        respond()
    } else {
        Problem::new(cat::TOO_MANY_REQUESTS).into_response()
    };
    rate.apply(response.headers_mut());
    response
}

#[derive(Deserialize)]
struct CreatePayload {
    #[serde(default)]
    ttl: Option<Value>,
}

/// `POST /upload-tokens` `{"ttl": SECONDS}` (absent or 0: never expires).
pub(super) async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    limited(&app, RateBucket::Writes, || {
        authorize(&app, &headers)
            .and_then(|()| creation_ttl(&body))
            .map_or_else(Problem::into_response, |ttl| {
                (StatusCode::OK, Json(app.tokens.create(ttl))).into_response()
            })
    })
}

/// The `ttl` of a `token-creation-payload` (an empty body is `{}`).
fn creation_ttl(body: &[u8]) -> Result<u64, Problem> {
    let payload: CreatePayload = if body.iter().all(u8::is_ascii_whitespace) {
        CreatePayload { ttl: None }
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Problem::new(cat::INVALID_PAYLOAD).detail(e.to_string()))?
    };
    match payload.ttl {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().filter(|t| *t <= MAX_TTL).ok_or_else(|| {
            Problem::new(cat::INVALID_ATTRIBUTE)
                .name("ttl")
                .detail(format!("ttl must be an integer from 0 to {MAX_TTL}."))
        }),
    }
}

/// `GET /upload-tokens?sortBy=createdAt|ttl&sortOrder=asc|desc&currentPage=N&pageSize=M`.
pub(super) async fn list(State(app): State<Arc<App>>, headers: HeaderMap, uri: Uri) -> Response {
    limited(&app, RateBucket::Reads, || {
        authorize(&app, &headers)
            .and_then(|()| list_page(&app, &uri))
            .map_or_else(Problem::into_response, |v| Json(v).into_response())
    })
}

fn list_page(app: &App, uri: &Uri) -> Result<Value, Problem> {
    let query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Problem::new(cat::INVALID_ATTRIBUTE).detail(e.to_string()))?;
    let number = |name: &str, default: u64, max: u64| -> Result<u64, Problem> {
        match query.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    Problem::new(cat::INVALID_ATTRIBUTE)
                        .name(name)
                        .detail(format!("{name} must be an integer from 1 to {max}."))
                }),
        }
    };
    let page = number("currentPage", 1, u64::from(u32::MAX))?;
    let page_size = number("pageSize", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let by_ttl = match query.get("sortBy").map(String::as_str) {
        None | Some("createdAt") => false,
        Some("ttl") => true,
        Some(_) => {
            return Err(Problem::new(cat::INVALID_ATTRIBUTE)
                .name("sortBy")
                .detail("sortBy must be createdAt or ttl."))
        }
    };
    let descending = match query.get("sortOrder").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(Problem::new(cat::INVALID_ATTRIBUTE)
                .name("sortOrder")
                .detail("sortOrder must be asc or desc."))
        }
    };

    let mut tokens = app.tokens.active();
    if by_ttl {
        tokens.sort_by_key(|(_, t)| (t.ttl, t.seq));
    }
    if descending {
        tokens.reverse();
    }
    let total = tokens.len() as u64;
    let pages_total = total.div_ceil(page_size).max(1);
    let skip = usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
    let data: Vec<Value> = tokens
        .iter()
        .skip(skip)
        .take(page_size as usize)
        .map(|(id, t)| t.json(id))
        .collect();
    let link = |rel: &str, p: u64| json!({"rel": rel, "uri": format!("/upload-tokens?currentPage={p}&pageSize={page_size}")});
    let mut links = vec![link("self", page), link("first", 1)];
    if page > 1 {
        links.push(link("previous", (page - 1).min(pages_total)));
    }
    if page < pages_total {
        links.push(link("next", page + 1));
    }
    links.push(link("last", pages_total));
    Ok(json!({
        "data": data,
        "pagination": {
            "currentPage": page,
            "currentPageItems": data.len(),
            "pageSize": page_size,
            "pagesTotal": pages_total,
            "itemsTotal": total,
            "links": links,
        },
    }))
}

fn not_found() -> Response {
    Problem::new(cat::RESOURCE_NOT_FOUND)
        .name("uploadToken")
        .into_response()
}

/// `GET /upload-tokens/{uploadToken}`.
pub(super) async fn show(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    limited(&app, RateBucket::Reads, || {
        if let Err(p) = authorize(&app, &headers) {
            return p.into_response();
        }
        match app.tokens.get(&id) {
            Some(v) => Json(v).into_response(),
            None => not_found(),
        }
    })
}

/// `DELETE /upload-tokens/{uploadToken}`.
pub(super) async fn delete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    limited(&app, RateBucket::Writes, || {
        if let Err(p) = authorize(&app, &headers) {
            return p.into_response();
        }
        if app.tokens.delete(&id) {
            StatusCode::NO_CONTENT.into_response()
        } else {
            not_found()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_never_expire_and_survive_api_tokens() {
        let book = TokenBook::new(&["toPRESET".to_owned()], &["key".to_owned()]);
        assert!(book.upload_token_is_valid("toPRESET"));
        let created = book.create(0);
        let id = created["token"].as_str().unwrap().to_owned();
        assert!(id.len() == 24 && id.starts_with("to"));
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(created.get("expiresAt").is_none());
        book.set_presets(vec!["toOTHER".to_owned()]);
        assert!(!book.upload_token_is_valid("toPRESET"));
        assert!(book.upload_token_is_valid("toOTHER"));
        assert!(
            book.upload_token_is_valid(&id),
            "API tokens are not presets"
        );
    }

    #[test]
    fn ttl_sets_expiry() {
        let book = TokenBook::default();
        let created = book.create(3600);
        let id = created["token"].as_str().unwrap();
        assert_eq!(created["ttl"], 3600);
        assert!(created["expiresAt"].as_str().is_some());
        assert!(book.upload_token_is_valid(id));
        // An already expired entry is invalid and gone from every view.
        lock(&book.inner).uploads.get_mut(id).unwrap().expires = Some(Instant::now());
        assert!(!book.upload_token_is_valid(id));
        assert!(book.get(id).is_none());
        assert!(book.active().is_empty());
        assert!(!book.delete(id));
    }

    #[test]
    fn access_tokens_need_a_configured_key() {
        let book = TokenBook::new(&[], &["key".to_owned()]);
        assert!(book.authenticate("nope").is_none());
        assert!(book.api_key_is_valid("key") && !book.api_key_is_valid("nope"));
        let pair = book.authenticate("key").unwrap();
        assert!(book.access_token_is_valid(&pair.access));
        assert!(!book.access_token_is_valid("other"));
        book.set_api_keys(vec!["new".to_owned()]);
        assert!(!book.access_token_is_valid(&pair.access));
        assert!(book.refresh(&pair.refresh).is_none(), "the key is gone");
        assert!(!book.api_key_is_valid("key"));
    }

    #[test]
    fn a_refresh_token_is_used_up_by_its_refresh() {
        let book = TokenBook::new(&[], &["key".to_owned()]);
        let first = book.authenticate("key").unwrap();
        assert!(book.refresh("nope").is_none());
        let second = book.refresh(&first.refresh).unwrap();
        assert!(book.access_token_is_valid(&second.access));
        assert_ne!(second.access, first.access);
        assert_ne!(second.refresh, first.refresh);
        assert!(book.refresh(&first.refresh).is_none(), "used up");
        let third = book.refresh(&second.refresh).unwrap();
        // An expired refresh token is refused, and purged.
        lock(&book.inner)
            .refresh
            .get_mut(&third.refresh)
            .unwrap()
            .expires = Instant::now();
        assert!(book.refresh(&third.refresh).is_none());
        book.authenticate("key").unwrap();
        assert_eq!(lock(&book.inner).refresh.len(), 1);
    }
}
