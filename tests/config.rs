//! Configuration loading: defaults, file, environment, validation and the
//! secrecy of the upload token and the shared journal's password. The
//! environment is always passed explicitly (and cleared for the binary).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ingestd::config::{
    self, load_from, AfterUpload, ConfigError, InDoubt, Settings, TokenSource, ValueOrigin,
    WatchMode, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
};

const MIB: u64 = 1024 * 1024;
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");

/// A config file in its own temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new(toml: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml).expect("write config");
        Fixture { dir, path }
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    fn load(&self, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        load_from(Some(&self.path), vars(env))
    }

    fn error(&self, env: &[(&str, &str)]) -> ConfigError {
        match self.load(env) {
            Ok(settings) => panic!("expected an error, got {settings:#?}"),
            Err(error) => error,
        }
    }
}

fn vars(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_toml(toml: &str) -> Result<Settings, ConfigError> {
    Fixture::new(toml).load(&[])
}

fn assert_mentions(error: &ConfigError, parts: &[&str]) {
    let text = error.to_string();
    for part in parts {
        assert!(text.contains(part), "{text:?} should mention {part:?}");
    }
}

/// The `key` and the line of an `Invalid` error.
fn invalid_key(error: &ConfigError) -> (&str, Option<usize>) {
    match error {
        ConfigError::Invalid { key, origin, .. } => (
            key.as_str(),
            match origin {
                ValueOrigin::File { line, .. } => *line,
                _ => None,
            },
        ),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// --- defaults and layering -------------------------------------------------

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let fixture = Fixture::new("");
    let settings = fixture.load(&[]).expect("loads");
    assert_eq!(settings.source.as_deref(), Some(fixture.path.as_path()));
    assert_eq!(settings.api.base_url.as_str(), "https://ws.api.video/");
    assert!(settings.api.token.is_none());
    assert_eq!(settings.api.chunk_size, 50 * MIB);
    assert_eq!(settings.journal.path, PathBuf::from("./ingestd.db"));
    assert_eq!(settings.upload.concurrency, 2);
    assert_eq!(
        settings.upload.bandwidth_limit,
        config::BandwidthLimit::bytes(0)
    );
    assert_eq!(settings.upload.in_doubt, InDoubt::Resend);
    assert!(settings.upload.sha256);
    assert!(settings.watches.is_empty());
}

#[test]
fn sha256_can_be_turned_off_in_the_file_or_the_environment() {
    let settings = load_toml("[upload]\nsha256 = false\n").expect("loads");
    assert!(!settings.upload.sha256);
    assert!(settings.render().contains("sha256 = false"));
    let fixture = Fixture::new("[upload]\nsha256 = true\n");
    let settings = fixture
        .load(&[("INGESTD_UPLOAD__SHA256", "false")])
        .expect("loads");
    assert!(!settings.upload.sha256);
    let error = load_toml("[upload]\nsha256 = \"maybe\"\n").expect_err("refused");
    assert_mentions(&error, &["upload.sha256", "line 2"]);
}

#[test]
fn duplicates_skip_is_refused_without_the_sha256_saying_what_to_change() {
    let toml = "[upload]\nsha256 = false\n[[watch]]\npath = \"/srv/a\"\n\
                [[watch]]\npath = \"/srv/b\"\nduplicates = \"skip\"\n";
    let error = load_toml(toml).expect_err("refused");
    assert_eq!(invalid_key(&error), ("watch[1].duplicates", Some(7)));
    assert_mentions(
        &error,
        &[
            "/srv/b",
            "upload.sha256 = false",
            "line 2",
            "set upload.sha256 = true",
            "duplicates = \"upload\"",
        ],
    );
    // From the environment too, and named as such.
    let fixture = Fixture::new("[[watch]]\npath = \"/srv/a\"\nduplicates = \"skip\"\n");
    let error = fixture.error(&[("INGESTD_UPLOAD__SHA256", "false")]);
    assert_mentions(&error, &["watch[0].duplicates", "INGESTD_UPLOAD__SHA256"]);
    // With the hash, or without "skip", it loads.
    assert!(fixture.load(&[]).is_ok());
    assert!(load_toml("[upload]\nsha256 = false\n[[watch]]\npath = \"/srv/a\"\n").is_ok());
}

#[test]
fn in_doubt_is_resend_or_fail() {
    let settings = load_toml("[upload]\nin_doubt = \"fail\"\n").expect("loads");
    assert_eq!(settings.upload.in_doubt, InDoubt::Fail);
    let error = load_toml("[upload]\nin_doubt = \"maybe\"\n").expect_err("refused");
    assert_mentions(
        &error,
        &["upload.in_doubt", "line 2", "\"maybe\"", "resend, fail"],
    );
}

#[test]
fn a_watch_gets_the_documented_defaults() {
    let settings = load_toml("[[watch]]\npath = \"/srv/capture\"\n").expect("loads");
    let watch = &settings.watches[0];
    assert_eq!(watch.path, PathBuf::from("/srv/capture"));
    assert!(watch.recursive);
    assert_eq!(watch.include, ["*.mp4", "*.mov", "*.mxf", "*.mkv"]);
    assert!(watch.exclude.is_empty());
    assert_eq!(watch.settle, Duration::from_secs(10));
    assert_eq!(watch.mode, WatchMode::Auto);
    assert_eq!(watch.poll_interval, Duration::from_secs(30));
    assert_eq!(watch.after_upload, AfterUpload::Keep);
    assert!(!watch.follow_symlinks);
    assert_eq!(watch, &config::WatchSettings::new("/srv/capture"));
}

#[test]
fn the_journal_defaults_to_the_systemd_state_directory() {
    let settings = Fixture::new("")
        .load(&[("STATE_DIRECTORY", "/var/lib/ingestd:/var/lib/other")])
        .expect("loads");
    assert_eq!(
        settings.journal.path,
        PathBuf::from("/var/lib/ingestd/journal.db")
    );
    assert_eq!(
        config::journal_default(vars(&[("STATE_DIRECTORY", "/state")])),
        PathBuf::from("/state/journal.db")
    );
    assert_eq!(
        config::journal_default(vars(&[])),
        PathBuf::from("./ingestd.db")
    );
}

#[test]
fn the_file_overrides_defaults() {
    let settings = load_toml(
        r#"
[api]
base_url = "https://sandbox.api.video"
chunk_size = "10 MiB"
[journal]
path = "/data/journal.db"
[upload]
concurrency = 8
bandwidth_limit = "1.5 GiB"
[[watch]]
path = "/srv/a"
recursive = false
include = ["*"]
exclude = ["*.mov", "**/proxy/**"]
settle = 15
mode = "poll"
poll_interval = "1m 30s"
after_upload = "delete"
follow_symlinks = true
"#,
    )
    .expect("loads");
    assert_eq!(settings.api.base_url.as_str(), "https://sandbox.api.video/");
    assert_eq!(settings.api.chunk_size, 10 * MIB);
    assert_eq!(settings.journal.path, PathBuf::from("/data/journal.db"));
    assert_eq!(settings.upload.concurrency, 8);
    assert_eq!(
        settings.upload.bandwidth_limit,
        config::BandwidthLimit::bytes(1536 * MIB)
    );
    let watch = &settings.watches[0];
    assert!(!watch.recursive);
    assert_eq!(watch.include, ["*"]);
    assert_eq!(watch.exclude, ["*.mov", "**/proxy/**"]);
    assert_eq!(watch.settle, Duration::from_secs(15));
    assert_eq!(watch.mode, WatchMode::Poll);
    assert_eq!(watch.poll_interval, Duration::from_secs(90));
    assert_eq!(watch.after_upload, AfterUpload::Delete);
    assert!(watch.follow_symlinks);
}

#[test]
fn the_environment_overrides_the_file_with_double_underscore_nesting() {
    let fixture = Fixture::new(
        "[api]\nchunk_size = \"10MiB\"\n[upload]\nconcurrency = 3\nbandwidth_limit = \"1MiB\"\n",
    );
    let settings = fixture
        .load(&[
            ("INGESTD_API__CHUNK_SIZE", "8MiB"),
            ("INGESTD_UPLOAD__CONCURRENCY", "4"),
            ("INGESTD_UPLOAD__BANDWIDTH_LIMIT", "20MiB"),
            ("INGESTD_API__BASE_URL", "http://127.0.0.1:8080/"),
            ("INGESTD_JOURNAL__PATH", "/tmp/j.db"),
            // Not config keys: the config path and another command's variable.
            ("INGESTD_CONFIG", "/does/not/matter/with/an/explicit/path"),
            ("INGESTD_API_KEY", "not-a-config-key"),
        ])
        .expect("loads");
    assert_eq!(settings.api.chunk_size, 8 * MIB);
    assert_eq!(settings.upload.concurrency, 4);
    assert_eq!(
        settings.upload.bandwidth_limit,
        config::BandwidthLimit::bytes(20 * MIB)
    );
    assert_eq!(settings.api.base_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(settings.journal.path, PathBuf::from("/tmp/j.db"));
}

#[test]
fn sizes_from_the_environment_may_be_plain_integers() {
    let settings = Fixture::new("")
        .load(&[
            ("INGESTD_API__CHUNK_SIZE", "6291456"),
            ("INGESTD_UPLOAD__BANDWIDTH_LIMIT", "1.5 GiB"),
        ])
        .expect("loads");
    assert_eq!(settings.api.chunk_size, 6 * MIB);
    assert_eq!(
        settings.upload.bandwidth_limit,
        config::BandwidthLimit::bytes(1536 * MIB)
    );
}

#[test]
fn ingestd_config_names_the_file_when_no_path_is_given() {
    let fixture = Fixture::new("[upload]\nconcurrency = 6\n");
    let path = fixture.path.to_string_lossy().to_string();
    let settings = load_from(None, vars(&[("INGESTD_CONFIG", &path)])).expect("loads");
    assert_eq!(settings.upload.concurrency, 6);
    assert_eq!(settings.source, Some(fixture.path.clone()));
}

#[test]
fn an_explicit_config_path_must_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.toml");
    let error = load_from(Some(&missing), vars(&[])).expect_err("missing file");
    assert!(matches!(&error, ConfigError::ReadFile { path, .. } if path == &missing));
    assert_mentions(&error, &[&missing.display().to_string(), "--config"]);
}

// --- unknown keys and syntax ---------------------------------------------

#[test]
fn an_unknown_key_in_the_file_names_the_key_the_file_and_the_line() {
    let fixture =
        Fixture::new("[api]\nbase_url = \"https://ws.api.video\"\nchunksize = \"8MiB\"\n");
    let error = fixture.error(&[]);
    match &error {
        ConfigError::UnknownKey {
            key,
            origin: ValueOrigin::File { path, line },
            expected,
        } => {
            assert_eq!(key, "api.chunksize");
            assert_eq!(path, &fixture.path);
            assert_eq!(*line, Some(3));
            assert!(expected.iter().any(|k| k == "chunk_size"), "{expected:?}");
        }
        other => panic!("expected UnknownKey from the file, got {other:?}"),
    }
    assert_mentions(
        &error,
        &[
            "api.chunksize",
            &fixture.path.display().to_string(),
            "line 3",
            "chunk_size",
        ],
    );
}

#[test]
fn unknown_keys_are_found_in_watches_and_at_the_top_level() {
    let error = load_toml("[[watch]]\npath = \"/a\"\n\n[[watch]]\npath = \"/b\"\nsetle = \"5s\"\n")
        .expect_err("typo");
    assert!(
        matches!(&error, ConfigError::UnknownKey { key, origin: ValueOrigin::File { line: Some(6), .. }, .. } if key == "watch[1].setle"),
        "{error:?}"
    );
    let error = load_toml("[uplod]\nconcurrency = 1\n").expect_err("typo");
    assert!(
        matches!(&error, ConfigError::UnknownKey { key, .. } if key == "uplod"),
        "{error:?}"
    );
}

#[test]
fn an_unknown_environment_key_names_the_variable() {
    let error = Fixture::new("").error(&[("INGESTD_API__CHUNKSIZE", "8MiB")]);
    assert!(
        matches!(&error, ConfigError::UnknownKey { key, origin: ValueOrigin::Env { var }, .. }
            if key == "api.chunksize" && var == "INGESTD_API__CHUNKSIZE"),
        "{error:?}"
    );
    assert_mentions(&error, &["INGESTD_API__CHUNKSIZE", "chunk_size"]);

    let error = Fixture::new("").error(&[("INGESTD_UPLAOD__CONCURRENCY", "4")]);
    assert_mentions(&error, &["INGESTD_UPLAOD__CONCURRENCY", "uplaod"]);
}

#[test]
fn watch_entries_cannot_come_from_the_environment() {
    let error = Fixture::new("[[watch]]\npath = \"/a\"\n").error(&[("INGESTD_WATCH__PATH", "/b")]);
    assert!(
        matches!(&error, ConfigError::Env { var, .. } if var == "INGESTD_WATCH__PATH"),
        "{error:?}"
    );
    assert_mentions(&error, &["INGESTD_WATCH__PATH", "[[watch]]", "config file"]);
}

#[test]
fn a_single_watch_table_suggests_double_brackets() {
    let error = load_toml("[watch]\npath = \"/a\"\n").expect_err("not a list");
    assert_eq!(invalid_key(&error).0, "watch");
    assert_mentions(&error, &["[[watch]]"]);
}

#[test]
fn a_toml_syntax_error_gives_the_file_line_and_column() {
    let fixture = Fixture::new("[api]\nchunk_size = \"8MiB\"\nbase_url = \"https://x\n");
    let error = fixture.error(&[]);
    match &error {
        ConfigError::Syntax {
            path, line, column, ..
        } => {
            assert_eq!(path, &fixture.path);
            assert_eq!(*line, Some(3));
            assert!(column.is_some());
        }
        other => panic!("expected Syntax, got {other:?}"),
    }
    assert_mentions(
        &error,
        &[&fixture.path.display().to_string(), "line 3", "column"],
    );
}

// --- values ---------------------------------------------------------------

#[test]
fn a_bad_size_names_the_key_the_value_and_the_line() {
    let fixture = Fixture::new("[api]\n\nchunk_size = \"50 MeB\"\n");
    let error = fixture.error(&[]);
    assert_eq!(invalid_key(&error), ("api.chunk_size", Some(3)));
    assert_mentions(
        &error,
        &[
            "api.chunk_size",
            "\"50 MeB\"",
            &fixture.path.display().to_string(),
            "50MiB",
        ],
    );

    let error = Fixture::new("").error(&[("INGESTD_UPLOAD__BANDWIDTH_LIMIT", "fast")]);
    assert_mentions(
        &error,
        &[
            "upload.bandwidth_limit",
            "\"fast\"",
            "INGESTD_UPLOAD__BANDWIDTH_LIMIT",
        ],
    );

    let error = load_toml("[upload]\nbandwidth_limit = -1\n").expect_err("negative");
    assert_mentions(&error, &["upload.bandwidth_limit", "-1", "negative"]);
}

#[test]
fn chunk_size_must_be_between_5_and_128_mib() {
    for ok in ["5MiB", "128MiB", "50 MiB", "5242880"] {
        let settings = Fixture::new("")
            .load(&[("INGESTD_API__CHUNK_SIZE", ok)])
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&settings.api.chunk_size));
    }
    for (bad, shown) in [
        ("4MiB", "4 MiB"),
        ("5242879", "5242879"),
        ("129MiB", "129 MiB"),
        ("1GiB", "1 GiB"),
    ] {
        let error = Fixture::new("").error(&[("INGESTD_API__CHUNK_SIZE", bad)]);
        assert_eq!(invalid_key(&error).0, "api.chunk_size", "{bad}");
        assert_mentions(
            &error,
            &[shown, "5 MiB", "128 MiB", "INGESTD_API__CHUNK_SIZE"],
        );
    }
    let error = load_toml("[api]\nchunk_size = 1024\n").expect_err("too small");
    assert_eq!(invalid_key(&error), ("api.chunk_size", Some(2)));
    assert_eq!(DEFAULT_CHUNK_SIZE, 50 * MIB);
}

