//! Upload-token management (`ingestd::token`) against the emulator's
//! `/auth/api-key` and `/upload-tokens` endpoints, with real uploads to check
//! that created, deleted and expired tokens are honoured by `POST /upload`.

use std::time::{Duration, Instant};

use ingestd::cli::token::{
    self, api_key_from, run_with_key, ApiKey, TokenArgs, TokenClient, TokenCommand, TokenError,
};
use ingestd::emulator::{Emulator, EmulatorOptions};
use reqwest::multipart::{Form, Part};
use reqwest::Url;
use serde_json::Value;
use tempfile::TempDir;

const KEY: &str = "apiKEYsecret0123456789";
const PRESET: &str = "to1presetPRESETpreset12";
const DOCS: &str = "https://docs.api.video/reference/";

struct Env {
    emu: Emulator,
    dir: TempDir,
    http: reqwest::Client,
}

impl Env {
    async fn new() -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = EmulatorOptions {
            data_dir: dir.path().join("data"),
            tokens: vec![PRESET.to_owned()],
            api_keys: vec![KEY.to_owned()],
            rate_limit: 0,
            rate_window: Duration::from_secs(60),
        };
        let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), opts)
            .await
            .expect("start emulator");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Env { emu, dir, http }
    }

    fn url(&self) -> Url {
        Url::parse(&self.emu.base_url()).unwrap()
    }

    fn client(&self) -> TokenClient {
        TokenClient::new(self.url(), ApiKey::new(KEY)).expect("token client")
    }

    async fn run(&self, cmd: TokenCommand) -> Result<String, TokenError> {
        run_with_key(cmd, ApiKey::new(KEY), self.url()).await
    }

    async fn create(&self, ttl: Option<u64>) -> String {
        self.run(TokenCommand::Create { ttl })
            .await
            .expect("create a token")
    }

    /// Uploads a small file with `token`: (status, problem slug or videoId).
    async fn upload(&self, token: &str) -> (u16, String) {
        let part = Part::bytes(vec![7u8; 4096])
            .file_name("clip.mp4")
            .mime_str("video/mp4")
            .unwrap();
        let mut url = self.url().join("upload").unwrap();
        url.query_pairs_mut().append_pair("token", token);
        let resp = self
            .http
            .post(url)
            .multipart(Form::new().part("file", part))
            .send()
            .await
            .expect("upload transport");
        let status = resp.status().as_u16();
        let json: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default();
        let what = json["type"]
            .as_str()
            .and_then(|t| t.strip_prefix(DOCS))
            .or(json["videoId"].as_str())
            .unwrap_or_default()
            .to_owned();
        (status, what)
    }

    /// A raw request: (status, JSON body or Null).
    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.emu.base_url()));
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
        let bytes = resp.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn access_token(&self) -> String {
        let (status, json) = self
            .raw(
                reqwest::Method::POST,
                "/auth/api-key",
                None,
                Some(&format!(r#"{{"apiKey":"{KEY}"}}"#)),
            )
            .await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(json["token_type"], "Bearer");
        assert_eq!(json["expires_in"], 3600);
        assert!(json["refresh_token"].as_str().is_some());
        json["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }
}

fn is_token_id(id: &str) -> bool {
    id.len() == 24 && id.starts_with("to") && id.chars().all(|c| c.is_ascii_alphanumeric())
}

fn slug(json: &Value) -> &str {
    json["type"]
        .as_str()
        .and_then(|t| t.strip_prefix(DOCS))
        .unwrap_or("<none>")
}

/// Polls `check` every 100 ms until it returns true or `within` has passed.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn created_token_uploads_immediately() {
    let env = Env::new().await;
    let id = env.create(None).await;
    assert!(is_token_id(&id), "create prints the new token id: {id:?}");
    let (status, video) = env.upload(&id).await;
    assert_eq!(status, 201, "{video}");
    assert!(video.starts_with("vi"), "{video}");
    assert_eq!(env.emu.videos().len(), 1);
    // An unknown token is still refused: the created one is not a wildcard.
    assert_eq!(
        env.upload("to0000000000000000000000").await,
        (401, "authentication-invalid-upload-token".to_owned())
    );
}

#[tokio::test]
async fn list_shows_every_token_across_pages() {
    let env = Env::new().await;
    let client = env.client();
    let mut created = Vec::new();
    // More than one page of 100 (the client's page size).
    for i in 0..130u64 {
        created.push(client.create(Some(i * 10)).await.expect("create").token);
    }
    let listed = client.list().await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|t| t.token.as_str()).collect();
    assert_eq!(ids.len(), 131, "130 created + the preset one");
    assert_eq!(ids[0], PRESET, "oldest first");
    assert_eq!(
        &ids[1..],
        created.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let with_ttl = listed.iter().find(|t| t.token == created[5]).unwrap();
    assert_eq!(with_ttl.ttl, 50);
    assert!(with_ttl.expires_at.is_some());
    let never = listed.iter().find(|t| t.token == created[0]).unwrap();
    assert_eq!((never.ttl, never.expires_at.as_deref()), (0, None));

    // The text output: a header and one line per token.
    let text = env.run(TokenCommand::List).await.expect("list text");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 132, "{text}");
    assert!(lines[0].starts_with("TOKEN") && lines[0].contains("EXPIRES"));
    assert!(lines
        .iter()
        .any(|l| l.starts_with(&created[0]) && l.ends_with("never")));

    // The emulator's pagination object, page by page.
    let bearer = format!("Bearer {}", env.access_token().await);
    let (status, page) = env
        .raw(
            reqwest::Method::GET,
            "/upload-tokens?currentPage=2&pageSize=50&sortOrder=desc",
            Some(&bearer),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let p = &page["pagination"];
    assert_eq!(p["currentPage"], 2);
    assert_eq!(p["pageSize"], 50);
    assert_eq!(p["currentPageItems"], 50);
    assert_eq!(p["itemsTotal"], 131);
    assert_eq!(p["pagesTotal"], 3);
    let rels: Vec<&str> = p["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["rel"].as_str().unwrap())
        .collect();
    assert_eq!(rels, ["self", "first", "previous", "next", "last"]);
    // Descending: page 2 starts 50 tokens from the newest.
    assert_eq!(page["data"][0]["token"], created[130 - 51].as_str());
    let (status, json) = env
        .raw(
            reqwest::Method::GET,
            "/upload-tokens?pageSize=101",
            Some(&bearer),
            None,
        )
        .await;
    assert_eq!((status, slug(&json)), (400, "invalid-attribute"), "{json}");
}

#[tokio::test]
async fn show_describes_one_token() {
    let env = Env::new().await;
    let id = env.create(Some(3600)).await;
    let info = env.client().show(&id).await.expect("show");
    assert_eq!(info.token, id);
    assert_eq!(info.ttl, 3600);
    let created = info.created_at.expect("createdAt");
    let expires = info.expires_at.expect("expiresAt");
    assert!(created.ends_with("+00:00") && expires.ends_with("+00:00"));
    assert!(expires > created, "{created} .. {expires}");

    let text = env
        .run(TokenCommand::Show { id: id.clone() })
        .await
        .expect("show text");
    assert!(
        text.contains(&id) && text.contains("3600 s") && text.contains(&expires),
        "{text}"
    );

    let e = env
        .run(TokenCommand::Show {
            id: "toNOPEnope".to_owned(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, TokenError::NotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("showing an upload token")
            && msg.contains("toNOPEnope")
            && msg.contains("resource-not-found"),
        "{msg}"
    );
}

#[tokio::test]
async fn deleted_token_is_refused() {
    let env = Env::new().await;
    let id = env.create(None).await;
    assert_eq!(env.upload(&id).await.0, 201);
    let text = env
        .run(TokenCommand::Delete { id: id.clone() })
        .await
        .expect("delete");
    assert_eq!(text, format!("deleted upload token {id}"));
    assert_eq!(
        env.upload(&id).await,
        (401, "authentication-invalid-upload-token".to_owned())
    );
    let listed = env.client().list().await.expect("list");
    assert!(listed.iter().all(|t| t.token != id));
    let e = env
        .run(TokenCommand::Delete { id: id.clone() })
        .await
        .unwrap_err();
    assert!(matches!(e, TokenError::NotFound { .. }), "{e:?}");
    // Other tokens are untouched.
    assert_eq!(env.upload(PRESET).await.0, 201);
}

#[tokio::test]
async fn token_expires_after_its_ttl() {
    let env = Env::new().await;
    let client = env.client();
    let info = client.create(Some(1)).await.expect("create");
    assert_eq!(info.ttl, 1);
    assert!(info.expires_at.is_some());
    let (e, t) = (&env, info.token.as_str());
    let refused = eventually(Duration::from_secs(15), || async move {
        e.upload(t).await == (401, "authentication-invalid-upload-token".to_owned())
    })
    .await;
    assert!(refused, "a token with ttl 1 is still accepted after 15 s");
    let e = client.show(&info.token).await.unwrap_err();
    assert!(matches!(e, TokenError::NotFound { .. }), "{e:?}");
    let listed = client.list().await.expect("list");
    assert!(listed.iter().all(|t| t.token != info.token));
    // A token without ttl, created at the same time, does not expire.
    assert_eq!(env.upload(PRESET).await.0, 201);
}

#[tokio::test]
async fn set_tokens_keeps_created_tokens() {
    let env = Env::new().await;
    let id = env.create(None).await;
    env.emu
        .set_tokens(vec!["to1otherOTHERother12345".to_owned()]);
    assert_eq!(env.upload("to1otherOTHERother12345").await.0, 201);
    assert_eq!(env.upload(PRESET).await.0, 401, "replaced");
    assert_eq!(env.upload(&id).await.0, 201, "created tokens stay");
}

#[tokio::test]
async fn bad_api_key_is_refused_clearly() {
    let env = Env::new().await;
    let wrong = "wrongKEYwrongKEY42";
    let e = run_with_key(TokenCommand::List, ApiKey::new(wrong), env.url())
        .await
        .unwrap_err();
    assert!(matches!(e, TokenError::Refused { .. }), "{e:?}");
    let shown = format!("{e}\n{e:?}");
    assert!(
        shown.contains("authenticating with the API key")
            && shown.contains("authentication-invalid-user-credentials")
            && shown.contains("check the API key"),
        "{shown}"
    );
    assert!(!shown.contains(wrong), "the key leaked: {shown}");

    // Nothing listening: the transport error carries no key either.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = run_with_key(
        TokenCommand::Create { ttl: None },
        ApiKey::new(KEY),
        Url::parse(&format!("http://{closed}")).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, TokenError::Connect { .. }), "{e:?}");
    let shown = format!("{e}\n{e:?}");
    assert!(!shown.contains(KEY), "the key leaked: {shown}");
    assert!(!format!("{:?}", env.client()).contains(KEY));
}

#[tokio::test]
async fn missing_api_key_names_both_ways() {
    let e = api_key_from(None, None).unwrap_err();
    assert!(matches!(e, TokenError::MissingKey), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("INGESTD_API_KEY") && msg.contains("--api-key-file"),
        "{msg}"
    );
    let e = api_key_from(None, Some("".into())).unwrap_err();
    assert!(e.to_string().contains("INGESTD_API_KEY"), "{e}");
}

#[tokio::test]
async fn run_reads_the_key_from_a_file() {
    let env = Env::new().await;
    let path = env.dir.path().join("api-key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    let args = TokenArgs {
        command: TokenCommand::Create { ttl: Some(600) },
        api_key_file: Some(path.clone()),
    };
    let id = token::run(args, env.url()).await.expect("run");
    assert!(is_token_id(&id), "{id}");
    assert_eq!(env.upload(&id).await.0, 201);

    std::fs::write(&path, "wrongKEYfromFILE\n").unwrap();
    let args = TokenArgs {
        command: TokenCommand::List,
        api_key_file: Some(path),
    };
    let e = token::run(args, env.url()).await.unwrap_err();
    assert!(matches!(e, TokenError::Refused { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("wrongKEYfromFILE"));
}

#[tokio::test]
async fn management_needs_a_bearer_token() {
    let env = Env::new().await;
    let get = reqwest::Method::GET;
    let (status, json) = env.raw(get.clone(), "/upload-tokens", None, None).await;
    assert_eq!(
        (status, slug(&json)),
        (401, "authentication-missing-authorization-header"),
        "{json}"
    );
    let (status, json) = env
        .raw(get.clone(), "/upload-tokens", Some("Bearer nope"), None)
        .await;
    assert_eq!(
        (status, slug(&json)),
        (401, "authentication-invalid-access-token")
    );
    // The API key itself is not a bearer token.
    let (status, _) = env
        .raw(
            get.clone(),
            "/upload-tokens",
            Some(&format!("Bearer {KEY}")),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, json) = env
        .raw(
            reqwest::Method::POST,
            "/auth/api-key",
            None,
            Some(r#"{"apiKey":"nope"}"#),
        )
        .await;
    assert_eq!(
        (status, slug(&json)),
        (400, "authentication-invalid-user-credentials"),
        "{json}"
    );
    assert_eq!(json["status"], 400);

    let bearer = format!("Bearer {}", env.access_token().await);
    let post = reqwest::Method::POST;
    let (status, json) = env
        .raw(
            post.clone(),
            "/upload-tokens",
            Some(&bearer),
            Some(r#"{"ttl":0}"#),
        )
        .await;
    assert_eq!(status, 200, "the API answers 200, not 201: {json}");
    assert!(is_token_id(json["token"].as_str().unwrap()));
    assert!(json.get("expiresAt").is_none_or(Value::is_null), "{json}");
    let (status, json) = env
        .raw(post, "/upload-tokens", Some(&bearer), Some(r#"{"ttl":-1}"#))
        .await;
    assert_eq!((status, slug(&json)), (400, "invalid-attribute"));
    let (status, json) = env
        .raw(
            reqwest::Method::DELETE,
            "/upload-tokens/toNOPE",
            Some(&bearer),
            None,
        )
        .await;
    assert_eq!((status, slug(&json)), (404, "resource-not-found"));
}

#[tokio::test]
async fn refused_access_token_is_renewed_once() {
    let env = Env::new().await;
    let client = env.client();
    client.authenticate().await.expect("authenticate");
    // Dropping the key revokes its access tokens; adding it back lets a new
    // authentication succeed, which the client does by itself on the 401.
    env.emu.set_api_keys(vec![]);
    env.emu.set_api_keys(vec![KEY.to_owned()]);
    let info = client.create(None).await.expect("create after renewal");
    assert!(is_token_id(&info.token));
    // With the key gone for good, the renewal is refused in turn.
    env.emu.set_api_keys(vec![]);
    let e = client.list().await.unwrap_err();
    assert!(matches!(e, TokenError::Refused { .. }), "{e:?}");
}
