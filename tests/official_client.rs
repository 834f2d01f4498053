//! api.video's official clients against the emulator, so that the emulator
//! cannot drift from the service those clients are written for:
//! `@api.video/nodejs-client` 2.6.8 (npm) and `api-video` 1.4.7 (pip), each
//! driven by a script of `tests/official_client/` that reports what the
//! client saw as JSON, checked here against what the emulator stored.
//!
//! Each client is installed once per test binary into
//! `$CARGO_TARGET_TMPDIR/official-client/` and kept there for later runs (a
//! marker file is written once the install is complete). Both clients
//! refuse chunks under 5 MiB, and api.video refuses parts under 5 MiB but
//! the last, so the 3 MiB file goes in one request; the chunked path is a
//! progressive session of a 5 MiB and a 1 MiB part.
//!
//! Without node and npm (or python3 and pip), or when the registry cannot be
//! reached, a test fails when `CI_REQUIRE_OFFICIAL_CLIENT=1` is set, and is
//! skipped with a loud message otherwise.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{sha256, write_random, Env, MIB, TOKEN};
use ingestd::emulator::{ApiRateLimits, Emulator, EmulatorOptions, UploadMode, VideoReport};
use serde_json::{json, Value};

const KEY: &str = "officialClientKEY0123456789";
const NODE_PACKAGE: &str = "@api.video/nodejs-client";
const NODE_VERSION: &str = "2.6.8";
const PYTHON_PACKAGE: &str = "api-video";
const PYTHON_VERSION: &str = "1.4.7";
/// The smallest chunk size both clients accept.
const CHUNK_SIZE: u64 = 5 * MIB;
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

const WHOLE: &str = "clip-3MiB.mp4";
const PART_A: &str = "rec.mp4.part.a";
const PART_B: &str = "rec.mp4.part.b";
const CHUNKED: &str = "chunked-11MiB.mp4";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/official_client")
        .join(name)
}