#[test]
fn concurrency_must_be_between_1_and_32() {
    for bad in ["0", "33", "-1", "many"] {
        let error = Fixture::new("").error(&[("INGESTD_UPLOAD__CONCURRENCY", bad)]);
        assert_eq!(invalid_key(&error).0, "upload.concurrency", "{bad}");
        assert_mentions(&error, &[bad]);
    }
    let settings = Fixture::new("")
        .load(&[("INGESTD_UPLOAD__CONCURRENCY", "32")])
        .expect("32");
    assert_eq!(settings.upload.concurrency, 32);
}

#[test]
fn bad_durations_are_refused() {
    let error = load_toml("[[watch]]\npath = \"/a\"\nsettle = \"10 parsecs\"\n").expect_err("bad");
    assert_eq!(invalid_key(&error), ("watch[0].settle", Some(3)));
    assert_mentions(&error, &["\"10 parsecs\"", "10s"]);

    let error = load_toml("[[watch]]\npath = \"/a\"\nsettle = \"0s\"\n").expect_err("zero");
    assert_eq!(invalid_key(&error).0, "watch[0].settle");

    let error =
        load_toml("[[watch]]\npath = \"/a\"\npoll_interval = \"500ms\"\n").expect_err("short");
    assert_eq!(invalid_key(&error), ("watch[0].poll_interval", Some(3)));
    assert_mentions(&error, &["500ms", "1s"]);

    let settings =
        load_toml("[[watch]]\npath = \"/a\"\npoll_interval = \"1s\"\nsettle = \"1h 30m\"\n")
            .expect("boundaries");
    assert_eq!(settings.watches[0].poll_interval, Duration::from_secs(1));
    assert_eq!(settings.watches[0].settle, Duration::from_secs(5400));
}

