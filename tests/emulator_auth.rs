//! The emulator's API-key endpoints as api.video answers them: the key
//! through HTTP Basic or a bearer access token, `POST /auth/refresh`, and
//! the reads and writes rate-limit buckets (with `ingestd emulator`'s flags).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ingestd::emulator::{ApiRateLimits, Emulator, EmulatorOptions, RateBucket};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

const KEY: &str = "emuKEY1234567890abcdefghij";
const TOKEN: &str = "to1tcmSFHeYY5KzyhOqVKMKb";
const DOCS: &str = "https://docs.api.video/reference/";

struct Env {
    emu: Emulator,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    json: Value,
    text: String,
}

impl Reply {
    fn slug(&self) -> &str {
        self.json["type"]
            .as_str()
            .and_then(|t| t.strip_prefix(DOCS))
            .unwrap_or("<none>")
    }

    fn header(&self, name: &str) -> Option<u64> {
        self.headers.get(name)?.to_str().ok()?.parse().ok()
    }
}

async fn env_with(uploads: u32, limits: ApiRateLimits, window: Duration) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EmulatorOptions {
        data_dir: dir.path().join("data"),
        tokens: vec![TOKEN.to_owned()],
        api_keys: vec![KEY.to_owned()],
        rate_limit: uploads,
        rate_window: window,
    };
    let emu = Emulator::start_with_limits("127.0.0.1:0".parse().unwrap(), opts, limits)
        .await
        .expect("start emulator");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Env {
        emu,
        _dir: dir,
        http,
    }
}

async fn env() -> Env {
    env_with(0, ApiRateLimits::default(), Duration::from_secs(60)).await
}

