//! Bad input, as a user meets it: the real binary, the emulator on loopback,
//! real temp dirs. Each test checks what the user sees (exit code, a message
//! naming what and where), what the journal says, and that nothing is lost
//! or sent that should not be. The README's "Bad input" table points here.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ingestd::apivideo::MAX_TOTAL_BYTES;
use ingestd::emulator::Fault;
use ingestd::journal::{FileRow, FileState};

/// How long any single expected outcome may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

/// A `[[watch]]` table for `path` with a short settle and poll interval.
fn watch(path: &Path, extra: &str) -> String {
    format!(
        "\n[[watch]]\npath = {}\nsettle = \"300ms\"\npoll_interval = \"1s\"\n{extra}\n",
        toml_path(path)
    )
}

/// The config file's first seven lines, numbered as the tests expect:
/// 1 `[api]`, 2 base_url, 3 token_file, 4 chunk_size, 6 `[journal]`, 7 path.
fn base_config(env: &Env, chunk_size: &str) -> String {
    format!(
        "[api]\nbase_url = \"{}\"\ntoken_file = {}\nchunk_size = {chunk_size}\n\n[journal]\npath = {}\n",
        env.emulator.base_url(),
        toml_path(&env.token_file),
        toml_path(&env.journal),
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn upload_requests(env: &Env) -> u64 {
    env.emulator.stats().upload_requests
}

/// Every command that reads the configuration, as a user would try them.
const COMMANDS: &[&[&str]] = &[
    &["run"],
    &["run", "--once"],
    &["upload", "/nonexistent/clip.mp4"],
    &["check-config"],
    &["status"],
];

/// Runs every command of [`COMMANDS`]; each must exit 78 with a message
/// holding every part of `parts`, and touch neither the journal nor the server.
fn assert_config_refused(env: &Env, parts: &[&str]) {
    assert_refused_by(env, COMMANDS, parts);
}

fn assert_refused_by(env: &Env, commands: &[&[&str]], parts: &[&str]) {
    for args in commands {
        let out = env.cmd(args).output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(
            err.contains("invalid configuration"),
            "{args:?}: {}",
            text(&out)
        );
        for part in parts {
            assert!(
                err.contains(part),
                "{args:?}: the message does not say {part:?}: {}",
                text(&out)
            );
        }
        assert!(
            !text(&out).contains(TOKEN),
            "the token leaked: {}",
            text(&out)
        );
    }
    assert!(
        !env.journal.exists(),
        "a refused config created the journal"
    );
    assert_eq!(upload_requests(env), 0);
}

// Configuration ─────────────────────────────────────────────────────────────

#[test]
fn malformed_toml_exits_78_naming_the_file_line_and_column_never_the_token() {
    let env = Env::new();
    // An unterminated string on the token's own line: the parser's snippet
    // of that line must not reach the message.
    let broken = format!(
        "[api]\nbase_url = \"{}\"\ntoken = \"{TOKEN}\n",
        env.emulator.base_url()
    );
    std::fs::write(&env.config, broken).unwrap();
    let config = env.config.display().to_string();
    assert_config_refused(&env, &["TOML syntax error", &config, "line 3", "column"]);

    // A table header left open.
    std::fs::write(&env.config, base_config(&env, "\"8MiB\"") + "\n[upload\n").unwrap();
    assert_config_refused(&env, &["TOML syntax error", &config, "line 9"]);
}

#[test]
fn an_unknown_key_exits_78_naming_the_key_the_file_the_line_and_the_valid_keys() {
    let env = Env::new();
    let config = env.config.display().to_string();
    // A typo in a known section (line 5: after the four [api] lines).
    let typo = base_config(&env, "\"8MiB\"").replacen(
        "\n\n[journal]",
        "\nchunksize = \"8MiB\"\n\n[journal]",
        1,
    );
    std::fs::write(&env.config, typo).unwrap();
    assert_config_refused(
        &env,
        &[
            "unknown key `api.chunksize`",
            &config,
            "line 5",
            "chunk_size",
        ],
    );

    // A misspelt section, and a key in a [[watch]].
    std::fs::write(
        &env.config,
        base_config(&env, "\"8MiB\"") + "\n[uplod]\nconcurrency = 1\n",
    )
    .unwrap();
    assert_config_refused(&env, &["unknown key `uplod`", &config, "line 9", "upload"]);
    std::fs::write(
        &env.config,
        base_config(&env, "\"8MiB\"") + &watch(&env.media, "setle = \"5s\""),
    )
    .unwrap();
    assert_config_refused(&env, &["unknown key `watch[0].setle`", &config, "settle"]);

    // From the environment: the variable is named.
    env.write_config("8MiB", "");
    let out = env
        .cmd(&["run", "--once"])
        .env("INGESTD_API__CHUNKSIZE", "8MiB")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(
        stderr(&out).contains("INGESTD_API__CHUNKSIZE") && stderr(&out).contains("chunk_size"),
        "{}",
        text(&out)
    );
    assert!(!env.journal.exists());
}

#[test]
fn a_bad_or_out_of_range_size_exits_78_naming_the_key_the_value_and_the_limits() {
    let env = Env::new();
    let config = env.config.display().to_string();
    let cases: &[(&str, &[&str])] = &[
        (
            "\"12 potatoes\"",
            &["\"12 potatoes\" is not a size", "50MiB"],
        ),
        ("\"\"", &["\"\" is not a size"]),
        ("\"4MiB\"", &["4 MiB", "out of range", "5 MiB", "128 MiB"]),
        ("0", &["out of range", "5 MiB", "128 MiB"]),
        ("\"129MiB\"", &["129 MiB", "out of range", "128 MiB"]),
        ("\"1TiB\"", &["1 TiB", "out of range"]),
        ("\"99999999999 EiB\"", &["too large"]),
        ("-1", &["-1 is negative"]),
        ("5.5", &["not a whole number of bytes"]),
    ];
    for (value, parts) in cases {
        std::fs::write(&env.config, base_config(&env, value)).unwrap();
        let mut all = vec!["invalid `api.chunk_size`", config.as_str(), "line 4"];
        all.extend_from_slice(parts);
        assert_config_refused(&env, &all);
    }

    // The same from the environment names the variable.
    std::fs::write(&env.config, base_config(&env, "\"8MiB\"")).unwrap();
    let out = env
        .cmd(&["run", "--once"])
        .env("INGESTD_API__CHUNK_SIZE", "12 potatoes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("api.chunk_size")
            && err.contains("INGESTD_API__CHUNK_SIZE")
            && err.contains("\"12 potatoes\""),
        "{}",
        text(&out)
    );

    // Another size key.
    std::fs::write(
        &env.config,
        base_config(&env, "\"8MiB\"") + "\n[upload]\nbandwidth_limit = \"12 potatoes\"\n",
    )
    .unwrap();
    assert_config_refused(
        &env,
        &[
            "invalid `upload.bandwidth_limit`",
            &config,
            "line 10",
            "\"12 potatoes\"",
        ],
    );
}

#[test]
fn a_missing_token_file_exits_78_naming_the_file_and_the_key() {
    let env = Env::new();
    std::fs::remove_file(&env.token_file).unwrap();
    let config = env.config.display().to_string();
    let token_file = env.token_file.display().to_string();
    // Every command that uploads (or checks the setup) refuses to start …
    let uploading: Vec<&[&str]> = COMMANDS
        .iter()
        .copied()
        .filter(|args| args[0] != "status")
        .collect();
    assert_refused_by(
        &env,
        &uploading,
        &[
            "cannot read the upload token file",
            &token_file,
            "api.token_file",
            &config,
            "line 3",
            "os error 2",
            "create it with the token, or fix the path",
        ],
    );
    // Put back, everything works again.
    env.set_token(TOKEN);
    let f = env.file("clip.mp4", 1000, 1);
    let out = env.cmd(&["upload", f.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Looking needs no token: with it gone again, `status` still shows the
    // journal.
    std::fs::remove_file(&env.token_file).unwrap();
    let out = env.cmd(&["status"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("clip.mp4"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_token_file_others_can_read_is_used_with_a_warning_naming_it() {
    let env = Env::new();
    let token_file = env.token_file.display().to_string();
    std::fs::set_permissions(&env.token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = env.file("clip.mp4", 1000, 2);
    let out = env.cmd(&["upload", f.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("can be read by others"))
        .unwrap_or_else(|| panic!("no warning about the token file: {}", text(&out)));
    assert!(
        line.contains("WARN") && line.contains(&token_file) && line.contains("chmod 600"),
        "{line}"
    );
    assert!(line.contains("mode 644"), "{line}");
    assert!(
        !text(&out).contains(TOKEN),
        "the token leaked: {}",
        text(&out)
    );
    assert_eq!(row_for(&env, &f).unwrap()["state"], "done");

    // The daemon says it at start too.
    let mut child = env
        .cmd(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::collect(&mut child);
    assert!(
        log.wait_for("can be read by others", WAIT),
        "the daemon does not warn: {}",
        log.text()
    );
    signal(&child, 15);
    let out = wait_child(child, WAIT);
    assert!(out.status.success(), "{}", log.text());

    // Private: no warning.
    std::fs::set_permissions(&env.token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let g = env.file("clip2.mp4", 1000, 3);
    let out = env.cmd(&["upload", g.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !stderr(&out).contains("can be read by others"),
        "{}",
        text(&out)
    );
}

// The daemon ────────────────────────────────────────────────────────────────

/// The stderr of a child, collected as it comes (a chatty daemon never
/// blocks on a full pipe, and a test can wait for a line).
struct Log {
    text: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Log {
    /// The child's stderr.
    fn collect(child: &mut Child) -> Log {
        Log::of(child.stderr.take().expect("stderr is piped"))
    }

    fn of(stream: impl Read + Send + 'static) -> Log {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line)),
                }
            }
        });
        Log {
            text,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Everything, once the stream is closed (the child has exited).
    fn finish(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.text()
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.text().contains(needle))
    }

    /// The first line holding every part, if any.
    fn line_with(&self, parts: &[&str]) -> Option<String> {
        self.text()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
    }
}

fn rows_at(env: &Env, path: &Path) -> Vec<FileRow> {
    rows(env).into_iter().filter(|r| r.path() == path).collect()
}

/// Waits for a row at `path` in `state` that `pick` accepts.
fn wait_row(
    env: &Env,
    path: &Path,
    state: FileState,
    pick: impl Fn(&FileRow) -> bool,
    log: &dyn Fn() -> String,
) -> FileRow {
    let mut found = None;
    let ok = wait_until(WAIT, || {
        found = rows_at(env, path)
            .into_iter()
            .find(|r| r.state == state && pick(r));
        found.is_some()
    });
    assert!(
        ok,
        "{} never became {state}; journal: {:#?}\n--- log\n{}",
        path.display(),
        rows(env),
        log()
    );
    found.unwrap()
}

/// The row's video is complete at the emulator with exactly these bytes.
fn assert_video(env: &Env, row: &FileRow, sha: &str) {
    let id = row.video_id.as_deref().expect("a done row has a videoId");
    let v = env.video(id);
    assert!(v.complete, "video not complete: {v:?}");
    assert_eq!(v.sha256.as_deref(), Some(sha), "wrong content for {row:?}");
}

fn complete_videos(env: &Env) -> usize {
    env.videos().iter().filter(|v| v.complete).count()
}

// Missing and unreadable files ──────────────────────────────────────────────

/// Whether this process runs as root (mode 000 does not stop root).
fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `cmd` as it runs for an ordinary user: as root, under `setpriv` without
/// the capabilities that let root read any file. `None` (with the reason
/// printed) when that is not possible here.
fn without_root_read_override(cmd: Command) -> Option<Command> {
    if !is_root() {
        return Some(cmd);
    }
    let probe = Command::new("setpriv")
        .args([
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
            "true",
        ])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped the mode-000 assertions: running as root, which reads any file, \
             and setpriv cannot drop CAP_DAC_OVERRIDE here"
        );
        return None;
    }
    let mut wrapped = Command::new("setpriv");
    wrapped.args([
        "--bounding-set=-dac_override,-dac_read_search",
        "--inh-caps=-dac_override,-dac_read_search",
    ]);
    wrapped.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    Some(wrapped)
}

#[test]
fn an_unreadable_file_in_a_watch_folder_fails_naming_it_and_the_others_go_on() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, ""));
    let locked = env.file("locked.mp4", 1000, 4);
    let fine = env.file("fine.mp4", 2000, 5);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let Some(mut run) = without_root_read_override(env.cmd(&["run", "--once"])) else {
        return;
    };
    let out = run.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let row = rows_at(&env, &locked).pop().expect("journaled");
    assert_eq!(row.state, FileState::Failed, "{row:?}");
    let why = row.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("cannot read the file")
            && why.contains("Permission denied")
            && why.contains(&format!("ingestd retry {}", row.id)),
        "{why}"
    );
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.contains("ERROR")
            && l.contains(locked.to_str().unwrap())
            && l.contains("cannot read the file")),
        "no error line names the file: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("failed") && l.contains(locked.to_str().unwrap())),
        "{}",
        text(&out)
    );
    let done = rows_at(&env, &fine).pop().expect("journaled");
    assert_eq!(done.state, FileState::Done, "{done:?}");
    assert_video(&env, &done, &sha256(&fine));
    assert_eq!(env.videos().len(), 1, "{:?}", env.videos());

    // Fixed and retried, it goes.
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.cmd(&["retry", &row.id.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = env.cmd(&["run", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let row = rows_at(&env, &locked).pop().unwrap();
    assert_eq!(row.state, FileState::Done, "{row:?}");
    assert_video(&env, &row, &sha256(&locked));
}

// Empty and oversized files ─────────────────────────────────────────────────

#[test]
fn an_empty_file_in_a_watch_folder_is_logged_never_sent_and_uploaded_once_it_has_bytes() {
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, ""));
    let empty = env.file("empty.mp4", 0, 0);
    let d = Daemon::ready(&env);
    let line = d
        .line_with(&["the file is empty", "not journaled until it has bytes"])
        .unwrap_or_else(|| panic!("no log line about the empty file:\n{}", d.log()));
    assert!(line.contains(empty.to_str().unwrap()), "{line}");
    assert!(rows(&env).is_empty(), "{:#?}", rows(&env));
    assert_eq!(upload_requests(&env), 0);

    // Nothing lost: once written, it is uploaded, once.
    write_random(&empty, 3000, 6);
    let row = wait_row(&env, &empty, FileState::Done, |_| true, &|| d.log());
    assert_video(&env, &row, &sha256(&empty));
    stop_ok(d);
    assert_eq!(env.videos().len(), 1, "{:?}", env.videos());
    assert_eq!(rows(&env).len(), 1, "{:#?}", rows(&env));
}

/// A sparse file one byte over api.video's limit.
fn over_the_limit(path: &Path) -> PathBuf {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(MAX_TOTAL_BYTES + 1).unwrap();
    path.to_path_buf()
}

#[test]
fn a_file_over_the_api_limit_fails_before_any_byte_is_sent() {
    assert_eq!(MAX_TOTAL_BYTES, 52_428_800_000);
    let env = Env::new();
    env.write_config("8MiB", &watch(&env.media, ""));
    let huge = over_the_limit(&env.media.join("huge.mov"));
    let fine = env.file("fine.mp4", 2000, 7);

    // From a watch folder.
    let out = env.cmd(&["run", "--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let row = rows_at(&env, &huge).pop().expect("journaled");
    assert_eq!(row.state, FileState::Failed, "{row:?}");
    assert_eq!(row.bytes_uploaded, 0);
    let why = row.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("52428800001 bytes") && why.contains("limit of 52428800000 bytes"),
        "{why}"
    );
    assert!(
        stderr(&out).lines().any(|l| l.contains("ERROR")
            && l.contains(huge.to_str().unwrap())
            && l.contains("over api.video's limit")),
        "no error line names the file: {}",
        text(&out)
    );
    let done = rows_at(&env, &fine).pop().expect("journaled");
    assert_eq!(done.state, FileState::Done);
    assert_eq!(upload_requests(&env), 1, "only the small file was sent");

    // Named on the command line.
    let other = over_the_limit(&env.dir.path().join("other.mxf"));
    let out = env
        .cmd(&["upload", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("failed")
            && l.contains("other.mxf")
            && l.contains("over api.video's limit")),
        "{}",
        text(&out)
    );
    assert_eq!(upload_requests(&env), 1, "not a byte of it was sent");
    assert!(env
        .videos()
        .iter()
        .all(|v| v.total != Some(MAX_TOTAL_BYTES + 1)));
}

// Symlink loops ─────────────────────────────────────────────────────────────

#[test]
fn symlink_loops_end_the_scan_and_a_looping_file_link_is_named() {
    use std::os::unix::fs::symlink;
    let env = Env::new();
    let sub = env.media.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let real = env.file("sub/real.mp4", 2000, 8);
    symlink("..", sub.join("up")).unwrap(); // a directory loop
    symlink("self.mp4", env.media.join("self.mp4")).unwrap(); // a file loop
    symlink("b.mp4", env.media.join("a.mp4")).unwrap();
    symlink("a.mp4", env.media.join("b.mp4")).unwrap();

    for follow in [false, true] {
        env.write_config(
            "8MiB",
            &watch(&env.media, &format!("follow_symlinks = {follow}")),
        );
        let started = Instant::now();
        let out = env.cmd(&["run", "--once"]).output().unwrap();
        assert!(
            started.elapsed() < WAIT,
            "follow_symlinks = {follow}: took {:?}",
            started.elapsed()
        );
        assert!(
            out.status.success(),
            "follow_symlinks = {follow}: {}",
            text(&out)
        );
        // The real file once; no row for a link, whatever the path taken.
        let all = rows(&env);
        assert_eq!(all.len(), 1, "follow_symlinks = {follow}: {all:#?}");
        assert_eq!(all[0].path(), real);
        assert_eq!(all[0].state, FileState::Done);
        let err = stderr(&out);
        for name in ["self.mp4", "a.mp4", "b.mp4"] {
            let named = err.lines().any(|l| {
                l.contains("WARN")
                    && l.contains("cannot follow the symlink")
                    && l.contains(env.media.join(name).to_str().unwrap())
            });
            // Not followed at all by default: no reason to warn.
            assert_eq!(named, follow, "follow_symlinks = {follow}, {name}:\n{err}");
        }
    }
    assert_eq!(env.videos().len(), 1, "{:?}", env.videos());

    // Named on the command line: skipped, with the OS's reason.
    let out = env
        .cmd(&["upload", env.media.join("self.mp4").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("skipped")
            && l.contains("self.mp4")
            && l.contains("os error 40")),
        "{}",
        text(&out)
    );
    assert_eq!(rows(&env).len(), 1);
    assert_eq!(upload_requests(&env), 1);
}

// Files changed mid-upload ──────────────────────────────────────────────────

/// A 30 MiB file in 5 MiB chunks, each request held 500 ms by the emulator:
/// several seconds of upload in which to change the file.
fn slow_env(daemon: bool) -> (Env, PathBuf) {
    let env = Env::new();
    let extra = if daemon {
        watch(&env.media, "")
    } else {
        String::new()
    };
    env.write_config("5MiB", &extra);
    env.emulator
        .push_faults(vec![Some(Fault::Latency(Duration::from_millis(500))); 20]);
    let f = env.file("clip.mp4", 30 * MIB, 9);
    (env, f)
}

fn wait_started(env: &Env, f: &Path, log: &dyn Fn() -> String) -> FileRow {
    let mut row = None;
    assert!(
        wait_until(WAIT, || {
            row = rows_at(env, f).into_iter().find(|r| r.bytes_uploaded > 0);
            row.is_some()
        }),
        "the upload never started:\n{}",
        log()
    );
    row.unwrap()
}

#[test]
fn a_file_truncated_mid_upload_is_abandoned_as_gone_never_completed() {
    let (env, f) = slow_env(false);
    let mut child = env
        .cmd(&["upload", f.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = Log::collect(&mut child);
    let mut stdout = Log::of(child.stdout.take().unwrap());
    wait_started(&env, &f, &|| log.text());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(3 * MIB)
        .unwrap();
    let out = wait_child(child, WAIT);
    let stdout = stdout.finish();
    log.finish();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", log.text());
    let row = rows_at(&env, &f).pop().expect("journaled");
    assert_eq!(row.state, FileState::Gone, "{row:?}");
    assert!(row.bytes_uploaded < 30 * MIB, "{row:?}");
    let why = row.last_error.clone().unwrap_or_default();
    assert!(why.contains("changed since it was journaled"), "{why}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("gone") && l.contains("clip.mp4")),
        "{stdout}"
    );
    assert!(
        log.line_with(&["abandoning the upload", "clip.mp4", "changed"])
            .is_some(),
        "no log line says the upload was abandoned:\n{}",
        log.text()
    );
    assert_eq!(complete_videos(&env), 0, "{:?}", env.videos());
}

#[test]
fn a_file_truncated_mid_upload_in_a_watch_folder_is_uploaded_again_as_its_new_content() {
    let (env, f) = slow_env(true);
    let d = Daemon::ready(&env);
    let old = wait_started(&env, &f, &|| d.log());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(3 * MIB)
        .unwrap();
    let gone = wait_row(&env, &f, FileState::Gone, |_| true, &|| d.log());
    assert_eq!(gone.id, old.id);
    let new = wait_row(&env, &f, FileState::Done, |_| true, &|| d.log());
    assert_ne!(new.id, old.id, "the truncated content is a new row");
    assert_eq!(new.identity.size, 3 * MIB);
    assert_video(&env, &new, &sha256(&f));
    let log = stop_ok(d);
    assert!(
        log.lines().any(|l| l.contains("clip.mp4")
            && l.contains("changed")
            && (l.contains("abandoning the upload") || l.contains("marked gone"))),
        "no log line says the upload was abandoned:\n{log}"
    );
    assert_eq!(complete_videos(&env), 1, "{:?}", env.videos());
    assert_eq!(rows(&env).len(), 2, "{:#?}", rows(&env));
}

/// Replaces `f` the way a copy tool does: a new file renamed over it.
fn replace(f: &Path, size: u64, seed: u64) {
    let tmp = f.with_file_name(".replacement.tmp");
    write_random(&tmp, size, seed);
    std::fs::rename(&tmp, f).unwrap();
}

#[test]
fn a_file_replaced_mid_upload_is_abandoned_as_gone_never_completed() {
    let (env, f) = slow_env(false);
    let mut child = env
        .cmd(&["upload", f.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = Log::collect(&mut child);
    let mut stdout = Log::of(child.stdout.take().unwrap());
    wait_started(&env, &f, &|| log.text());
    replace(&f, 3 * MIB, 10);
    let out = wait_child(child, WAIT);
    let stdout = stdout.finish();
    log.finish();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", log.text());
    let row = rows_at(&env, &f).pop().expect("journaled");
    assert_eq!(row.state, FileState::Gone, "{row:?}");
    let why = row.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("replaced by another one at the same path"),
        "{why}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("gone") && l.contains("clip.mp4")),
        "{stdout}"
    );
    assert!(
        log.line_with(&["abandoning the upload", "clip.mp4", "replaced"])
            .is_some(),
        "no log line says the upload was abandoned:\n{}",
        log.text()
    );
    assert_eq!(complete_videos(&env), 0, "{:?}", env.videos());
    assert_eq!(rows(&env).len(), 1, "the replacement is not journaled");
}

#[test]
fn a_file_replaced_mid_upload_in_a_watch_folder_is_uploaded_again_as_the_new_file() {
    let (env, f) = slow_env(true);
    let d = Daemon::ready(&env);
    let old = wait_started(&env, &f, &|| d.log());
    replace(&f, 3 * MIB, 11);
    let gone = wait_row(&env, &f, FileState::Gone, |_| true, &|| d.log());
    assert_eq!(gone.id, old.id);
    let new = wait_row(&env, &f, FileState::Done, |_| true, &|| d.log());
    assert_ne!(new.id, old.id, "the replacement is a new row");
    assert_eq!(new.identity.size, 3 * MIB);
    assert_video(&env, &new, &sha256(&f));
    let log = stop_ok(d);
    assert!(
        log.lines().any(|l| l.contains("clip.mp4")
            && (l.contains("replaced") || l.contains("changed"))
            && (l.contains("abandoning the upload") || l.contains("marked gone"))),
        "no log line says the upload was abandoned:\n{log}"
    );
    assert_eq!(complete_videos(&env), 1, "{:?}", env.videos());
    assert_eq!(rows(&env).len(), 2, "{:#?}", rows(&env));
}