#[test]
fn enumerations_list_their_values() {
    let error = load_toml("[[watch]]\npath = \"/a\"\nmode = \"inotify\"\n").expect_err("bad mode");
    assert_eq!(invalid_key(&error).0, "watch[0].mode");
    assert_mentions(&error, &["inotify", "auto", "events", "poll"]);
    let error =
        load_toml("[[watch]]\npath = \"/a\"\nafter_upload = \"archive\"\n").expect_err("bad");
    assert_mentions(
        &error,
        &["watch[0].after_upload", "archive", "keep", "delete", "move"],
    );
}

#[test]
fn base_url_must_be_plain_http_or_https() {
    for (bad, mention) in [
        ("not a url", "not a URL"),
        ("ftp://ws.api.video", "http(s)"),
        ("https://ws.api.video/?token=x", "query"),
        ("https://ws.api.video/#x", "fragment"),
    ] {
        let error = Fixture::new("").error(&[("INGESTD_API__BASE_URL", bad)]);
        assert_eq!(invalid_key(&error).0, "api.base_url", "{bad}");
        assert_mentions(&error, &[bad, mention, "INGESTD_API__BASE_URL"]);
    }
    let error =
        Fixture::new("").error(&[("INGESTD_API__BASE_URL", "https://user:hunter2@ws.api.video")]);
    assert_eq!(invalid_key(&error).0, "api.base_url");
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[test]
fn base_url_loses_its_trailing_slash() {
    let settings = Fixture::new("")
        .load(&[("INGESTD_API__BASE_URL", "http://127.0.0.1:9000/prefix/")])
        .expect("loads");
    assert_eq!(
        settings.api.base_url.as_str(),
        "http://127.0.0.1:9000/prefix"
    );
    assert_eq!(
        settings.api.upload_url().as_str(),
        "http://127.0.0.1:9000/prefix/upload"
    );
    let settings = load_toml("").expect("defaults");
    assert_eq!(
        settings.api.upload_url().as_str(),
        "https://ws.api.video/upload"
    );
}

#[test]
fn a_bad_glob_names_the_watch_and_the_pattern() {
    let fixture =
        Fixture::new("[[watch]]\npath = \"/srv/capture\"\nexclude = [\"*.mov\", \"*.{mp4\"]\n");
    let error = fixture.error(&[]);
    assert_eq!(invalid_key(&error), ("watch[0].exclude", Some(3)));
    assert_mentions(&error, &["\"*.{mp4\"", "/srv/capture"]);

    let error = load_toml("[[watch]]\npath = \"/a\"\ninclude = []\n").expect_err("empty include");
    assert_eq!(invalid_key(&error).0, "watch[0].include");
}

#[test]
fn watch_paths_must_be_given_and_not_empty() {
    let error = load_toml("[[watch]]\nrecursive = true\n").expect_err("no path");
    assert_mentions(&error, &["watch[0]", "path"]);
    let error = load_toml("[[watch]]\npath = \"\"\n").expect_err("empty path");
    assert_eq!(invalid_key(&error).0, "watch[0].path");
}

#[test]
fn overlapping_watch_paths_are_refused() {
    for (a, b) in [
        ("/srv/capture", "/srv/capture"),
        ("/srv/capture", "/srv/capture/"),
        ("/srv/capture", "/srv/capture/cam1"),
        ("/srv/capture/cam1", "/srv/./capture"),
    ] {
        let toml = format!("[[watch]]\npath = \"{a}\"\n\n[[watch]]\npath = \"{b}\"\n");
        let error = load_toml(&toml).expect_err("overlap");
        assert_eq!(invalid_key(&error), ("watch[1].path", Some(5)), "{a} / {b}");
        assert_mentions(&error, &[a, b, "watch[0].path", "overlap"]);
    }
    let settings =
        load_toml("[[watch]]\npath = \"/srv/capture\"\n[[watch]]\npath = \"/srv/capture2\"\n")
            .expect("siblings are fine");
    assert_eq!(settings.watches.len(), 2);
}

#[test]
fn move_needs_move_to_and_only_move_takes_it() {
    let error =
        load_toml("[[watch]]\npath = \"/a\"\nafter_upload = \"move\"\n").expect_err("no move_to");
    assert_eq!(invalid_key(&error), ("watch[0].after_upload", Some(3)));
    assert_mentions(&error, &["move_to"]);

    for kind in ["keep", "delete"] {
        let toml =
            format!("[[watch]]\npath = \"/a\"\nafter_upload = \"{kind}\"\nmove_to = \"/done\"\n");
        let error = load_toml(&toml).expect_err("move_to without move");
        assert_eq!(invalid_key(&error), ("watch[0].move_to", Some(4)), "{kind}");
        assert_mentions(&error, &["/done", kind]);
    }
    let error =
        load_toml("[[watch]]\npath = \"/a\"\nmove_to = \"/done\"\n").expect_err("default keep");
    assert_eq!(invalid_key(&error).0, "watch[0].move_to");

    let error = load_toml("[[watch]]\npath = \"/a\"\nafter_upload = \"move\"\nmove_to = \"\"\n")
        .expect_err("empty move_to");
    assert_eq!(invalid_key(&error).0, "watch[0].move_to");

    let settings =
        load_toml("[[watch]]\npath = \"/a\"\nafter_upload = \"move\"\nmove_to = \"/a/done\"\n")
            .expect("loads");
    assert_eq!(
        settings.watches[0].after_upload,
        AfterUpload::Move(PathBuf::from("/a/done"))
    );
}

// --- the token ------------------------------------------------------------

const SECRET: &str = "to1SECRETsecret4242";

fn assert_secret_absent(text: &str) {
    assert!(!text.contains(SECRET), "the token leaked: {text}");
    assert!(
        !text.contains("SECRETsecret"),
        "part of the token leaked: {text}"
    );
}

fn assert_error_hides_secret(error: &ConfigError) {
    assert_secret_absent(&error.to_string());
    assert_secret_absent(&format!("{error:?}"));
}

#[test]
fn the_token_comes_inline_from_the_file_or_the_environment() {
    let settings = load_toml(&format!("[api]\ntoken = \"{SECRET}\"\n")).expect("loads");
    let (token, source) = settings.api.token.clone().expect("a token");
    assert_eq!(token.expose(), SECRET);
    assert_eq!(source, TokenSource::Inline);
    assert_eq!(settings.require_token().expect("token").expose(), SECRET);

    let settings = Fixture::new("")
        .load(&[("INGESTD_API__TOKEN", "007")])
        .expect("loads");
    assert_eq!(
        settings.require_token().expect("token").expose(),
        "007",
        "kept verbatim"
    );
}

#[test]
fn the_token_file_is_read_once_and_trimmed() {
    let fixture = Fixture::new("");
    let token_path = fixture.file("upload-token", &format!("  {SECRET}\n\n"));
    let fixture_toml = format!(
        "[api]\ntoken_file = {:?}\n",
        token_path.display().to_string()
    );
    std::fs::write(&fixture.path, fixture_toml).expect("write");
    let settings = fixture.load(&[]).expect("loads");
    let (token, source) = settings.api.token.clone().expect("a token");
    assert_eq!(token.expose(), SECRET);
    assert_eq!(source, TokenSource::File(token_path.clone()));

    // Read at load, not later.
    std::fs::remove_file(&token_path).expect("remove");
    assert_eq!(
        settings.require_token().expect("still there").expose(),
        SECRET
    );
}

#[test]
fn a_missing_or_unreadable_token_file_is_an_error_with_the_os_error() {
    let fixture = Fixture::new("");
    let missing = fixture.dir.path().join("no-such-token");
    let error = fixture.error(&[("INGESTD_API__TOKEN_FILE", &missing.display().to_string())]);
    match &error {
        ConfigError::TokenFile {
            path, error: io, ..
        } => {
            assert_eq!(path, &missing);
            assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected TokenFile, got {other:?}"),
    }
    let os_error = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
    assert!(!os_error.is_empty());
    assert_mentions(
        &error,
        &[
            &missing.display().to_string(),
            "INGESTD_API__TOKEN_FILE",
            "os error",
        ],
    );

    // A directory cannot be read as a file, whoever runs the test (root included).
    let dir = fixture.dir.path().join("a-directory");
    std::fs::create_dir(&dir).expect("mkdir");
    let error = fixture.error(&[("INGESTD_API__TOKEN_FILE", &dir.display().to_string())]);
    assert!(
        matches!(&error, ConfigError::TokenFile { path, .. } if path == &dir),
        "{error:?}"
    );
    assert_mentions(&error, &[&dir.display().to_string(), "os error"]);
}

#[test]
fn token_and_token_file_together_are_an_error() {
    let fixture = Fixture::new(&format!("[api]\ntoken = \"{SECRET}\"\n"));
    let token_path = fixture.file("upload-token", SECRET);
    let error = fixture.error(&[("INGESTD_API__TOKEN_FILE", &token_path.display().to_string())]);
    assert!(
        matches!(error, ConfigError::TokenConflict { .. }),
        "{error:?}"
    );
    assert_mentions(
        &error,
        &[
            "api.token",
            "api.token_file",
            "INGESTD_API__TOKEN_FILE",
            "line 2",
        ],
    );
    assert_error_hides_secret(&error);
}

#[test]
fn the_systemd_credential_is_used_when_nothing_else_is_configured() {
    let fixture = Fixture::new("");
    let credentials = tempfile::tempdir().expect("tempdir");
    let credentials_dir = credentials.path().display().to_string();

    // No credential file: no token, and that is not an error.
    let settings = fixture
        .load(&[("CREDENTIALS_DIRECTORY", &credentials_dir)])
        .expect("loads");
    assert!(settings.api.token.is_none());

    let credential = credentials.path().join("upload-token");
    std::fs::write(&credential, format!("{SECRET}\n")).expect("write");
    let settings = fixture
        .load(&[("CREDENTIALS_DIRECTORY", &credentials_dir)])
        .expect("loads");
    let (token, source) = settings.api.token.clone().expect("a token");
    assert_eq!(token.expose(), SECRET);
    assert_eq!(source, TokenSource::Credentials(credential.clone()));

    // An explicit setting wins over the credential.
    let settings = fixture
        .load(&[
            ("CREDENTIALS_DIRECTORY", &credentials_dir),
            ("INGESTD_API__TOKEN", "to1other"),
        ])
        .expect("loads");
    assert_eq!(settings.api.token.expect("token").1, TokenSource::Inline);
}

#[test]
fn without_a_token_require_token_says_the_three_ways() {
    let settings = load_toml("").expect("loads without a token");
    let error = settings.require_token().expect_err("no token");
    assert!(matches!(error, ConfigError::MissingToken));
    assert_mentions(
        &error,
        &[
            "api.token_file",
            "api.token",
            "INGESTD_API__TOKEN",
            "LoadCredential=upload-token",
        ],
    );
}

#[test]
fn an_empty_or_spaced_token_is_refused_without_being_shown() {
    let fixture = Fixture::new("");
    let empty = fixture.file("empty-token", " \n");
    let error = fixture.error(&[("INGESTD_API__TOKEN_FILE", &empty.display().to_string())]);
    assert!(matches!(error, ConfigError::BadToken { .. }), "{error:?}");
    assert_mentions(&error, &["empty", &empty.display().to_string()]);

    let spaced = fixture.file("spaced-token", &format!("Token: {SECRET}\n"));
    let error = fixture.error(&[("INGESTD_API__TOKEN_FILE", &spaced.display().to_string())]);
    assert!(matches!(error, ConfigError::BadToken { .. }), "{error:?}");
    assert_error_hides_secret(&error);

    let error = fixture.error(&[("INGESTD_API__TOKEN", &format!("{SECRET} "))]);
    assert!(matches!(error, ConfigError::BadToken { .. }), "{error:?}");
    assert_mentions(&error, &["INGESTD_API__TOKEN", "whitespace"]);
    assert_error_hides_secret(&error);

    let error = fixture.error(&[("INGESTD_API__TOKEN", "")]);
    assert_mentions(&error, &["empty"]);
}

#[test]
fn the_token_never_appears_in_errors() {
    let fixture = Fixture::new("");
    // The wrong type, from the file and from the environment.
    for toml in [
        format!("[api]\ntoken = [\"{SECRET}\"]\n"),
        format!("[api]\ntoken = {{ value = \"{SECRET}\" }}\n"),
        format!("[api]\n[api.token]\nx = \"{SECRET}\"\n"),
    ] {
        let error = load_toml(&toml).expect_err("not a string");
        assert_eq!(invalid_key(&error).0, "api.token", "{toml}");
        assert_error_hides_secret(&error);
    }
    let error = fixture.error(&[("INGESTD_API__TOKEN__X", SECRET)]);
    assert_error_hides_secret(&error);

    // A syntax error on the token's line.
    for toml in [
        format!("[api]\ntoken = \"{SECRET}\n"),
        format!("[api]\ntoken = {SECRET}\n"),
        format!("[api]\ntoken = \"{SECRET}\" \"{SECRET}\"\n"),
        format!("[api]\ntoken = \"\\q{SECRET}\"\n"),
    ] {
        let error = load_toml(&toml).expect_err("syntax");
        assert!(
            matches!(error, ConfigError::Syntax { line: Some(2), .. }),
            "{error:?}"
        );
        assert_error_hides_secret(&error);
    }

    // Another key is wrong while the token is set.
    let error = fixture.error(&[
        ("INGESTD_API__TOKEN", SECRET),
        ("INGESTD_API__CHUNK_SIZE", "1"),
    ]);
    assert_error_hides_secret(&error);
}

#[test]
fn a_numeric_token_from_the_environment_is_not_a_type_error() {
    let numeric = "12345678901234567";
    let settings = Fixture::new("")
        .load(&[("INGESTD_API__TOKEN", numeric)])
        .expect("loads");
    assert_eq!(settings.require_token().expect("token").expose(), numeric);
    let rendered = settings.render();
    assert!(!rendered.contains(numeric), "{rendered}");
    assert!(!format!("{settings:?}").contains(numeric));

    // Unquoted in TOML it is an integer; still accepted, still hidden.
    let settings = load_toml(&format!("[api]\ntoken = {numeric}\n")).expect("loads");
    assert_eq!(settings.require_token().expect("token").expose(), numeric);
    let settings = load_toml("[api]\ntoken = true\n").expect("loads");
    assert_eq!(settings.require_token().expect("token").expose(), "true");
}

#[test]
fn the_token_never_appears_in_debug_or_render() {
    let fixture = Fixture::new("[[watch]]\npath = \"/srv/capture\"\n");
    let token_path = fixture.file("upload-token", SECRET);
    let credentials = tempfile::tempdir().expect("tempdir");
    std::fs::write(credentials.path().join("upload-token"), SECRET).expect("write");
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("INGESTD_API__TOKEN", SECRET)], "api.token"),
        (
            &[("INGESTD_API__TOKEN_FILE", &token_path.display().to_string())],
            &token_path.display().to_string(),
        ),
        (
            &[(
                "CREDENTIALS_DIRECTORY",
                &credentials.path().display().to_string(),
            )],
            "upload-token",
        ),
    ];
    for (env, origin) in cases {
        let settings = fixture.load(env).expect("loads");
        assert_eq!(settings.require_token().expect("token").expose(), SECRET);
        assert_secret_absent(&format!("{settings:?}"));
        assert_secret_absent(&format!("{settings:#?}"));
        assert_secret_absent(&format!("{}", settings.require_token().expect("token")));
        let rendered = settings.render();
        assert_secret_absent(&rendered);
        assert!(rendered.contains("<redacted>"), "{rendered}");
        assert!(rendered.contains(origin), "{rendered} should name {origin}");
    }
}

