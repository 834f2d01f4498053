//! The api.video upload emulator, driven over HTTP with reqwest.

use std::net::SocketAddr;
use std::time::Duration;

use ingestd::emulator::{Emulator, EmulatorOptions, Fault, RandomFaults, UploadMode};
use reqwest::header::HeaderMap;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;
const TOKEN: &str = "to1tcmSFHeYY5KzyhOqVKMKb";
const DOCS: &str = "https://docs.api.video/reference/";

struct Env {
    emu: Emulator,
    dir: TempDir,
    client: reqwest::Client,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    json: Value,
}

impl Reply {
    fn slug(&self) -> String {
        self.json["type"]
            .as_str()
            .and_then(|t| t.strip_prefix(DOCS))
            .unwrap_or("<none>")
            .to_owned()
    }

    fn video_id(&self) -> String {
        self.json["videoId"].as_str().expect("videoId").to_owned()
    }

    fn header(&self, name: &str) -> Option<u64> {
        self.headers.get(name)?.to_str().ok()?.parse().ok()
    }
}

async fn env() -> Env {
    env_with(100, Duration::from_secs(60)).await
}

async fn env_with(rate_limit: u32, rate_window: Duration) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EmulatorOptions {
        data_dir: dir.path().join("data"),
        tokens: vec![TOKEN.to_owned()],
        api_keys: Vec::new(),
        rate_limit,
        rate_window,
    };
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .expect("start emulator");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    Env { emu, dir, client }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn file_part(bytes: &[u8], name: &str) -> Part {
    Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str("video/mp4")
        .unwrap()
}

/// The usual form: `videoId` (if any) then `file`.
fn form(video_id: Option<&str>, bytes: &[u8]) -> Form {
    let mut form = Form::new();
    if let Some(id) = video_id {
        form = form.text("videoId", id.to_owned());
    }
    form.part("file", file_part(bytes, "clip.mp4"))
}

async fn send_form(
    env: &Env,
    token: Option<&str>,
    range: Option<&str>,
    form: Form,
) -> reqwest::Result<Reply> {
    let url = match token {
        Some(t) => format!("{}/upload?token={t}", env.emu.base_url()),
        None => format!("{}/upload", env.emu.base_url()),
    };
    let mut req = env.client.post(url).multipart(form);
    if let Some(r) = range {
        req = req.header("Content-Range", r);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?;
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        headers,
        json,
    })
}

async fn upload(env: &Env, video_id: Option<&str>, range: Option<&str>, bytes: &[u8]) -> Reply {
    send_form(env, Some(TOKEN), range, form(video_id, bytes))
        .await
        .expect("transport")
}

