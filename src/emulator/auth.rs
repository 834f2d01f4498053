//! API-key authentication: `POST /auth/api-key`, `POST /auth/refresh`, and
//! the `Authorization` check of the API-key endpoints.
//!
//! api.video takes the API key in two ways, and so does the emulator:
//! - HTTP Basic with the key as user name and an empty password, the
//!   `apiKey` security scheme of the OpenAPI spec (`curl -u KEY:`; the
//!   official Node.js client sends `Basic base64(KEY + ":")` on every call);
//! - a bearer access token from `POST /auth/api-key {"apiKey": KEY}`,
//!   renewed with `POST /auth/refresh {"refreshToken": …}` (the official
//!   Python client).
//!
//! A wrong key is refused 401 either way (the docs' `basic-authentication`
//! page: "If invalid credentials are provided, a 401 Unauthorized response
//! code is returned"); a wrong key or refresh token given to `/auth/*` is the
//! spec's 400 `authentication-invalid-user-credentials`. No key, token or
//! header value ever goes into a reply or a log line.
//!
//! Imports nothing from the product.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::json;

use super::catalogue::{self as cat, ApiError, Problem};
use super::tokens::{AccessPair, ACCESS_TOKEN_TTL};
use super::App;

/// The OpenAPI example reply of `POST /auth/api-key` and `POST /auth/refresh`
/// for a wrong key or refresh token (its `name` is empty there too).
pub(crate) const INVALID_USER_CREDENTIALS: ApiError = ApiError {
    slug: Some("authentication-invalid-user-credentials"),
    status: 400,
    title: "The user credentials were incorrect.",
};
// The four below are documented error pages without a published title; the
// titles are the emulator's own wording.
pub(crate) const MISSING_AUTHORIZATION_HEADER: ApiError = ApiError {
    slug: Some("authentication-missing-authorization-header"),
    status: 401,
    title: "The authorization header is missing.",
};
pub(crate) const INVALID_AUTHORIZATION_HEADER_VALUE: ApiError = ApiError {
    slug: Some("authentication-invalid-authorization-header-value"),
    status: 401,
    title: "The authorization header value is invalid.",
};
pub(crate) const INVALID_ACCESS_TOKEN: ApiError = ApiError {
    slug: Some("authentication-invalid-access-token"),
    status: 401,
    title: "The access token is invalid or expired.",
};
/// "The API key you send to authenticate does not exist."
pub(crate) const INVALID_API_KEY: ApiError = ApiError {
    slug: Some("authentication-invalid-api-key"),
    status: 401,
    title: "The API key is invalid.",
};

const EXPECTED_SCHEMES: &str =
    "Expected \"Basic base64(API_KEY:)\" or \"Bearer <access token>\" (from POST /auth/api-key).";

/// What an `Authorization` header holds, before it is checked.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    Bearer(String),
    /// The user name of a Basic header: the API key. Its password is not
    /// checked (api.video's clients send it empty).
    Basic(String),
}

/// Reads `Authorization: Basic …` or `Bearer …`; `None` when the header is
/// malformed. An empty header counts as absent (the Node.js client sends one
/// when it has no key).
fn credentials(value: &str) -> Option<Credentials> {
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| Credentials::Bearer(rest.to_owned()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, _password) = decoded.split_once(':')?;
    (!user.is_empty()).then(|| Credentials::Basic(user.to_owned()))
}

/// Checks the `Authorization` header of an API-key endpoint.
pub(crate) fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Problem> {
    let value = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::trim));
    let found = match value {
        None | Some(Ok("")) => {
            return Err(Problem::new(MISSING_AUTHORIZATION_HEADER).name("Authorization"))
        }
        // Not visible ASCII: no scheme can be read from it.
        Some(Err(_)) => None,
        Some(Ok(value)) => credentials(value),
    };
    match found {
        None => Err(Problem::new(INVALID_AUTHORIZATION_HEADER_VALUE)
            .name("Authorization")
            .detail(EXPECTED_SCHEMES)),
        Some(Credentials::Bearer(token)) if app.tokens.access_token_is_valid(&token) => Ok(()),
        Some(Credentials::Bearer(_)) => {
            Err(Problem::new(INVALID_ACCESS_TOKEN).name("Authorization"))
        }
        Some(Credentials::Basic(key)) if app.tokens.api_key_is_valid(&key) => Ok(()),
        Some(Credentials::Basic(_)) => Err(Problem::new(INVALID_API_KEY).name("Authorization")),
    }
}

fn access_token_reply(pair: AccessPair) -> Response {
    Json(json!({
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_TTL.as_secs(),
        "access_token": pair.access,
        "refresh_token": pair.refresh,
    }))
    .into_response()
}

/// The one string attribute `attribute` of a JSON body, or the problem to
/// answer (the body is not JSON: `invalid-payload`; the attribute is absent
/// or empty: `invalid-attribute`).
fn required_string(body: &[u8], attribute: &str) -> Result<String, Problem> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Problem::new(cat::INVALID_PAYLOAD).detail(e.to_string()))?;
    match value.get(attribute).and_then(serde_json::Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(Problem::new(cat::INVALID_ATTRIBUTE)
            .name(attribute)
            .detail(format!("The {attribute} attribute is required."))),
    }
}

/// `POST /auth/api-key` `{"apiKey": KEY}`.
pub(super) async fn authenticate(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let key = match required_string(&body, "apiKey") {
        Ok(k) => k,
        Err(p) => return p.into_response(),
    };
    match app.tokens.authenticate(&key) {
        Some(pair) => access_token_reply(pair),
        None => Problem::new(INVALID_USER_CREDENTIALS)
            .name("")
            .into_response(),
    }
}

/// `POST /auth/refresh` `{"refreshToken": TOKEN}`: a new access token and a
/// new refresh token; the one given is used up.
pub(super) async fn refresh(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let token = match required_string(&body, "refreshToken") {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    match app.tokens.refresh(&token) {
        Some(pair) => access_token_reply(pair),
        None => Problem::new(INVALID_USER_CREDENTIALS)
            .name("")
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn reads_both_schemes() {
        assert_eq!(
            credentials(&basic("key123:")),
            Some(Credentials::Basic("key123".into()))
        );
        assert_eq!(
            credentials(&basic("key123:ignored")),
            Some(Credentials::Basic("key123".into()))
        );
        assert_eq!(
            credentials("bearer abc"),
            Some(Credentials::Bearer("abc".into()))
        );
        assert_eq!(
            credentials(&basic("key123:").replace("Basic", "BASIC")),
            Some(Credentials::Basic("key123".into()))
        );
    }

    #[test]
    fn refuses_malformed_headers() {
        for bad in [
            "Bearer",
            "Bearer ",
            "Basic",
            "Basic !!!",
            &basic("no-colon"),
            &basic(":password-only"),
            "Digest abc",
            "key123",
        ] {
            assert_eq!(credentials(bad), None, "{bad}");
        }
        let not_utf8 = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode([0xff, b':'])
        );
        assert_eq!(credentials(&not_utf8), None);
    }

    #[test]
    fn required_string_problems() {
        assert_eq!(
            required_string(br#"{"apiKey":"k"}"#, "apiKey").unwrap(),
            "k"
        );
        let slug = |r: Result<String, Problem>| r.unwrap_err().error.slug;
        assert_eq!(
            slug(required_string(b"nope", "apiKey")),
            Some("invalid-payload")
        );
        for body in [&br#"{}"#[..], br#"{"apiKey":""}"#, br#"{"apiKey":3}"#] {
            assert_eq!(
                slug(required_string(body, "apiKey")),
                Some("invalid-attribute")
            );
        }
    }
}