// --- the journal shared by several nodes (PostgreSQL) -----------------------

const PG_SECRET: &str = "pgSECRETpassw0rd";

fn assert_password_absent(text: &str) {
    assert!(!text.contains(PG_SECRET), "the password leaked: {text}");
    assert!(
        !text.contains("SECRETpass"),
        "part of the password leaked: {text}"
    );
}

fn assert_error_hides_password(error: &ConfigError) {
    assert_password_absent(&error.to_string());
    assert_password_absent(&format!("{error:?}"));
}

fn assert_settings_hide_password(settings: &Settings) {
    assert_password_absent(&format!("{settings:?}"));
    assert_password_absent(&format!("{settings:#?}"));
    assert_password_absent(&settings.render());
}

fn pg(settings: &Settings) -> &config::PgJournalSettings {
    settings
        .journal
        .postgres
        .as_ref()
        .expect("a shared journal")
}

#[test]
fn a_shared_journal_is_configured_by_url_and_rendered_without_its_password() {
    let fixture = Fixture::new("");
    let password_file = fixture.file("journal-password", &format!("{PG_SECRET}\n"));
    std::fs::write(
        &fixture.path,
        format!(
            "[journal]\nurl = \"postgresql://ingestd@db.studio.lan/ingestd\"\n\
             password_file = {:?}\nnode = \"capture-01\"\nlease = \"45s\"\nheartbeat = \"15s\"\n",
            password_file.display().to_string()
        ),
    )
    .expect("write");
    let settings = fixture
        .load(&[("STATE_DIRECTORY", "/var/lib/ingestd")])
        .expect("loads");
    let journal = pg(&settings);
    assert_eq!(journal.url, "postgresql://ingestd@db.studio.lan/ingestd");
    assert_eq!(
        journal.password.as_ref().expect("a password").expose(),
        PG_SECRET,
        "one trailing newline trimmed"
    );
    assert_eq!(
        journal.password_source,
        format!("from {}", password_file.display())
    );
    assert_eq!(journal.node, "capture-01");
    assert_eq!(journal.lease, Duration::from_secs(45));
    assert_eq!(journal.heartbeat, Duration::from_secs(15));
    // The SQLite path keeps its default, unused.
    assert_eq!(
        settings.journal.path,
        PathBuf::from("/var/lib/ingestd/journal.db")
    );

    assert_settings_hide_password(&settings);
    let rendered = settings.render();
    for expected in [
        "url = \"postgresql://ingestd@db.studio.lan/ingestd\"",
        &format!("password_file = {:?}", password_file.display().to_string()),
        "# password: <redacted>, from ",
        "node = \"capture-01\"",
        "lease = \"45s\"",
        "heartbeat = \"15s\"",
    ] {
        assert!(
            rendered.contains(expected),
            "{rendered}\nshould contain {expected}"
        );
    }
    assert!(!rendered.contains("journal.db\""), "{rendered}");
    // It loads back to the same.
    let again = Fixture::new(&rendered)
        .load(&[])
        .expect("render loads back");
    assert_eq!(again.journal.postgres, settings.journal.postgres);
}