async fn get_json(env: &Env, path: &str) -> (u16, Value) {
    let resp = env
        .client
        .get(format!("{}{path}", env.emu.base_url()))
        .send()
        .await
        .expect("transport");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn assert_problem(reply: &Reply, status: u16, slug: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.slug(), slug, "{reply:?}");
    assert_eq!(reply.json["status"], status, "{reply:?}");
    assert!(reply.json["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
}

fn assert_full_video(json: &Value, id: &str, title: &str) {
    assert_eq!(json["videoId"], id);
    assert_eq!(json["title"], title);
    assert_eq!(json["description"], "");
    assert_eq!(json["discarded"], false);
    assert_eq!(json["public"], true);
    assert_eq!(json["panoramic"], false);
    assert_eq!(json["mp4Support"], true);
    assert_eq!(json["tags"], json!([]));
    assert_eq!(json["metadata"], json!([]));
    assert_eq!(json["source"]["uri"], format!("/videos/{id}/source"));
    for asset in ["iframe", "player", "hls", "thumbnail", "mp4"] {
        assert!(json["assets"][asset].as_str().is_some(), "assets.{asset}");
    }
    // The assets are the emulator's own (the tests reach it on loopback).
    let hls = json["assets"]["hls"].as_str().unwrap_or_default();
    assert!(
        hls.starts_with("http://127.0.0.1:")
            && hls.ends_with(&format!("/vod/{id}/hls/manifest.m3u8")),
        "{hls}"
    );
    for date in ["createdAt", "publishedAt", "updatedAt"] {
        let d = json[date].as_str().unwrap_or_default();
        assert!(d.ends_with("+00:00") && d.len() == 25, "{date}: {d}");
    }
}

fn is_video_id(id: &str) -> bool {
    id.len() == 24 && id.starts_with("vi") && id.chars().all(|c| c.is_ascii_alphanumeric())
}

fn bytes_range(from: usize, len: usize, total: Option<usize>) -> String {
    let total = total.map_or("*".to_owned(), |t| t.to_string());
    format!("bytes {from}-{}/{total}", from + len - 1)
}

#[tokio::test]
async fn missing_and_invalid_token_are_401() {
    let env = env().await;
    let bytes = data(1000, 1);
    let r = send_form(&env, None, None, form(None, &bytes))
        .await
        .unwrap();
    assert_problem(&r, 401, "authentication-missing-upload-token");
    assert_eq!(r.json["title"], "The upload token is missing.");
    let r = send_form(&env, Some(""), None, form(None, &bytes))
        .await
        .unwrap();
    assert_problem(&r, 401, "authentication-missing-upload-token");
    let r = send_form(&env, Some("to000"), None, form(None, &bytes))
        .await
        .unwrap();
    assert_problem(&r, 401, "authentication-invalid-upload-token");
    assert_eq!(r.json["title"], "The upload token is invalid or expired.");
    assert!(env.emu.videos().is_empty());
    assert_eq!(env.emu.stats().upload_requests, 3);
    assert_eq!(env.emu.stats().responses_by_status.get(&401), Some(&3));
}

#[tokio::test]
async fn whole_file_upload_returns_full_video_and_sha256() {
    let env = env().await;
    let bytes = data(3 * MIB + 17, 2);
    let form = Form::new().part("file", file_part(&bytes, "holiday.2024.mp4"));
    let r = send_form(&env, Some(TOKEN), None, form).await.unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.video_id();
    assert!(is_video_id(&id), "{id}");
    assert_full_video(&r.json, &id, "holiday.2024.mp4");
    assert!(r.header("x-ratelimit-limit").is_some());

    let videos = env.emu.videos();
    assert_eq!(videos.len(), 1);
    let v = &videos[0];
    assert_eq!(v.video_id, id);
    assert_eq!(v.mode, UploadMode::Whole);
    assert!(v.complete);
    assert_eq!(v.total, Some(bytes.len() as u64));
    assert_eq!(v.received_bytes, bytes.len() as u64);
    assert_eq!(v.sha256.as_deref(), Some(sha256(&bytes).as_str()));
    assert_eq!(std::fs::read(&v.path).unwrap(), bytes);
    let stats = env.emu.stats();
    assert_eq!(stats.videos_created, 1);
    assert_eq!(stats.body_bytes, bytes.len() as u64);
}

#[tokio::test]
async fn bytes_mode_chunked_upload_chains_video_id() {
    let env = env().await;
    let total = 12 * MIB;
    let bytes = data(total, 3);
    let chunk = 5 * MIB;
    let mut video_id: Option<String> = None;
    for (i, from) in (0..total).step_by(chunk).enumerate() {
        let to = (from + chunk).min(total);
        let range = bytes_range(from, to - from, Some(total));
        let r = upload(&env, video_id.as_deref(), Some(&range), &bytes[from..to]).await;
        assert_eq!(r.status, 201, "chunk {i}: {r:?}");
        let id = r.video_id();
        if let Some(prev) = &video_id {
            assert_eq!(&id, prev);
        }
        if to < total {
            assert_eq!(r.json, json!({ "videoId": id }), "intermediate reply");
        } else {
            assert_full_video(&r.json, &id, "clip.mp4");
        }
        video_id = Some(id);
    }
    let videos = env.emu.videos();
    assert_eq!(videos.len(), 1);
    let v = &videos[0];
    assert_eq!(v.mode, UploadMode::Bytes);
    assert!(v.complete);
    assert_eq!(v.accepted_chunks, 3);
    assert_eq!(v.total, Some(total as u64));
    assert_eq!(
        v.ranges,
        vec![[0, 5242879], [5242880, 10485759], [10485760, 12582911]]
    );
    assert_eq!(v.sha256.as_deref(), Some(sha256(&bytes).as_str()));
    assert_eq!(env.emu.stats().videos_created, 1);
}

#[tokio::test]
async fn bytes_mode_out_of_order_with_late_total() {
    let env = env().await;
    let total = 11 * MIB + 5;
    let bytes = data(total, 4);
    let a = 5 * MIB;
    let r = upload(&env, None, Some(&bytes_range(a, a, None)), &bytes[a..2 * a]).await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.video_id();
    assert_eq!(r.json, json!({ "videoId": id }));
    let r = upload(&env, Some(&id), Some(&bytes_range(0, a, None)), &bytes[..a]).await;
    assert_eq!(r.json, json!({ "videoId": id }));
    let last = &bytes[2 * a..];
    let r = upload(
        &env,
        Some(&id),
        Some(&bytes_range(2 * a, last.len(), Some(total))),
        last,
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_full_video(&r.json, &id, "clip.mp4");
    let v = &env.emu.videos()[0];
    assert!(v.complete);
    assert_eq!(v.sha256.as_deref(), Some(sha256(&bytes).as_str()));
    assert_eq!(std::fs::read(&v.path).unwrap(), bytes);
}

#[tokio::test]
async fn resent_range_overlaps() {
    let env = env().await;
    let total = 12 * MIB;
    let bytes = data(total, 5);
    let range = bytes_range(0, 5 * MIB, Some(total));
    let r = upload(&env, None, Some(&range), &bytes[..5 * MIB]).await;
    let id = r.video_id();
    let r = upload(&env, Some(&id), Some(&range), &bytes[..5 * MIB]).await;
    assert_problem(&r, 400, "video-content-range-by-bytes-range-overlap");
    // A range straddling the received one overlaps too.
    let straddle = bytes_range(5 * MIB - 1, 5 * MIB, Some(total));
    let r = upload(
        &env,
        Some(&id),
        Some(&straddle),
        &bytes[5 * MIB - 1..10 * MIB - 1],
    )
    .await;
    assert_problem(&r, 400, "video-content-range-by-bytes-range-overlap");
    let v = &env.emu.videos()[0];
    assert_eq!(v.accepted_chunks, 1);
    assert_eq!(v.received_bytes, 5 * MIB as u64);
}

#[tokio::test]
async fn range_too_small_unless_last() {
    let env = env().await;
    let total = 12 * MIB;
    let bytes = data(MIB, 6);
    let r = upload(&env, None, Some(&bytes_range(0, MIB, Some(total))), &bytes).await;
    assert_problem(&r, 400, "video-content-range-by-bytes-range-too-small");
    let r = upload(&env, None, Some(&bytes_range(0, MIB, None)), &bytes).await;
    assert_problem(&r, 400, "video-content-range-by-bytes-range-too-small");
    assert!(
        env.emu.videos().is_empty(),
        "a rejected chunk creates nothing"
    );
    // The last range may be small, even when it is the only one.
    let r = upload(&env, None, Some(&bytes_range(0, MIB, Some(MIB))), &bytes).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_full_video(&r.json, &r.video_id(), "clip.mp4");
}

#[tokio::test]
async fn range_mismatch_has_detail() {
    let env = env().await;
    let bytes = data(5 * MIB - 1, 7);
    let r = upload(
        &env,
        None,
        Some(&bytes_range(0, 5 * MIB, Some(12 * MIB))),
        &bytes,
    )
    .await;
    assert_problem(&r, 400, "video-content-range-by-bytes-range-mismatch");
    assert_eq!(
        r.json["detail"],
        "The size of the file you sent is 5242879 bytes but the range length you set is 5242880."
    );
    let r = upload(&env, None, Some("bytes 10-9/100"), &bytes).await;
    assert_problem(&r, 400, "video-content-range-by-bytes-from-byte-too-high");
    assert!(env.emu.videos().is_empty());
}

#[tokio::test]
async fn different_total_bytes_is_rejected() {
    let env = env().await;
    let bytes = data(10 * MIB, 8);
    let r = upload(
        &env,
        None,
        Some(&bytes_range(0, 5 * MIB, Some(12 * MIB))),
        &bytes[..5 * MIB],
    )
    .await;
    let id = r.video_id();
    let r = upload(
        &env,
        Some(&id),
        Some(&bytes_range(5 * MIB, 5 * MIB, Some(13 * MIB))),
        &bytes[5 * MIB..],
    )
    .await;
    assert_problem(
        &r,
        400,
        "video-content-range-by-bytes-different-total-bytes",
    );
    assert!(r.json["detail"].as_str().unwrap().contains("12582912"));
    let r = upload(
        &env,
        Some(&id),
        Some(&bytes_range(5 * MIB, 5 * MIB, Some(12 * MIB))),
        &bytes[5 * MIB..],
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
}

#[tokio::test]
async fn malformed_range_and_mixed_modes() {
    let env = env().await;
    let bytes = data(5 * MIB, 9);
    for bad in [
        "bytes 0-5242879",
        "bytes=0-5242879/*",
        "part one/2",
        "items 1/2",
    ] {
        let r = upload(&env, None, Some(bad), &bytes).await;
        assert_problem(&r, 400, "video-content-range-malformed");
    }
    let r = upload(&env, None, Some("bytes 0-5242879/*"), &bytes).await;
    let bytes_video = r.video_id();
    let r = upload(&env, Some(&bytes_video), Some("part 2/*"), &bytes).await;
    assert_problem(&r, 400, "video-content-range-started-with-bytes");
    let r = upload(&env, Some(&bytes_video), None, &bytes).await;
    assert_problem(&r, 400, "video-content-range-already-initiated");

    let r = upload(&env, None, Some("part 1/*"), &bytes).await;
    let part_video = r.video_id();
    let r = upload(
        &env,
        Some(&part_video),
        Some("bytes 5242880-10485759/*"),
        &bytes,
    )
    .await;
    assert_problem(&r, 400, "video-content-range-started-with-part");
    let r = upload(&env, Some(&part_video), None, &bytes).await;
    assert_problem(&r, 400, "video-content-range-already-initiated");
    assert_eq!(env.emu.videos().len(), 2);
}

#[tokio::test]
async fn part_mode_out_of_order() {
    let env = env().await;
    let total = 11 * MIB + 3;
    let bytes = data(total, 10);
    let p = 5 * MIB;
    let (p1, p2, p3) = (&bytes[..p], &bytes[p..2 * p], &bytes[2 * p..]);
    // The small last part first, with the total known.
    let r = upload(&env, None, Some("part 3/3"), p3).await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.video_id();
    assert_eq!(r.json, json!({ "videoId": id }));
    let r = upload(&env, Some(&id), Some("part 1/*"), p1).await;
    assert_eq!(r.json, json!({ "videoId": id }));
    let r = upload(&env, Some(&id), Some("part 1/3"), p1).await;
    assert_problem(&r, 400, "video-content-range-by-part-part-already-sent");
    let r = upload(&env, Some(&id), Some("part 2/4"), p2).await;
    assert_problem(&r, 400, "video-content-range-by-part-different-total-parts");
    let r = upload(&env, Some(&id), Some("part 4/*"), p2).await;
    assert_problem(&r, 400, "video-content-range-by-part-part-too-high-total");
    let r = upload(&env, Some(&id), Some("part 2/*"), p2).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_full_video(&r.json, &id, "clip.mp4");
    let v = &env.emu.videos()[0];
    assert_eq!(v.mode, UploadMode::Part);
    assert!(v.complete);
    assert_eq!(v.parts, vec![1, 2, 3]);
    assert_eq!(v.total_parts, Some(3));
    assert_eq!(v.total, Some(total as u64));
    assert_eq!(v.sha256.as_deref(), Some(sha256(&bytes).as_str()));
    assert_eq!(std::fs::read(&v.path).unwrap(), bytes);
}

#[tokio::test]
async fn part_mode_rules() {
    let env = env().await;
    let small = data(MIB, 11);
    let big = data(5 * MIB, 12);
    let r = upload(&env, None, Some("part 1/*"), &small).await;
    assert_problem(
        &r,
        400,
        "video-content-range-by-part-uploaded-file-too-small",
    );
    let r = upload(&env, None, Some("part 0/2"), &big).await;
    assert_problem(&r, 400, "video-content-range-by-part-part-zero");
    let r = upload(&env, None, Some("part 1/0"), &big).await;
    assert_problem(&r, 400, "video-content-range-by-part-total-parts-zero");
    let r = upload(&env, None, Some("part 10001/*"), &big).await;
    assert_problem(&r, 400, "video-content-range-by-part-part-too-high-allowed");
    let r = upload(&env, None, Some("part 1/10001"), &big).await;
    assert_problem(&r, 400, "video-content-range-by-part-total-parts-too-high");
    assert!(env.emu.videos().is_empty());
    // `part 1/1` of a small file is a complete upload (TS and Python clients).
    let r = upload(&env, None, Some("part 1/1"), &small).await;
    assert_eq!(r.status, 201);
    assert_full_video(&r.json, &r.video_id(), "clip.mp4");
    // total_parts lower than a part already sent.
    let r = upload(&env, None, Some("part 3/*"), &big).await;
    let id = r.video_id();
    let r = upload(&env, Some(&id), Some("part 1/2"), &big).await;
    assert_problem(&r, 400, "video-content-range-by-part-total-parts-too-low");
}

#[tokio::test]
async fn concurrent_parts_complete_once() {
    let env = env().await;
    let p = 5 * MIB;
    let bytes = data(4 * p, 13);
    let r = upload(&env, None, Some("part 1/4"), &bytes[..p]).await;
    let id = r.video_id();
    let replies = futures_util::future::join_all((2..=4).map(|n| {
        let (env, id, bytes) = (&env, id.clone(), &bytes);
        async move {
            let range = format!("part {n}/4");
            upload(env, Some(&id), Some(&range), &bytes[(n - 1) * p..n * p]).await
        }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 201), "{replies:?}");
    let full = replies
        .iter()
        .filter(|r| r.json.get("title").is_some())
        .count();
    assert_eq!(full, 1, "exactly one reply completes the upload");
    let v = &env.emu.videos()[0];
    assert_eq!(v.sha256.as_deref(), Some(sha256(&bytes).as_str()));
}

#[tokio::test]
async fn complete_video_rejects_more_chunks() {
    let env = env().await;
    let bytes = data(2 * MIB, 14);
    let r = upload(&env, None, None, &bytes).await;
    let id = r.video_id();
    let r = upload(&env, Some(&id), None, &bytes).await;
    assert_problem(&r, 400, "video-source-already-uploaded");
    let r = upload(&env, Some(&id), Some("part 2/2"), &bytes).await;
    assert_problem(&r, 400, "video-source-already-uploaded");
    assert_eq!(env.emu.videos().len(), 1);
}

#[tokio::test]
async fn unknown_video_id_is_404() {
    let env = env().await;
    let bytes = data(MIB, 15);
    let r = upload(&env, Some("vi0000000000000000000000"), None, &bytes).await;
    assert_problem(&r, 404, "resource-not-found");
    assert_eq!(r.json["name"], "videoId");
    assert!(env.emu.videos().is_empty());
}

#[tokio::test]
async fn video_id_field_after_the_file_part() {
    let env = env().await;
    let total = 7 * MIB;
    let bytes = data(total, 16);
    let first = Form::new().part("file", file_part(&bytes[..5 * MIB], "late.mov"));
    let r = send_form(
        &env,
        Some(TOKEN),
        Some(&bytes_range(0, 5 * MIB, Some(total))),
        first,
    )
    .await
    .unwrap();
    let id = r.video_id();
    let second = Form::new()
        .part("file", file_part(&bytes[5 * MIB..], "late.mov"))
        .text("videoId", id.clone());
    let r = send_form(
        &env,
        Some(TOKEN),
        Some(&bytes_range(5 * MIB, 2 * MIB, Some(total))),
        second,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    assert_full_video(&r.json, &id, "late.mov");
    let videos = env.emu.videos();
    assert_eq!(videos.len(), 1);
    assert_eq!(videos[0].sha256.as_deref(), Some(sha256(&bytes).as_str()));
}

#[tokio::test]
async fn multipart_file_rules() {
    let env = env().await;
    let bytes = data(1000, 17);
    let no_file = Form::new().text("videoId", "vi0000000000000000000000");
    let r = send_form(&env, Some(TOKEN), None, no_file).await.unwrap();
    assert_problem(&r, 400, "uploaded-file-no-file");
    let two = Form::new()
        .part("file", file_part(&bytes, "a.mp4"))
        .part("other", file_part(&bytes, "b.mp4"));
    let r = send_form(&env, Some(TOKEN), None, two).await.unwrap();
    assert_problem(&r, 400, "uploaded-file-multiple-files");
    let empty = Form::new().part("file", file_part(&[], "a.mp4"));
    let r = send_form(&env, Some(TOKEN), None, empty).await.unwrap();
    assert_problem(&r, 400, "uploaded-file-empty");
    // Two file parts, neither named `file`: still two files.
    let two = Form::new()
        .part("a.mp4", file_part(&bytes, "a.mp4"))
        .part("b.mp4", file_part(&bytes, "b.mp4"));
    let r = send_form(&env, Some(TOKEN), None, two).await.unwrap();
    assert_problem(&r, 400, "uploaded-file-multiple-files");
    assert_eq!(
        r.json["title"],
        "There are more than one uploaded file in the request."
    );
    let raw = env
        .client
        .post(format!("{}/upload?token={TOKEN}", env.emu.base_url()))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    assert!(env.emu.videos().is_empty());
    // Every file-part byte read is counted, accepted or not.
    assert_eq!(env.emu.stats().body_bytes, 4 * 1000);
    assert_eq!(env.emu.stats().rejected_requests, 5);
}

/// The official Node.js client names the file part after the file
/// (`formData.append(filename, stream, filename)`); api.video takes the one
/// file part whatever its field name, and the title is the whole file name.
#[tokio::test]
async fn any_single_file_part_whatever_its_field_name() {
    let env = env().await;
    let whole = data(1000, 40);
    let form = Form::new().part("10m.mp4.part.a", file_part(&whole, "10m.mp4.part.a"));
    let r = send_form(&env, Some(TOKEN), None, form).await.unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    assert_full_video(&r.json, &r.video_id(), "10m.mp4.part.a");

    // A progressive session as that client sends it: `part N/*`, then
    // `part N/N`, the file part named after each part's file, `videoId` after.
    let total = 6 * MIB;
    let bytes = data(total, 41);
    let first = Form::new().part("rec.part.a", file_part(&bytes[..5 * MIB], "rec.part.a"));
    let r = send_form(&env, Some(TOKEN), Some("part 1/*"), first)
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.video_id();
    assert_eq!(r.json, json!({ "videoId": id }));
    let last = Form::new()
        .part("rec.part.b", file_part(&bytes[5 * MIB..], "rec.part.b"))
        .text("videoId", id.clone());
    let r = send_form(&env, Some(TOKEN), Some("part 2/2"), last)
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    assert_full_video(&r.json, &id, "rec.part.a");

    let videos = env.emu.videos();
    assert_eq!(videos.len(), 2);
    assert_eq!(videos[0].sha256.as_deref(), Some(sha256(&whole).as_str()));
    assert_eq!(videos[1].title, "rec.part.a");
    assert_eq!(videos[1].sha256.as_deref(), Some(sha256(&bytes).as_str()));
}

#[tokio::test]
async fn rate_limit_headers_and_429() {
    let env = env_with(3, Duration::from_secs(2)).await;
    let bytes = data(1000, 18);
    for remaining in [2, 1, 0] {
        let r = upload(&env, None, None, &bytes).await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.header("x-ratelimit-limit"), Some(3));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
        let after = r.header("x-ratelimit-retry-after").unwrap();
        assert!((1..=2).contains(&after), "{after}");
    }
    let r = upload(&env, None, None, &bytes).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json,
        json!({
            "type": "https://docs.api.video/reference/too-many-requests",
            "title": "Too many requests.",
            "status": 429,
        })
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some(0));
    let wait = r.header("x-ratelimit-retry-after").unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Errors carry the headers too, and non-upload routes do not count.
    let resp = env
        .client
        .get(format!("{}/nowhere", env.emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(env.emu.videos().len(), 3);

    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = upload(&env, None, None, &bytes).await;
    assert_eq!(r.status, 201, "a new window admits requests again");
    assert_eq!(r.header("x-ratelimit-remaining"), Some(2));
}

#[tokio::test]
async fn fault_503_drains_and_stores_nothing() {
    let env = env().await;
    let bytes = data(2 * MIB, 19);
    env.emu.push_faults(vec![Some(Fault::Status503), None]);
    let r = upload(&env, None, None, &bytes).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json["status"], 503);
    assert!(r.header("x-ratelimit-limit").is_some());
    assert!(env.emu.videos().is_empty());
    let r = upload(&env, None, None, &bytes).await;
    assert_eq!(r.status, 201);
    assert_eq!(env.emu.stats().faults_injected, 1);
}

async fn wait_tmp_empty(env: &Env) {
    let tmp = env.dir.path().join("data").join("tmp");
    for _ in 0..100 {
        if std::fs::read_dir(&tmp).unwrap().next().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("temporary files left in {}", tmp.display());
}

#[tokio::test]
async fn fault_reset_mid_body_is_a_transport_error() {
    let env = env().await;
    let bytes = data(8 * MIB, 20);
    env.emu.push_faults(vec![Some(Fault::ResetMidBody)]);
    let err = send_form(&env, Some(TOKEN), None, form(None, &bytes))
        .await
        .expect_err("the connection must be dropped");
    assert!(!err.is_status(), "{err:?}");
    assert!(env.emu.videos().is_empty());
    wait_tmp_empty(&env).await;
    let r = upload(&env, None, None, &bytes).await;
    assert_eq!(r.status, 201);
    assert_eq!(env.emu.videos().len(), 1);
}

#[tokio::test]
async fn fault_lost_reply_stores_the_chunk() {
    let env = env().await;
    let total = 12 * MIB;
    let bytes = data(total, 21);
    let first = bytes_range(0, 5 * MIB, Some(total));
    let r = upload(&env, None, Some(&first), &bytes[..5 * MIB]).await;
    let id = r.video_id();
    env.emu.push_faults(vec![Some(Fault::LostReply)]);
    let second = bytes_range(5 * MIB, 5 * MIB, Some(total));
    let err = send_form(
        &env,
        Some(TOKEN),
        Some(&second),
        form(Some(&id), &bytes[5 * MIB..10 * MIB]),
    )
    .await
    .expect_err("the reply must be lost");
    assert!(!err.is_status(), "{err:?}");
    let v = &env.emu.videos()[0];
    assert_eq!(v.ranges, vec![[0, 5242879], [5242880, 10485759]]);
    assert_eq!(v.received_bytes, 10 * MIB as u64);
    let r = upload(&env, Some(&id), Some(&second), &bytes[5 * MIB..10 * MIB]).await;
    assert_problem(&r, 400, "video-content-range-by-bytes-range-overlap");
    let r = upload(
        &env,
        Some(&id),
        Some(&bytes_range(10 * MIB, 2 * MIB, Some(total))),
        &bytes[10 * MIB..],
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        env.emu.videos()[0].sha256.as_deref(),
        Some(sha256(&bytes).as_str())
    );
}

#[tokio::test]
async fn latency_and_seeded_random_faults() {
    let env = env().await;
    let bytes = data(1000, 22);
    env.emu
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(300)))]);
    let started = std::time::Instant::now();
    let r = upload(&env, None, None, &bytes).await;
    assert_eq!(r.status, 201);
    assert!(started.elapsed() >= Duration::from_millis(300));

    env.emu.set_random_faults(RandomFaults {
        seed: 42,
        p_503: 1.0,
        p_reset: 0.0,
        p_lost_reply: 0.0,
    });
    let r = upload(&env, None, None, &bytes).await;
    assert_eq!(r.status, 503);
    env.emu.set_random_faults(RandomFaults::default());
    let r = upload(&env, None, None, &bytes).await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn control_endpoints() {
    let env = env().await;
    let base = env.emu.base_url();
    let bytes = data(1000, 23);

    let resp = env
        .client
        .put(format!("{base}/_emulator/tokens"))
        .body(r#"["toNEW"]"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let r = upload(&env, None, None, &bytes).await;
    assert_problem(&r, 401, "authentication-invalid-upload-token");
    let r = send_form(&env, Some("toNEW"), None, form(None, &bytes))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let id = r.video_id();

    let resp = env
        .client
        .post(format!("{base}/_emulator/faults"))
        .body(r#"{"script": [null, "status503"]}"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let ok = send_form(&env, Some("toNEW"), None, form(None, &bytes))
        .await
        .unwrap();
    assert_eq!(ok.status, 201);
    let faulted = send_form(&env, Some("toNEW"), None, form(None, &bytes))
        .await
        .unwrap();
    assert_eq!(faulted.status, 503);
    let resp = env
        .client
        .post(format!("{base}/_emulator/faults"))
        .body(r#"{"script": ["nonsense"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    let (status, videos) = get_json(&env, "/_emulator/videos").await;
    assert_eq!(status, 200);
    let videos = videos.as_array().unwrap();
    assert_eq!(videos.len(), 2);
    assert_eq!(videos[0]["video_id"], id.as_str());
    assert_eq!(videos[0]["complete"], true);
    assert_eq!(videos[0]["sha256"], sha256(&bytes).as_str());

    let (status, stats) = get_json(&env, "/_emulator/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["upload_requests"], 4);
    assert_eq!(stats["videos_created"], 2);
    assert_eq!(stats["responses_by_status"]["503"], 1);

    let (status, body) = get_json(&env, "/no/such/route").await;
    assert_eq!(status, 404);
    assert_eq!(body["type"], format!("{DOCS}unrecognized-request-url"));
    let (status, body) = get_json(&env, "/upload").await;
    assert_eq!(status, 405);
    assert_eq!(body["type"], format!("{DOCS}method-not-allowed"));
}

#[tokio::test]
async fn expect_100_continue() {
    let env = env().await;
    let payload = data(3000, 24);
    let boundary = "XyZbOuNdArY";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"curl.mp4\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&payload);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /upload?token={TOKEN} HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        env.emu.addr(),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(env.emu.addr())
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("interim response")
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]);
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    stream.write_all(&body).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("final response")
        .unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("HTTP/1.1 201"), "{text}");
    let v = &env.emu.videos()[0];
    assert_eq!(v.title, "curl.mp4");
    assert_eq!(v.sha256.as_deref(), Some(sha256(&payload).as_str()));
}

#[tokio::test]
async fn run_standalone_serves_until_cancelled() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let opts = EmulatorOptions {
        data_dir: dir.path().to_owned(),
        tokens: vec![TOKEN.to_owned()],
        api_keys: Vec::new(),
        rate_limit: 0,
        rate_window: Duration::from_secs(60),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(ingestd::emulator::run_standalone(
        addr,
        opts,
        ingestd::emulator::ApiRateLimits::default(),
        ingestd::emulator::PlaybackOptions::default(),
        cancel.clone(),
    ));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{addr}/_emulator/stats");
    let mut served = false;
    for _ in 0..100 {
        if let Ok(resp) = client.get(&url).send().await {
            served = resp.status().is_success();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served);
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .unwrap();
    assert!(result.is_ok());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let env = env().await;
    let addr = env.emu.addr();
    let Env { emu, dir: _dir, .. } = env;
    emu.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn down_refuses_and_drops_connections_then_comes_back_on_the_same_port() {
    let env = env().await;
    let addr = env.emu.addr();
    let before = upload(&env, None, None, &data(3000, 30)).await;
    assert_eq!(before.status, 201);
    // A request in flight: headers and half of the body sent.
    let payload = data(200_000, 31);
    let boundary = "XyZbOuNdArY";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"half.mp4\"\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&payload);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /upload?token={TOKEN} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    for _ in 0..250 {
        if env.emu.stats().upload_requests == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.emu.stats().upload_requests, 2);

    env.emu.set_down(true).await.unwrap();
    assert!(env.emu.is_down());
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the open connection is dropped");
    assert!(
        read.is_err() || rest.is_empty(),
        "no reply on a dropped connection: {}",
        String::from_utf8_lossy(&rest)
    );
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert_eq!(
        env.emu.videos().len(),
        1,
        "the half-sent request stored nothing"
    );

    env.emu.set_down(false).await.unwrap();
    assert!(!env.emu.is_down());
    assert_eq!(env.emu.addr(), addr);
    let env = Env {
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        ..env
    };
    let after = upload(&env, None, None, &data(3000, 32)).await;
    assert_eq!(after.status, 201);
    let videos = env.emu.videos();
    assert_eq!(videos.len(), 2);
    assert_eq!(videos[0].video_id, before.video_id());
    assert_eq!(env.emu.stats().upload_requests, 3);

    // down_for: down, then up again by itself.
    let t = std::time::Instant::now();
    env.emu.down_for(Duration::from_millis(300)).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
}

/// `ingestd emulator` with its flags; killed when dropped.
struct Standalone {
    child: std::process::Child,
    base_url: String,
    _dir: TempDir,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn standalone(flags: &[&str]) -> Standalone {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .arg("--data")
        .arg(dir.path())
        .args(flags)
        .env("INGESTD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ingestd emulator");
    let stdout = child.stdout.take().unwrap();
    // The first line names the address; a blocked read ends when the child
    // dies, which the timeout below bounds.
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
    Standalone {
        child,
        base_url,
        _dir: dir,
    }
}

/// One whole-file upload to a standalone emulator; its reply's JSON.
async fn upload_to(client: &reqwest::Client, base: &str, bytes: &[u8]) -> (u16, Value) {
    let resp = client
        .post(format!("{base}/upload?token={TOKEN}"))
        .multipart(form(None, bytes))
        .send()
        .await
        .expect("transport");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn json_at(client: &reqwest::Client, url: &str) -> Value {
    let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// A manifest reply: status, headers, body.
async fn manifest(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
) -> (u16, HeaderMap, String) {
    let resp = client.request(method, url).send().await.expect("transport");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

#[tokio::test]
async fn the_hls_manifest_answers_202_while_encoding_then_200() {
    // Two uploads allowed a minute: the polling below must not use them.
    let emu = standalone(&["--encoding-time", "1s", "--rate-limit", "2"]);
    let base = emu.base_url.as_str();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let (status, video) = upload_to(&client, base, &data(2000, 40)).await;
    assert_eq!(status, 201, "{video}");
    let id = video["videoId"].as_str().unwrap().to_owned();
    let hls = format!("{base}/vod/{id}/hls/manifest.m3u8");
    let assets = &video["assets"];
    assert_eq!(assets["hls"], hls.as_str());
    assert_eq!(assets["player"], format!("{base}/vod/{id}"));
    assert_eq!(assets["mp4"], format!("{base}/vod/{id}/mp4/source.mp4"));
    assert_eq!(
        assets["thumbnail"],
        format!("{base}/vod/{id}/thumbnail.jpg")
    );
    assert!(
        assets["iframe"]
            .as_str()
            .is_some_and(|i| i.contains(&format!("src=\"{base}/vod/{id}\""))),
        "{assets}"
    );
    assert_eq!(video["public"], true);

    // No token: the assets are public.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (headers, body) = loop {
        let (status, headers, body) = manifest(&client, reqwest::Method::GET, &hls).await;
        assert!(
            !headers.contains_key("x-ratelimit-limit"),
            "a CDN reply: {headers:?}"
        );
        seen.push(status);
        match status {
            202 => assert_eq!(body, "", "no playlist while encoding"),
            200 => break (headers, body),
            other => panic!("manifest answered {other}: {body}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still encoding after 30 s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(seen[0], 202, "encoding first: {seen:?}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/vnd.apple.mpegurl")
    );
    assert!(body.starts_with("#EXTM3U\n"), "{body}");
    assert!(body.contains("#EXT-X-STREAM-INF:"), "{body}");
    let (status, headers, body) = manifest(&client, reqwest::Method::HEAD, &hls).await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/vnd.apple.mpegurl")
    );

    // Every request was counted, and none took an upload from the bucket.
    let polls = seen.len() as u64 + 1;
    let videos = json_at(&client, &format!("{base}/_emulator/videos")).await;
    assert_eq!(videos[0]["manifest_requests"], polls, "{videos}");
    assert!(videos[0]["completed_at"].is_string(), "{videos}");
    let stats = json_at(&client, &format!("{base}/_emulator/stats")).await;
    assert_eq!(stats["manifest_requests"], polls, "{stats}");
    assert_eq!(stats["upload_requests"], 1, "{stats}");
    let (second, _) = upload_to(&client, base, &data(2000, 41)).await;
    assert_eq!(
        second, 201,
        "the manifest requests left the upload bucket alone"
    );
    let (third, _) = upload_to(&client, base, &data(2000, 42)).await;
    assert_eq!(third, 429, "the upload bucket is counting");
}

#[tokio::test]
async fn the_hls_manifest_of_an_unknown_video_or_an_unfinished_upload_is_404() {
    let emu = standalone(&["--encoding-time", "100years"]);
    let base = emu.base_url.as_str();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |id: &str| format!("{base}/vod/{id}/hls/manifest.m3u8");
    let (status, headers, body) = manifest(
        &client,
        reqwest::Method::GET,
        &url("viNoSuchVideo00000000000"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["type"], format!("{DOCS}resource-not-found"));
    assert_eq!(problem["status"], 404);

    // The first chunk of three: the video exists, its upload is not done.
    let first = client
        .post(format!("{base}/upload?token={TOKEN}"))
        .header("Content-Range", "part 1/3")
        .multipart(form(None, &data(5 * MIB, 43)))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = serde_json::from_slice(&first.bytes().await.unwrap()).unwrap();
    let id = first["videoId"].as_str().unwrap();
    let (status, _, body) = manifest(&client, reqwest::Method::GET, &url(id)).await;
    assert_eq!(status, 404, "{body}");

    // A whole video with an encoding time that never ends.
    let (status, video) = upload_to(&client, base, &data(1000, 44)).await;
    assert_eq!(status, 201);
    let hls = video["assets"]["hls"].as_str().unwrap();
    for _ in 0..3 {
        let (status, _, _) = manifest(&client, reqwest::Method::GET, hls).await;
        assert_eq!(status, 202);
    }
    let (status, _, body) = manifest(&client, reqwest::Method::HEAD, hls).await;
    assert_eq!((status, body.as_str()), (202, ""));
}

#[tokio::test]
async fn the_encoding_time_can_change_while_running() {
    let env = env().await;
    assert_eq!(env.emu.encoding_time(), Duration::ZERO, "the default");
    env.emu.set_encoding_time(Duration::MAX);
    let r = upload(&env, None, None, &data(1000, 45)).await;
    assert_eq!(r.status, 201);
    let hls = r.json["assets"]["hls"].as_str().unwrap().to_owned();
    assert_eq!(
        hls,
        format!(
            "{}/vod/{}/hls/manifest.m3u8",
            env.emu.base_url(),
            r.video_id()
        )
    );
    let get = || async { env.client.get(&hls).send().await.unwrap().status().as_u16() };
    assert_eq!(get().await, 202);
    env.emu.set_encoding_time(Duration::ZERO);
    assert_eq!(get().await, 200);
    let v = &env.emu.videos()[0];
    assert_eq!(v.manifest_requests, 2);
    assert!(v.completed_at.is_some());
    assert_eq!(env.emu.stats().manifest_requests, 2);
}

#[tokio::test]
async fn assets_name_the_address_the_client_used() {
    let env = env().await;
    let port = env.emu.addr().port();
    let bytes = data(1000, 46);
    let boundary = "AsSeTsBoUnDaRy";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /upload?token={TOKEN} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(env.emu.addr())
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("reply")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    let json = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let video: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    let id = video["videoId"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(
        video["assets"]["hls"],
        format!("http://localhost:{port}/vod/{id}/hls/manifest.m3u8")
    );
}