fn basic(user_pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

async fn call(
    env: &Env,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut req = env
        .http
        .request(method, format!("{}{path}", env.emu.base_url()));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().await.expect("transport");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Reply {
        status,
        headers,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

async fn login(env: &Env) -> Value {
    let r = call(
        env,
        Method::POST,
        "/auth/api-key",
        None,
        Some(&format!(r#"{{"apiKey":"{KEY}"}}"#)),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json
}

#[tokio::test]
async fn the_api_key_through_basic_or_bearer() {
    let env = env().await;
    let get = Method::GET;
    // HTTP Basic, the key as user name and an empty password, as the Node.js
    // client sends it.
    let good = basic(&format!("{KEY}:"));
    let r = call(
        &env,
        Method::POST,
        "/upload-tokens",
        Some(&good),
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.json["token"].as_str().unwrap().to_owned();
    let r = call(
        &env,
        get.clone(),
        &format!("/upload-tokens/{id}"),
        Some(&good),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json["token"].as_str()),
        (200, Some(id.as_str()))
    );
    let r = call(&env, get.clone(), "/upload-tokens", Some(&good), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json["pagination"]["itemsTotal"], 2,
        "the preset and the new one"
    );

    // A wrong key is refused 401 and named nowhere in the reply.
    let wrong = basic("notTheKey:");
    for (method, path) in [
        (get.clone(), "/upload-tokens".to_owned()),
        (get.clone(), format!("/upload-tokens/{id}")),
        (Method::POST, "/upload-tokens".to_owned()),
        (Method::DELETE, format!("/upload-tokens/{id}")),
    ] {
        let r = call(&env, method, &path, Some(&wrong), None).await;
        assert_eq!(
            (r.status, r.slug()),
            (401, "authentication-invalid-api-key"),
            "{r:?}"
        );
        assert!(!r.text.contains("notTheKey"), "{r:?}");
    }
    // Malformed Basic values, and no header at all.
    for bad in [
        basic(KEY),
        basic(&format!(":{KEY}")),
        "Basic %%%".to_owned(),
    ] {
        let r = call(&env, get.clone(), "/upload-tokens", Some(&bad), None).await;
        assert_eq!(
            (r.status, r.slug()),
            (401, "authentication-invalid-authorization-header-value"),
            "{r:?}"
        );
        assert!(!r.text.contains(KEY), "{r:?}");
    }
    let resp = env
        .http
        .get(format!("{}/upload-tokens", env.emu.base_url()))
        .header(
            "Authorization",
            reqwest::header::HeaderValue::from_bytes(b"Basic \xe9t\xe9").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "not visible ASCII");
    let r = call(&env, get.clone(), "/upload-tokens", None, None).await;
    assert_eq!(
        (r.status, r.slug()),
        (401, "authentication-missing-authorization-header")
    );
    let r = call(&env, get.clone(), "/upload-tokens", Some(""), None).await;
    assert_eq!(
        (r.status, r.slug()),
        (401, "authentication-missing-authorization-header")
    );

    // The bearer way still works, and a wrong access token is refused 401.
    let bearer = format!(
        "Bearer {}",
        login(&env).await["access_token"].as_str().unwrap()
    );
    let r = call(&env, get.clone(), "/upload-tokens", Some(&bearer), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = call(
        &env,
        get.clone(),
        "/upload-tokens",
        Some("Bearer nope"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.slug()),
        (401, "authentication-invalid-access-token")
    );
    // The key itself is not an access token, nor an access token a key.
    let r = call(
        &env,
        get.clone(),
        "/upload-tokens",
        Some(&format!("Bearer {KEY}")),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let access = bearer.trim_start_matches("Bearer ");
    let r = call(
        &env,
        get.clone(),
        "/upload-tokens",
        Some(&basic(&format!("{access}:"))),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.slug()),
        (401, "authentication-invalid-api-key")
    );

    // Removing the key refuses it through Basic too.
    let r = call(
        &env,
        Method::DELETE,
        &format!("/upload-tokens/{id}"),
        Some(&good),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    env.emu.set_api_keys(vec![]);
    let r = call(&env, get, "/upload-tokens", Some(&good), None).await;
    assert_eq!(
        (r.status, r.slug()),
        (401, "authentication-invalid-api-key")
    );
}

#[tokio::test]
async fn auth_refresh_trades_a_refresh_token_for_new_tokens() {
    let env = env().await;
    let first = login(&env).await;
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let body = format!(r#"{{"refreshToken":"{refresh}"}}"#);
    let r = call(&env, Method::POST, "/auth/refresh", None, Some(&body)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 3600);
    let access = r.json["access_token"].as_str().unwrap().to_owned();
    let next = r.json["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(access, first["access_token"].as_str().unwrap());
    assert_ne!(next, refresh);
    let r = call(
        &env,
        Method::GET,
        "/upload-tokens",
        Some(&format!("Bearer {access}")),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "the new access token works: {r:?}");

    // The used refresh token, an unknown one: the spec's 400.
    for token in [refresh.as_str(), "def50200nope"] {
        let body = format!(r#"{{"refreshToken":"{token}"}}"#);
        let r = call(&env, Method::POST, "/auth/refresh", None, Some(&body)).await;
        assert_eq!(
            (r.status, r.slug()),
            (400, "authentication-invalid-user-credentials"),
            "{r:?}"
        );
        assert_eq!(r.json["title"], "The user credentials were incorrect.");
        assert_eq!(r.json["status"], 400);
        assert!(!r.text.contains(token), "{r:?}");
    }
    let r = call(&env, Method::POST, "/auth/refresh", None, Some("{}")).await;
    assert_eq!((r.status, r.slug()), (400, "invalid-attribute"), "{r:?}");
    assert_eq!(r.json["name"], "refreshToken");
    let r = call(&env, Method::POST, "/auth/refresh", None, Some("not json")).await;
    assert_eq!((r.status, r.slug()), (400, "invalid-payload"), "{r:?}");
    // The latest refresh token still works, until its key is removed.
    env.emu.set_api_keys(vec![]);
    let body = format!(r#"{{"refreshToken":"{next}"}}"#);
    let r = call(&env, Method::POST, "/auth/refresh", None, Some(&body)).await;
    assert_eq!(
        (r.status, r.slug()),
        (400, "authentication-invalid-user-credentials")
    );
}

/// Polls until `bucket`'s window has rolled over (its remaining count is
/// back to `limit`), or fails after `within`.
async fn wait_for_new_window(env: &Env, path: &str, auth: &str, limit: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        // A request that is counted if admitted: only a fresh window admits it
        // with `limit - 1` left.
        let r = call(env, Method::GET, path, Some(auth), None).await;
        if r.status == 200 && r.header("x-ratelimit-remaining") == Some(limit - 1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no new window within {within:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reads_and_writes_have_their_own_rate_limit_buckets() {
    let limits = ApiRateLimits {
        reads: 2,
        writes: 1,
    };
    let env = env_with(3, limits, Duration::from_secs(2)).await;
    let auth = basic(&format!("{KEY}:"));
    for remaining in [1, 0] {
        let r = call(&env, Method::GET, "/upload-tokens", Some(&auth), None).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-ratelimit-limit"), Some(2));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
        let after = r.header("x-ratelimit-retry-after").unwrap();
        assert!((1..=2).contains(&after), "{after}");
    }
    // Reads of one token count in the same bucket.
    let r = call(
        &env,
        Method::GET,
        &format!("/upload-tokens/{TOKEN}"),
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(
        r.json,
        serde_json::json!({
            "type": "https://docs.api.video/reference/too-many-requests",
            "title": "Too many requests.",
            "status": 429,
        })
    );
    assert_eq!(r.header("x-ratelimit-limit"), Some(2));
    assert_eq!(r.header("x-ratelimit-remaining"), Some(0));
    assert!(r
        .header("x-ratelimit-retry-after")
        .is_some_and(|s| (1..=2).contains(&s)));

    // Writes have their own bucket, untouched by the reads.
    let r = call(
        &env,
        Method::POST,
        "/upload-tokens",
        Some(&auth),
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (
            r.header("x-ratelimit-limit"),
            r.header("x-ratelimit-remaining")
        ),
        (Some(1), Some(0))
    );
    let created = r.json["token"].as_str().unwrap().to_owned();
    let r = call(
        &env,
        Method::DELETE,
        &format!("/upload-tokens/{created}"),
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("x-ratelimit-limit"), Some(1));
    // A refused request is counted before it is authorised, as an upload is.
    let r = call(
        &env,
        Method::POST,
        "/upload-tokens",
        Some(&basic("wrong:")),
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 429);

    // Uploads are limited apart: their bucket is still full.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![7u8; 1000]).file_name("a.mp4"),
    );
    let resp = env
        .http
        .post(format!("{}/upload?token={TOKEN}", env.emu.base_url()))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "2");
    // The auth endpoints are not limited (api.video: "the only route without
    // rate limitation").
    for _ in 0..3 {
        let r = call(
            &env,
            Method::POST,
            "/auth/api-key",
            None,
            Some(&format!(r#"{{"apiKey":"{KEY}"}}"#)),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    // A new window admits reads again.
    wait_for_new_window(&env, "/upload-tokens", &auth, 2, Duration::from_secs(5)).await;

    // 0 turns a bucket off; another bucket's change leaves it alone.
    env.emu
        .set_bucket_rate_limit(RateBucket::Reads, 0, Duration::from_secs(60));
    for _ in 0..10 {
        let r = call(&env, Method::GET, "/upload-tokens", Some(&auth), None).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-ratelimit-limit"), Some(u64::from(u32::MAX)));
    }
    env.emu
        .set_bucket_rate_limit(RateBucket::Writes, 5, Duration::from_secs(60));
    let r = call(
        &env,
        Method::DELETE,
        &format!("/upload-tokens/{created}"),
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        (
            r.header("x-ratelimit-limit"),
            r.header("x-ratelimit-remaining")
        ),
        (Some(5), Some(4))
    );
}

#[tokio::test]
async fn production_limits_by_default() {
    assert_eq!(
        ApiRateLimits::default(),
        ApiRateLimits {
            reads: 500,
            writes: 200
        }
    );
    let env = env().await;
    let auth = basic(&format!("{KEY}:"));
    let r = call(&env, Method::GET, "/upload-tokens", Some(&auth), None).await;
    assert_eq!(
        (
            r.header("x-ratelimit-limit"),
            r.header("x-ratelimit-remaining")
        ),
        (Some(500), Some(499))
    );
    let r = call(&env, Method::POST, "/upload-tokens", Some(&auth), None).await;
    assert_eq!(
        (
            r.header("x-ratelimit-limit"),
            r.header("x-ratelimit-remaining")
        ),
        (Some(200), Some(199))
    );
}

/// `ingestd emulator` with its flags; killed when dropped.
struct Standalone {
    child: Child,
    base_url: String,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn standalone(dir: &std::path::Path, flags: &[&str]) -> Standalone {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .arg("--data")
        .arg(dir)
        .args(["--api-key", KEY])
        .args(flags)
        .env("INGESTD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ingestd emulator");
    let stdout = child.stdout.take().unwrap();
    // The first line names the address; a blocked read ends when the child
    // dies, which the test's own timeout bounds.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("ingestd emulator printed its address");
    let base_url = line
        .trim()
        .strip_prefix("emulator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Standalone { child, base_url }
}

#[tokio::test]
async fn emulator_flags_set_the_reads_and_writes_limits() {
    let dir = tempfile::tempdir().unwrap();
    let emu = standalone(
        dir.path(),
        &[
            "--rate-limit-reads",
            "1",
            "--rate-limit-writes",
            "0",
            "--rate-limit",
            "0",
        ],
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let auth = basic(&format!("{KEY}:"));
    let get = || {
        http.get(format!("{}/upload-tokens", emu.base_url))
            .header("Authorization", &auth)
            .send()
    };
    let first = get().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit"], "1");
    let second = get().await.unwrap();
    assert_eq!(second.status().as_u16(), 429);
    for _ in 0..5 {
        let r = http
            .post(format!("{}/upload-tokens", emu.base_url))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "--rate-limit-writes 0 is off");
    }
}