#[test]
fn without_a_url_the_journal_renders_as_before() {
    let settings = load_toml("[journal]\npath = \"/data/journal.db\"\n").expect("loads");
    assert_eq!(settings.journal.postgres, None);
    let rendered = settings.render();
    assert!(
        rendered.contains("\n[journal]\npath = \"/data/journal.db\"\n\n[upload]"),
        "{rendered}"
    );
}

#[test]
fn a_password_in_the_url_counts_and_is_redacted() {
    let url =
        format!("postgresql://ingestd:{PG_SECRET}@db.studio.lan:5433/ingestd?sslmode=require");
    let settings =
        load_toml(&format!("[journal]\nurl = \"{url}\"\nnode = \"n1\"\n")).expect("loads");
    let journal = pg(&settings);
    assert_eq!(journal.url, url, "kept as configured");
    assert_eq!(
        journal.password.as_ref().expect("password").expose(),
        PG_SECRET
    );
    assert_eq!(journal.password_source, "in the URL");
    assert_eq!(
        journal.redacted_url(),
        "postgresql://ingestd:***@db.studio.lan:5433/ingestd?sslmode=require"
    );
    assert_settings_hide_password(&settings);
    assert!(settings
        .render()
        .contains("url = \"postgresql://ingestd:***@db.studio.lan:5433/ingestd?sslmode=require\""));
    assert!(settings
        .render()
        .contains("# password: <redacted>, in the URL"));

    // As a parameter too.
    let settings = Fixture::new("")
        .load(&[
            (
                "INGESTD_JOURNAL__URL",
                &format!("postgres://db/ingestd?user=ingestd&password={PG_SECRET}"),
            ),
            ("INGESTD_JOURNAL__NODE", "n1"),
        ])
        .expect("loads");
    assert_eq!(pg(&settings).password_source, "in the URL");
    assert_settings_hide_password(&settings);

    // And a password file besides is one too many.
    let fixture = Fixture::new(&format!("[journal]\nurl = \"{url}\"\nnode = \"n1\"\n"));
    let file = fixture.file("journal-password", "other");
    let error = fixture.error(&[(
        "INGESTD_JOURNAL__PASSWORD_FILE",
        &file.display().to_string(),
    )]);
    assert_eq!(invalid_key(&error).0, "journal.password_file");
    assert_mentions(
        &error,
        &["INGESTD_JOURNAL__PASSWORD_FILE", "journal.url", "line 2"],
    );
    assert_error_hides_password(&error);
}

#[test]
fn journal_path_and_url_together_are_an_error() {
    let url = format!("postgresql://ingestd:{PG_SECRET}@db/ingestd");
    let error = load_toml(&format!(
        "[journal]\npath = \"/data/journal.db\"\nurl = \"{url}\"\n"
    ))
    .expect_err("refused");
    assert!(
        matches!(error, ConfigError::JournalConflict { .. }),
        "{error:?}"
    );
    assert_mentions(
        &error,
        &[
            "journal.path and journal.url are both set",
            "line 2",
            "line 3",
            "use one: path for a journal on this machine, url for one shared by several nodes",
        ],
    );
    assert_error_hides_password(&error);

    // One from the environment: named as such.
    let fixture = Fixture::new("[journal]\nurl = \"postgresql://ingestd@db/ingestd\"\n");
    let error = fixture.error(&[("INGESTD_JOURNAL__PATH", "/data/journal.db")]);
    assert_mentions(&error, &["INGESTD_JOURNAL__PATH", "line 2"]);
}

#[test]
fn a_bad_journal_url_is_refused_without_its_password() {
    let fixture = Fixture::new("[journal]\nnode = \"n1\"\n");
    for (url, says) in [
        ("", "empty"),
        ("mysql://ingestd@db/ingestd", "not a PostgreSQL URL"),
        ("db.studio.lan/ingestd", "not a PostgreSQL URL"),
        (
            "postgresql://ingestd@db/ingestd?nonsense=1",
            "unknown option `nonsense`",
        ),
        ("postgresql://ingestd@db/ingestd?sslmode=maybe", "sslmode"),
        ("postgresql://ingestd@db:port/ingestd", "port"),
        ("postgresql:///ingestd", "names no host"),
        ("postgresql://ingestd@x@db/ingestd", "more than one '@'"),
    ] {
        let error = fixture.error(&[("INGESTD_JOURNAL__URL", url)]);
        assert_eq!(invalid_key(&error).0, "journal.url", "{url}");
        assert_mentions(&error, &[says, "INGESTD_JOURNAL__URL", "postgresql://"]);
    }
    for url in [
        format!("mysql://ingestd:{PG_SECRET}@db/ingestd"),
        format!("postgresql://ingestd:{PG_SECRET}@db/ingestd?nonsense=1"),
        format!("postgresql://ingestd:{PG_SECRET}@db:port/ingestd"),
        format!("postgresql://ingestd:{PG_SECRET}@/ingestd"),
        format!("postgresql://ingestd:pg@{PG_SECRET}@db/ingestd"),
        format!("postgresql://db/ingestd?password={PG_SECRET}&sslmode=maybe"),
        format!("host=db password={PG_SECRET}"),
    ] {
        let error = fixture.error(&[("INGESTD_JOURNAL__URL", &url)]);
        assert_eq!(invalid_key(&error).0, "journal.url", "{url}");
        assert_error_hides_password(&error);
    }
    // The wrong type never quotes it either.
    for toml in [
        format!("[journal]\nurl = [\"postgresql://u:{PG_SECRET}@db/x\"]\n"),
        format!("[journal]\n[journal.url]\nx = \"postgresql://u:{PG_SECRET}@db/x\"\n"),
    ] {
        let error = load_toml(&toml).expect_err("not a string");
        assert_eq!(invalid_key(&error).0, "journal.url", "{toml}");
        assert_error_hides_password(&error);
    }
}