/// Runs `cmd` in its own process group with piped output; past `timeout`
/// the group is killed and that is the error.
fn run(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    let pid = child.id();
    let mut readers = Vec::new();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        readers.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        }));
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("{what}: {e}"))? {
            break status;
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on the process group this function created.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Err(format!("{what} did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = readers.into_iter().map(|r| r.join().unwrap_or_default());
    Ok(Output {
        status,
        stdout: out.next().unwrap_or_default(),
        stderr: out.next().unwrap_or_default(),
    })
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` to success within `timeout`, or says why not.
fn succeed(cmd: Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let out = run(cmd, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!("{what} failed: {}", describe(&out)))
    }
}

/// The install directory of one client: reused when its marker is there,
/// else emptied and filled by `install`, then marked.
fn install_into(
    name: &str,
    install: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("official-client")
        .join(name);
    let marker = dir.join(".installed");
    if marker.exists() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    install(&dir)?;
    std::fs::write(&marker, b"").map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    Ok(dir)
}

/// The client's install directory, or `None` (skipped, loudly) when it
/// cannot be installed and `CI_REQUIRE_OFFICIAL_CLIENT` is not `1`.
fn available(installed: &Result<PathBuf, String>, client: &str) -> Option<PathBuf> {
    match installed {
        Ok(dir) => Some(dir.clone()),
        Err(why) if std::env::var_os("CI_REQUIRE_OFFICIAL_CLIENT").is_some_and(|v| v == "1") => {
            panic!(
                "CI_REQUIRE_OFFICIAL_CLIENT=1 but the official {client} cannot be installed: {why}"
            )
        }
        Err(why) => {
            eprintln!(
                "\n!!!!!!!!!!\n!!! SKIPPED: the official {client} cannot be installed, so the emulator \
                 is NOT checked against it (set CI_REQUIRE_OFFICIAL_CLIENT=1 to make this a failure).\n\
                 !!! {why}\n!!!!!!!!!!\n"
            );
            None
        }
    }
}

fn node_client() -> Option<PathBuf> {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let mut node = Command::new("node");
        node.arg("--version");
        succeed(node, Duration::from_secs(30))?;
        install_into(&format!("node-{NODE_VERSION}"), |dir| {
            let mut npm = Command::new("npm");
            npm.arg("install")
                .arg("--prefix")
                .arg(dir)
                .args([
                    "--no-audit",
                    "--no-fund",
                    "--ignore-scripts",
                    "--no-package-lock",
                    "--fetch-retries=1",
                    "--fetch-timeout=30000",
                    "--update-notifier=false",
                ])
                .arg(format!("{NODE_PACKAGE}@{NODE_VERSION}"));
            succeed(npm, INSTALL_TIMEOUT)?;
            let manifest = dir
                .join("node_modules")
                .join(NODE_PACKAGE)
                .join("package.json");
            let text = std::fs::read_to_string(&manifest)
                .map_err(|e| format!("npm left no {}: {e}", manifest.display()))?;
            let version: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
            if version["version"] != NODE_VERSION {
                return Err(format!(
                    "npm installed {NODE_PACKAGE} {}, not {NODE_VERSION}",
                    version["version"]
                ));
            }
            Ok(())
        })
    });
    available(
        installed,
        &format!("Node.js client {NODE_PACKAGE}@{NODE_VERSION}"),
    )
}

fn python_client() -> Option<PathBuf> {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let mut pip = Command::new("python3");
        pip.args(["-m", "pip", "--version"]);
        succeed(pip, Duration::from_secs(30))?;
        install_into(&format!("python-{PYTHON_VERSION}"), |dir| {
            let mut pip = Command::new("python3");
            pip.args(["-m", "pip", "install", "--target"])
                .arg(dir)
                .args([
                    "--no-input",
                    "--disable-pip-version-check",
                    "--no-warn-script-location",
                    "--timeout=30",
                    "--retries=1",
                ])
                .arg(format!("{PYTHON_PACKAGE}=={PYTHON_VERSION}"));
            succeed(pip, INSTALL_TIMEOUT)?;
            let dist = dir.join(format!("api_video-{PYTHON_VERSION}.dist-info"));
            if !dist.is_dir() {
                return Err(format!("pip left no {}", dist.display()));
            }
            Ok(())
        })
    });
    available(
        installed,
        &format!("Python client {PYTHON_PACKAGE}=={PYTHON_VERSION}"),
    )
}

/// The emulators and files one client run needs.
struct World {
    env: Env,
    /// A second emulator allowing 2 reads per window.
    limited: Emulator,
    whole: PathBuf,
    /// The progressive session's parts, and the file they make together.
    part_a: PathBuf,
    part_b: PathBuf,
    progressive: PathBuf,
    chunked: PathBuf,
}

fn world() -> World {
    let env = Env::with(|o| {
        o.api_keys = vec![KEY.to_owned()];
        o.rate_limit = 100;
    });
    let limited = env
        .rt
        .block_on(Emulator::start_with_limits(
            "127.0.0.1:0".parse().unwrap(),
            EmulatorOptions {
                data_dir: env.dir.path().join("limited"),
                tokens: vec![TOKEN.to_owned()],
                api_keys: vec![KEY.to_owned()],
                rate_limit: 0,
                rate_window: Duration::from_secs(60),
            },
            ApiRateLimits {
                reads: 2,
                writes: 0,
            },
        ))
        .unwrap();
    let whole = env.file(WHOLE, 3 * MIB, 1);
    let progressive = env.file("progressive.bin", 6 * MIB, 2);
    let bytes = std::fs::read(&progressive).unwrap();
    let (a, b) = bytes.split_at(5 * MIB as usize);
    let part_a = env.media.join(PART_A);
    let part_b = env.media.join(PART_B);
    std::fs::write(&part_a, a).unwrap();
    std::fs::write(&part_b, b).unwrap();
    let chunked = env.media.join(CHUNKED);
    write_random(&chunked, 11 * MIB, 3);
    World {
        env,
        limited,
        whole,
        part_a,
        part_b,
        progressive,
        chunked,
    }
}

impl World {
    /// Runs a client script against the emulators; its JSON report.
    fn drive(&self, mut cmd: Command) -> Value {
        cmd.env("EMU_URL", self.env.emulator.base_url())
            .env("EMU_LIMITED_URL", self.limited.base_url())
            .env("API_KEY", KEY)
            .env("WHOLE_FILE", &self.whole)
            .env("PART_A", &self.part_a)
            .env("PART_B", &self.part_b)
            .env("CHUNKED_FILE", &self.chunked)
            .env("CHUNK_SIZE", CHUNK_SIZE.to_string())
            // The emulators are on loopback; a proxy of the environment
            // (which npm and pip may need) must not carry the clients' calls.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        let what = format!("{cmd:?}");
        let out = run(cmd, SCRIPT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{what}: {}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("the script's report is not JSON ({e}): {}", describe(&out)))
    }

    fn video(&self, id: &Value) -> VideoReport {
        let id = id.as_str().unwrap_or_else(|| panic!("no videoId: {id}"));
        self.env.video(id)
    }

    /// The checks both clients share.
    fn check_common(&self, report: &Value, whole_mode: UploadMode) {
        let token = report["created"]["token"].as_str().expect("created token");
        assert!(token.starts_with("to") && token.len() == 24, "{report}");
        assert_eq!(report["created"]["ttl"], 3600, "{report}");
        let rate = &report["created"]["rate"];
        assert_eq!(
            (&rate["limit"], &rate["remaining"]),
            (&json!("200"), &json!("199")),
            "writes bucket: {report}"
        );
        let listed = report["listed"].as_array().expect("listed");
        assert!(
            listed.contains(&json!(token)) && listed.contains(&json!(TOKEN)),
            "{report}"
        );
        assert_eq!(report["shown"]["token"], token, "{report}");
        assert_eq!(report["shown"]["ttl"], 3600, "{report}");

        // The whole file, byte for byte, titled with its whole name.
        assert_eq!(report["whole"]["title"], WHOLE, "{report}");
        let v = self.video(&report["whole"]["videoId"]);
        assert!(v.complete, "{v:?}");
        assert_eq!(v.mode, whole_mode, "{v:?}");
        assert_eq!(v.title, WHOLE);
        assert_eq!(v.sha256.as_deref(), Some(sha256(&self.whole).as_str()));
        assert_eq!(
            std::fs::read(&v.path).unwrap(),
            std::fs::read(&self.whole).unwrap()
        );

        // The progressive session: one video, both parts, the first part's name.
        let p = &report["progressive"];
        assert_eq!(p["firstVideoId"], p["videoId"], "{report}");
        assert_eq!(p["title"], PART_A, "{report}");
        let v = self.video(&p["videoId"]);
        assert!(v.complete, "{v:?}");
        assert_eq!(
            (v.mode, v.parts.clone(), v.total_parts),
            (UploadMode::Part, vec![1, 2], Some(2))
        );
        assert_eq!(
            v.sha256.as_deref(),
            Some(sha256(&self.progressive).as_str())
        );

        // A deleted token is gone and uploads with it are refused.
        assert_eq!(report["showDeleted"], 404, "{report}");
        assert_eq!(report["deleteDeleted"], 404, "{report}");
        assert_eq!(report["uploadDeleted"], 401, "{report}");

        // The reads bucket, seen through the client.
        assert_eq!(
            report["limited"],
            json!([
                {"limit": "2", "remaining": "1", "retryAfter": report["limited"][0]["retryAfter"]},
                {"limit": "2", "remaining": "0", "retryAfter": report["limited"][1]["retryAfter"]},
            ]),
            "{report}"
        );
        assert_eq!(report["limitedThird"], 429, "{report}");
    }
}

#[test]
fn official_nodejs_client_against_the_emulator() {
    let Some(dir) = node_client() else { return };
    let world = world();
    let mut node = Command::new("node");
    node.arg(script("node_client.js"))
        .env("NODE_PATH", dir.join("node_modules"));
    let report = world.drive(node);

    // No Content-Range for a file under the chunk size; the file part is
    // named after the file; the key goes through HTTP Basic.
    world.check_common(&report, UploadMode::Whole);
    assert_eq!(report["wrongKeyList"], 401, "{report}");
    assert_eq!(report["wrongKeyCreate"], 401, "{report}");

    // A file over the chunk size: the client sends `part N/3` without the
    // videoId of part 1 (apivideo/api.video-nodejs-client#216), so api.video
    // makes one video per part, none complete; so does the emulator.
    let chunked: Vec<_> = world
        .env
        .videos()
        .into_iter()
        .filter(|v| v.title == CHUNKED)
        .collect();
    assert_eq!(chunked.len(), 3, "{chunked:?}");
    for (i, v) in chunked.iter().enumerate() {
        assert!(!v.complete, "{v:?}");
        assert_eq!(
            (v.mode, v.parts.clone(), v.total_parts),
            (UploadMode::Part, vec![i as u64 + 1], Some(3))
        );
    }
    assert_eq!(
        report["chunked"]["lastVideoId"], chunked[2].video_id,
        "{report}"
    );
    assert_eq!(world.env.videos().len(), 2 + 3);
}

#[test]
fn official_python_client_against_the_emulator() {
    let Some(dir) = python_client() else { return };
    let world = world();
    let mut python = Command::new("python3");
    python
        .arg("-s")
        .arg(script("python_client.py"))
        .env("PYTHONPATH", &dir)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let report = world.drive(python);

    // `part 1/1` for a file under the chunk size; the key is traded for a
    // bearer access token, renewed with /auth/refresh.
    world.check_common(&report, UploadMode::Part);
    assert_eq!(report["created"]["status"], 200, "{report}");
    assert_eq!(report["listStatus"], 200, "{report}");
    assert_eq!(report["shown"]["status"], 200, "{report}");
    assert_eq!(report["refreshed"], true, "{report}");
    assert_eq!(report["listAfterRefresh"], 200, "{report}");
    assert_eq!(report["deleteStatus"], 204, "{report}");
    assert_eq!(report["wrongKeyConnect"], 400, "{report}");
    let rate = &report["limitedThirdRate"];
    assert_eq!(
        (&rate["limit"], &rate["remaining"]),
        (&json!("2"), &json!("0")),
        "{report}"
    );
    assert_eq!(world.env.videos().len(), 2);
}