#[test]
fn a_missing_unreadable_or_empty_password_file_is_an_error() {
    let fixture =
        Fixture::new("[journal]\nurl = \"postgresql://ingestd@db/ingestd\"\nnode = \"n1\"\n");
    let missing = fixture.dir.path().join("no-such-password");
    let error = fixture.error(&[(
        "INGESTD_JOURNAL__PASSWORD_FILE",
        &missing.display().to_string(),
    )]);
    match &error {
        ConfigError::PasswordFile {
            path, error: io, ..
        } => {
            assert_eq!(path, &missing);
            assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected PasswordFile, got {other:?}"),
    }
    assert_mentions(
        &error,
        &[
            &missing.display().to_string(),
            "INGESTD_JOURNAL__PASSWORD_FILE",
            "os error",
            "create it",
        ],
    );

    let dir = fixture.dir.path().join("a-directory");
    std::fs::create_dir(&dir).expect("mkdir");
    let error = fixture.error(&[("INGESTD_JOURNAL__PASSWORD_FILE", &dir.display().to_string())]);
    assert!(
        matches!(&error, ConfigError::PasswordFile { path, .. } if path == &dir),
        "{error:?}"
    );

    for (name, contents) in [("empty", ""), ("newline", "\n"), ("crlf", "\r\n")] {
        let empty = fixture.file(name, contents);
        let error = fixture.error(&[(
            "INGESTD_JOURNAL__PASSWORD_FILE",
            &empty.display().to_string(),
        )]);
        assert!(
            matches!(error, ConfigError::BadPassword { .. }),
            "{error:?}"
        );
        assert_mentions(&error, &["empty", &empty.display().to_string()]);
    }
    let two_lines = fixture.file("two-lines", &format!("{PG_SECRET}\n{PG_SECRET}\n"));
    let error = fixture.error(&[(
        "INGESTD_JOURNAL__PASSWORD_FILE",
        &two_lines.display().to_string(),
    )]);
    assert_mentions(&error, &["more than one line"]);
    assert_error_hides_password(&error);

    // Spaces are part of a password; only one line ending is trimmed.
    let spaced = fixture.file("spaced", &format!(" {PG_SECRET} \r\n"));
    let settings = fixture
        .load(&[(
            "INGESTD_JOURNAL__PASSWORD_FILE",
            &spaced.display().to_string(),
        )])
        .expect("loads");
    assert_eq!(
        pg(&settings).password.as_ref().expect("password").expose(),
        format!(" {PG_SECRET} ")
    );
    assert_settings_hide_password(&settings);
}

#[test]
fn the_journal_password_can_be_a_systemd_credential() {
    let fixture =
        Fixture::new("[journal]\nurl = \"postgresql://ingestd@db/ingestd\"\nnode = \"n1\"\n");
    let credentials = tempfile::tempdir().expect("tempdir");
    let credentials_dir = credentials.path().display().to_string();
    let env = [("CREDENTIALS_DIRECTORY", credentials_dir.as_str())];

    // No credential file: no password, and that is not an error.
    let settings = fixture.load(&env).expect("loads");
    assert_eq!(pg(&settings).password, None);
    assert_eq!(pg(&settings).password_source, "none");
    assert!(settings.render().contains("# password: none"));

    std::fs::write(
        credentials.path().join("journal-password"),
        format!("{PG_SECRET}\n"),
    )
    .expect("write");
    let settings = fixture.load(&env).expect("loads");
    let journal = pg(&settings);
    assert_eq!(
        journal.password.as_ref().expect("password").expose(),
        PG_SECRET
    );
    assert_eq!(
        journal.password_source,
        "systemd credential journal-password, from $CREDENTIALS_DIRECTORY"
    );
    assert_settings_hide_password(&settings);
    assert!(settings
        .render()
        .contains("# password: <redacted>, systemd credential journal-password"));

    // An explicit password file wins over the credential.
    let file = fixture.file("journal-password", "other");
    let settings = fixture
        .load(&[
            env[0],
            (
                "INGESTD_JOURNAL__PASSWORD_FILE",
                &file.display().to_string(),
            ),
        ])
        .expect("loads");
    assert_eq!(
        pg(&settings).password.as_ref().expect("pw").expose(),
        "other"
    );

    // Without a url the credential is not read, and is no error.
    let settings = Fixture::new("").load(&env).expect("loads");
    assert_eq!(settings.journal.postgres, None);
}

#[test]
fn the_lease_must_outlast_three_heartbeats() {
    let url = "[journal]\nurl = \"postgresql://ingestd@db/ingestd\"\nnode = \"n1\"\n";
    // Defaults: 30s, and a third of the lease.
    let settings = load_toml(url).expect("loads");
    assert_eq!(pg(&settings).lease, Duration::from_secs(30));
    assert_eq!(pg(&settings).heartbeat, Duration::from_secs(10));
    let settings = load_toml(&format!("{url}lease = \"1m\"\n")).expect("loads");
    assert_eq!(pg(&settings).heartbeat, Duration::from_secs(20));
    let settings = load_toml(&format!("{url}lease = \"10s\"\n")).expect("loads");
    assert_eq!(pg(&settings).heartbeat, Duration::from_millis(3333));
    assert!(settings.render().contains("heartbeat = \"3s 333ms\""));
    let settings =
        load_toml(&format!("{url}lease = \"30s\"\nheartbeat = \"10s\"\n")).expect("exactly 3");
    assert_eq!(pg(&settings).heartbeat, Duration::from_secs(10));

    let error =
        load_toml(&format!("{url}lease = \"30s\"\nheartbeat = \"11s\"\n")).expect_err("refused");
    assert_eq!(invalid_key(&error), ("journal.heartbeat", Some(5)));
    assert_mentions(
        &error,
        &[
            "journal.lease (30s in",
            "line 4) must be at least 3 × journal.heartbeat (11s in",
            "a node renews its leases every heartbeat, and a lease must survive two missed renewals",
            "at most \"10s\"",
            "at least \"33s\"",
        ],
    );
    // Against the default lease, from the environment.
    let error = Fixture::new(url).error(&[("INGESTD_JOURNAL__HEARTBEAT", "20s")]);
    assert_mentions(
        &error,
        &[
            "journal.lease (30s (built-in default))",
            "INGESTD_JOURNAL__HEARTBEAT",
        ],
    );
    let error = load_toml(&format!("{url}heartbeat = \"0s\"\n")).expect_err("refused");
    assert_mentions(&error, &["journal.heartbeat", "too short", "\"1s\""]);
    let error =
        load_toml(&format!("{url}heartbeat = \"10000000000000000000\"\n")).expect_err("refused");
    assert_eq!(invalid_key(&error).0, "journal.heartbeat");
}

#[test]
fn the_lease_is_between_3_seconds_and_an_hour() {
    let url = "[journal]\nurl = \"postgresql://ingestd@db/ingestd\"\nnode = \"n1\"\n";
    for ok in ["3s", "1h", "10m"] {
        let settings = load_toml(&format!("{url}lease = \"{ok}\"\n")).expect(ok);
        let journal = pg(&settings);
        assert!(journal.lease >= journal.heartbeat * 3, "{ok}");
    }
    for bad in ["2s", "2999ms", "1h 1s", "2h", "0"] {
        let error = load_toml(&format!("{url}lease = \"{bad}\"\n")).expect_err(bad);
        assert_eq!(invalid_key(&error), ("journal.lease", Some(4)), "{bad}");
        assert_mentions(&error, &["out of range", "between 3s and 1h"]);
    }
    let error = load_toml(&format!("{url}lease = \"soon\"\n")).expect_err("not a duration");
    assert_mentions(&error, &["journal.lease", "\"soon\""]);
}

#[test]
fn node_names_are_checked_and_default_to_the_host_name() {
    let fixture = Fixture::new("[journal]\nurl = \"postgresql://ingestd@db/ingestd\"\n");
    for bad in ["capture 01", "", "a/b", "café", &"n".repeat(64)] {
        let error = fixture.error(&[("INGESTD_JOURNAL__NODE", bad)]);
        assert_eq!(invalid_key(&error).0, "journal.node", "{bad:?}");
        assert_mentions(&error, &["INGESTD_JOURNAL__NODE", "1 to 63", "capture-01"]);
    }
    let error = load_toml("[journal]\nurl = \"postgresql://ingestd@db/ingestd\"\nnode = \"a b\"\n")
        .expect_err("refused");
    assert_eq!(invalid_key(&error), ("journal.node", Some(3)));
    // Leading zeros from the environment are kept: it is text.
    let settings = fixture
        .load(&[("INGESTD_JOURNAL__NODE", "0042")])
        .expect("loads");
    assert_eq!(pg(&settings).node, "0042");
    // The default is the host name (when it is a valid node name).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let host = host.trim_end();
    match fixture.load(&[]) {
        Ok(settings) => assert_eq!(pg(&settings).node, host),
        Err(error) => assert_mentions(
            &error,
            &["journal.node", "the host name", "set journal.node"],
        ),
    }
}

#[test]
fn the_journal_keys_are_taken_from_the_environment() {
    let fixture = Fixture::new("[journal]\nlease = \"1m\"\n");
    let settings = fixture
        .load(&[
            (
                "INGESTD_JOURNAL__URL",
                "postgresql://ingestd@db.studio.lan/ingestd",
            ),
            ("INGESTD_JOURNAL__NODE", "capture-02"),
            ("INGESTD_JOURNAL__LEASE", "90"),
            ("INGESTD_JOURNAL__HEARTBEAT", "20s"),
        ])
        .expect("loads");
    let journal = pg(&settings);
    assert_eq!(journal.url, "postgresql://ingestd@db.studio.lan/ingestd");
    assert_eq!(journal.node, "capture-02");
    assert_eq!(
        journal.lease,
        Duration::from_secs(90),
        "the environment wins"
    );
    assert_eq!(journal.heartbeat, Duration::from_secs(20));
}

#[test]
fn the_shared_journal_keys_need_a_url() {
    for (toml, key) in [
        (
            "password_file = \"/etc/ingestd/journal-password\"",
            "journal.password_file",
        ),
        ("node = \"capture-01\"", "journal.node"),
        ("lease = \"30s\"", "journal.lease"),
        ("heartbeat = \"10s\"", "journal.heartbeat"),
    ] {
        let error = load_toml(&format!("[journal]\n{toml}\n")).expect_err(toml);
        assert_eq!(invalid_key(&error), (key, Some(2)), "{toml}");
        assert_mentions(
            &error,
            &["only applies", "journal.url", "set journal.url, or remove"],
        );
    }
    let error = Fixture::new("").error(&[("INGESTD_JOURNAL__NODE", "n1")]);
    assert_mentions(
        &error,
        &["journal.node", "INGESTD_JOURNAL__NODE", "only applies"],
    );
}

/// Environment variables for one run.
type Vars<'a> = Vec<(&'a str, &'a str)>;

/// `ingestd check-config --config FILE` in `dir`, with only `env`.
fn check_config(dir: &Path, config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .arg("--config")
        .arg(config)
        .arg("check-config")
        .current_dir(dir)
        .env_clear()
        .env("INGESTD_API__TOKEN", "to1checkconfig")
        .envs(env.iter().copied())
        .output()
        .expect("run ingestd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn check_config_shows_the_shared_journal_and_refuses_its_errors_with_78() {
    let fixture = Fixture::new("");
    let password_file = fixture.file("journal-password", PG_SECRET);
    let credentials = tempfile::tempdir().expect("tempdir");
    std::fs::write(credentials.path().join("journal-password"), PG_SECRET).expect("write");
    let credentials_dir = credentials.path().display().to_string();
    let password_file_text = password_file.display().to_string();
    let url_with_password = format!("postgresql://ingestd:{PG_SECRET}@db.studio.lan/ingestd");
    let good =
        "[journal]\nurl = \"postgresql://ingestd@db.studio.lan/ingestd\"\nnode = \"capture-01\"\n";
    let cases: [(&str, Vars, &[&str]); 3] = [
        (
            good,
            vec![(
                "INGESTD_JOURNAL__PASSWORD_FILE",
                password_file_text.as_str(),
            )],
            &["# password: <redacted>, from "],
        ),
        (
            good,
            vec![("CREDENTIALS_DIRECTORY", credentials_dir.as_str())],
            &["# password: <redacted>, systemd credential journal-password"],
        ),
        (
            "[journal]\nnode = \"capture-01\"\n",
            vec![("INGESTD_JOURNAL__URL", url_with_password.as_str())],
            &[
                "ingestd:***@db.studio.lan",
                "# password: <redacted>, in the URL",
            ],
        ),
    ];
    for (toml, env, expected) in cases {
        std::fs::write(&fixture.path, toml).expect("write");
        let (code, text) = check_config(fixture.dir.path(), &fixture.path, &env);
        // Valid, but check-config connects, and db.studio.lan is not there.
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains("cannot reach the journal's database postgresql://ingestd"),
            "{text}"
        );
        assert_password_absent(&text);
        for part in [
            "url = \"postgresql://ingestd",
            "node = \"capture-01\"",
            "lease = \"30s\"",
            "heartbeat = \"10s\"",
        ]
        .iter()
        .chain(expected)
        {
            assert!(text.contains(part), "{text}\nshould contain {part}");
        }
    }

    let missing = fixture
        .dir
        .path()
        .join("no-such-password")
        .display()
        .to_string();
    let refused: [(String, Vars, &[&str]); 6] = [
        (
            format!("[journal]\npath = \"/data/journal.db\"\nurl = \"{url_with_password}\"\n"),
            vec![],
            &["journal.path and journal.url are both set"],
        ),
        (
            format!("[journal]\nurl = \"mysql://ingestd:{PG_SECRET}@db/ingestd\"\n"),
            vec![],
            &["journal.url", "not a PostgreSQL URL"],
        ),
        (
            good.to_string(),
            vec![("INGESTD_JOURNAL__PASSWORD_FILE", missing.as_str())],
            &["cannot read the journal password file", "no-such-password"],
        ),
        (
            format!("{good}lease = \"30s\"\nheartbeat = \"15s\"\n"),
            vec![(
                "INGESTD_JOURNAL__PASSWORD_FILE",
                password_file_text.as_str(),
            )],
            &["must be at least 3 × journal.heartbeat"],
        ),
        (
            good.to_string(),
            vec![("INGESTD_JOURNAL__LEASE", "2h")],
            &["journal.lease", "INGESTD_JOURNAL__LEASE", "out of range"],
        ),
        (
            "[journal]\nurl = \"postgresql://ingestd@db/ingestd\"\nnode = \"capture 01\"\n"
                .to_string(),
            vec![("CREDENTIALS_DIRECTORY", credentials_dir.as_str())],
            &["journal.node", "line 3"],
        ),
    ];
    for (toml, env, expected) in refused {
        std::fs::write(&fixture.path, &toml).expect("write");
        let (code, text) = check_config(fixture.dir.path(), &fixture.path, &env);
        assert_eq!(code, Some(78), "{toml}: {text}");
        assert!(text.contains("invalid configuration"), "{text}");
        assert_password_absent(&text);
        for part in expected {
            assert!(text.contains(part), "{text}\nshould contain {part}");
        }
    }
}

// --- render and the example -------------------------------------------------

#[test]
fn render_is_readable_toml_that_loads_back_to_the_same_settings() {
    let fixture = Fixture::new(
        r#"
[api]
base_url = "https://sandbox.api.video/"
chunk_size = 7340032
[upload]
bandwidth_limit = "20MiB"
[[watch]]
path = "/srv/capture"
exclude = ["*.tmp\"quoted"]
settle = 90
after_upload = "move"
move_to = "/srv/done"
[[watch]]
path = "/srv/other"
mode = "events"
"#,
    );
    let settings = fixture
        .load(&[("STATE_DIRECTORY", "/var/lib/ingestd")])
        .expect("loads");
    let rendered = settings.render();
    for expected in [
        "chunk_size = \"7 MiB\"",
        "bandwidth_limit = \"20 MiB\"",
        "settle = \"1m 30s\"",
        "poll_interval = \"30s\"",
        "path = \"/var/lib/ingestd/journal.db\"",
        "move_to = \"/srv/done\"",
        "# token: none",
    ] {
        assert!(
            rendered.contains(expected),
            "{rendered}\nshould contain {expected}"
        );
    }

    let again = Fixture::new(&rendered)
        .load(&[])
        .expect("render loads back");
    assert_eq!(
        again.render().lines().skip(2).collect::<Vec<_>>(),
        rendered.lines().skip(2).collect::<Vec<_>>()
    );
    assert_eq!(again.api.chunk_size, settings.api.chunk_size);
    assert_eq!(again.watches[0].exclude, settings.watches[0].exclude);
    assert_eq!(
        again.watches[0].after_upload,
        settings.watches[0].after_upload
    );
    assert_eq!(again.watches[1].mode, WatchMode::Events);
}

#[test]
fn the_example_config_parses_and_holds_the_documented_defaults() {
    let example = Path::new(EXAMPLE);
    let env = [
        ("INGESTD_API__TOKEN", SECRET),
        ("STATE_DIRECTORY", "/var/lib/ingestd"),
    ];
    let settings = load_from(Some(example), vars(&env)).expect("the example loads");
    assert_eq!(settings.source.as_deref(), Some(example));

    // Every value it sets is the default: it matches an empty file's settings...
    let defaults = Fixture::new("").load(&env).expect("defaults");
    assert_eq!(settings.api.base_url, defaults.api.base_url);
    assert_eq!(settings.api.chunk_size, defaults.api.chunk_size);
    assert_eq!(settings.journal.path, defaults.journal.path);
    assert_eq!(settings.upload.concurrency, defaults.upload.concurrency);
    assert_eq!(
        settings.upload.bandwidth_limit,
        defaults.upload.bandwidth_limit
    );
    assert_eq!(settings.upload.sha256, defaults.upload.sha256);
    // ...and its watch matches a watch with only a path.
    let bare = Fixture::new("[[watch]]\npath = \"/srv/capture\"\n")
        .load(&env)
        .expect("bare watch");
    assert_eq!(
        settings.render().lines().skip(2).collect::<Vec<_>>(),
        bare.render().lines().skip(2).collect::<Vec<_>>()
    );

    // And the defaults are the documented ones.
    assert_eq!(settings.api.base_url.as_str(), "https://ws.api.video/");
    assert_eq!(settings.api.chunk_size, 50 * MIB);
    assert_eq!(
        settings.journal.path,
        PathBuf::from("/var/lib/ingestd/journal.db")
    );
    assert_eq!(settings.upload.concurrency, 2);
    assert_eq!(
        settings.upload.bandwidth_limit,
        config::BandwidthLimit::bytes(0)
    );
    assert_eq!(settings.watches.len(), 1);
    assert_eq!(
        settings.require_token().expect("token from env").expose(),
        SECRET
    );
}

#[test]
fn the_example_documents_every_key_with_its_environment_variable() {
    let text = std::fs::read_to_string(EXAMPLE).expect("read example");
    for var in [
        "INGESTD_API__BASE_URL",
        "INGESTD_API__TOKEN",
        "INGESTD_API__TOKEN_FILE",
        "INGESTD_API__CHUNK_SIZE",
        "INGESTD_JOURNAL__PATH",
        "INGESTD_UPLOAD__CONCURRENCY",
        "INGESTD_UPLOAD__BANDWIDTH_LIMIT",
        "INGESTD_UPLOAD__SHA256",
        "INGESTD_UPLOAD__PLAYABLE_TIMEOUT",
        "INGESTD_JOURNAL__URL",
        "INGESTD_JOURNAL__PASSWORD_FILE",
        "INGESTD_JOURNAL__NODE",
        "INGESTD_JOURNAL__LEASE",
        "INGESTD_JOURNAL__HEARTBEAT",
    ] {
        assert!(
            text.contains(&format!("# env: {var}")),
            "{var} is not documented"
        );
    }
    for key in [
        "base_url",
        "token",
        "token_file",
        "chunk_size",
        "path",
        "concurrency",
        "bandwidth_limit",
        "sha256",
        "recursive",
        "include",
        "exclude",
        "settle",
        "mode",
        "poll_interval",
        "after_upload",
        "move_to",
        "follow_symlinks",
        "url",
        "password_file",
        "node",
        "lease",
        "heartbeat",
        "playable_timeout",
        "events",
        "command",
        "secret_file",
        "timeout",
        "name",
    ] {
        assert!(
            text.contains(&format!("{key} = ")),
            "{key} is not documented"
        );
    }
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("token")),
        "token lines must be commented out"
    );
    for key in ["url", "password_file", "node", "lease", "heartbeat"] {
        assert!(
            !text.lines().any(|l| l.starts_with(&format!("{key} ="))),
            "{key} must be commented out (the example is the SQLite journal)"
        );
    }
    assert!(
        text.contains("setting both path and url is an error"),
        "the example must say that path and url exclude each other"
    );
}

// --- hooks ----------------------------------------------------------------------

#[test]
fn hooks_are_read_with_their_defaults_and_their_secret_is_never_shown() {
    let fixture = Fixture::new("");
    let secret = fixture.file("hook-secret", "s3cr3t-hook-key\n");
    let fixture = Fixture::new(&format!(
        r#"
[upload]
playable_timeout = "10m"
[[hook]]
command = ["/usr/local/bin/notify", "--from-ingestd"]
[[hook]]
name = "mam"
events = ["uploaded", "playable"]
url = "https://user:pw@mam.example/hooks/ingest?key=abc"
secret_file = "{}"
timeout = "5s"
"#,
        secret.display()
    ));
    let settings = fixture.load(&[]).expect("loads");
    assert_eq!(settings.upload.playable_timeout, Duration::from_secs(600));
    assert_eq!(settings.hooks.len(), 2);
    let command = &settings.hooks[0];
    assert!(!command.named && command.key.starts_with("command-"));
    assert_eq!(command.events, config::HookEvent::ALL.to_vec());
    assert_eq!(command.timeout, Duration::from_secs(30));
    let webhook = &settings.hooks[1];
    assert_eq!(webhook.key, "mam");
    assert!(webhook.takes(config::HookEvent::Playable) && !webhook.takes(config::HookEvent::Gone));
    match &webhook.target {
        config::HookTarget::Webhook { secret, .. } => {
            assert_eq!(secret.as_ref().map(|s| s.expose()), Some("s3cr3t-hook-key"))
        }
        other => panic!("{other:?}"),
    }
    // The secret, the URL's password and its query are never shown.
    let shown = format!("{} {settings:?} {}", settings.render(), webhook.describe());
    for hidden in ["s3cr3t-hook-key", "pw@", "key=abc"] {
        assert!(!shown.contains(hidden), "{hidden} shown in:\n{shown}");
    }
    assert!(shown.contains("https://mam.example/hooks/…"), "{shown}");
    // The rendering loads back (the webhook's query aside, which it hides).
    let rendered = settings.render();
    assert!(rendered.contains("secret_file = "), "{rendered}");
    let again = Fixture::new(&rendered)
        .load(&[])
        .expect("render loads back");
    assert_eq!(again.hooks[0], settings.hooks[0]);
    assert_eq!(again.hooks[1].events, settings.hooks[1].events);
    // By default done videos are watched for two hours; "0s" turns it off.
    let default = load_toml("").expect("loads");
    assert_eq!(default.upload.playable_timeout, Duration::from_secs(7200));
    assert!(default.hooks.is_empty());
}

#[test]
fn bad_hooks_are_refused_naming_the_key() {
    for (toml, parts) in [
        (
            "[[hook]]\nevents = [\"bogus\"]\ncommand = [\"/bin/true\"]",
            &["hook[0].events", "\"bogus\"", "uploaded, playable, not_playable, failed, gone"][..],
        ),
        (
            "[[hook]]\nevents = []\ncommand = [\"/bin/true\"]",
            &["hook[0].events", "empty"],
        ),
        (
            "[[hook]]\ncommand = [\"/bin/true\"]\nurl = \"https://x.example/\"",
            &["hook[0].url", "not both"],
        ),
        ("[[hook]]\ntimeout = \"5s\"", &["hook[0]", "command", "url"]),
        ("[[hook]]\ncommand = []", &["hook[0].command", "empty"]),
        (
            "[[hook]]\ncommand = [\"/bin/true\"]\nsecret_file = \"/etc/x\"",
            &["hook[0].secret_file", "webhook"],
        ),
        (
            "[[hook]]\nurl = \"ftp://x.example/\"",
            &["hook[0].url", "http:// or https://"],
        ),
        (
            "[[hook]]\ncommand = [\"/bin/true\"]\ntimeout = \"0s\"",
            &["hook[0].timeout", "between 1s and 1h"],
        ),
        (
            "[[hook]]\nname = \"a b\"\ncommand = [\"/bin/true\"]",
            &["hook[0].name", "\"a b\""],
        ),
        (
            "[[hook]]\nname = \"x\"\ncommand = [\"/bin/true\"]\n[[hook]]\nname = \"x\"\ncommand = [\"/bin/false\"]",
            &["hook[1].name", "hook[0]"],
        ),
        (
            "[[hook]]\ncommand = [\"/bin/true\"]\n[[hook]]\ncommand = [\"/bin/true\"]",
            &["hook[1]", "same target"],
        ),
        (
            "[[hook]]\ncommand = [\"/bin/true\"]\nwhen = \"now\"",
            &["when"],
        ),
    ] {
        let error = Fixture::new(toml).error(&[]);
        assert_mentions(&error, parts);
    }
}

#[test]
fn an_unreadable_hook_secret_stops_the_start() {
    let fixture = Fixture::new(
        "[[hook]]\nurl = \"https://mam.example/hooks\"\nsecret_file = \"/nonexistent/hook-secret\"",
    );
    let error = fixture.error(&[]);
    assert!(matches!(error, ConfigError::SecretFile { .. }), "{error:?}");
    assert_mentions(&error, &["/nonexistent/hook-secret", "hook[0].secret_file"]);
    let empty = Fixture::new("");
    let path = empty.file("secret", "\n");
    let error = Fixture::new(&format!(
        "[[hook]]\nurl = \"https://mam.example/hooks\"\nsecret_file = \"{}\"",
        path.display()
    ))
    .error(&[]);
    assert_mentions(&error, &["is empty"]);
}
