//! The upload order of a watch folder (`order`, `priority`), as a user sees
//! it: the real binary against the emulator on loopback, `concurrency = 1`,
//! so the order in which the emulator's videos were created is the order in
//! which the files were claimed.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use ingestd::journal::FileState;

/// A config with one upload at a time and `extra` (the `[[watch]]` tables).
fn write_config(env: &Env, extra: &str) {
    let text = format!(
        "[api]\nbase_url = \"{}\"\ntoken_file = {}\nchunk_size = \"8MiB\"\n\n\
         [journal]\npath = {}\n\n[upload]\nconcurrency = 1\n{extra}\n",
        env.emulator.base_url(),
        toml_path(&env.token_file),
        toml_path(&env.journal),
    );
    std::fs::write(&env.config, text).unwrap();
}

/// Writes `name` in the media folder with its mtime `age` ago.
fn file_aged(env: &Env, name: &str, size: u64, seed: u64, age: Duration) -> PathBuf {
    let p = env.file(name, size, seed);
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    p
}

/// The file names in the order the emulator created their videos.
fn created_order(env: &Env) -> Vec<String> {
    let rows = rows(env);
    env.videos()
        .iter()
        .map(|v| {
            let row = rows
                .iter()
                .find(|r| r.video_id.as_deref() == Some(v.video_id.as_str()))
                .unwrap_or_else(|| panic!("no row has the video {}: {rows:#?}", v.video_id));
            assert_eq!(row.state, FileState::Done, "{row:?}");
            name(&row.path())
        })
        .collect()
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn newest_with_a_priority_uploads_the_priority_files_first_then_the_newest() {
    let env = Env::new();
    write_config(
        &env,
        &watch(
            &env.media,
            "200ms",
            "order = \"newest\"\npriority = [\"*.proxy.mp4\"]",
        ),
    );
    // (name, minutes old): neither the oldest-first order, nor the newest
    // without the priority, nor the names' order is the one expected.
    let files = [
        ("c0.mp4", 5),
        ("c1.mp4", 1),
        ("c2.mp4", 9),
        ("c3.mp4", 3),
        ("c4.mp4", 7),
        ("c5.mp4", 2),
        ("c6.mp4", 8),
        ("c7.mp4", 4),
        ("p0.proxy.mp4", 6),
        ("p1.proxy.mp4", 10),
    ];
    for (i, (name, minutes)) in files.iter().enumerate() {
        let size = 1000 + 100 * i as u64;
        file_aged(
            &env,
            name,
            size,
            i as u64,
            Duration::from_secs(60 * minutes),
        );
    }
    let out = env.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        created_order(&env),
        [
            "p0.proxy.mp4",
            "p1.proxy.mp4",
            "c1.mp4",
            "c5.mp4",
            "c3.mp4",
            "c7.mp4",
            "c0.mp4",
            "c4.mp4",
            "c6.mp4",
            "c2.mp4",
        ],
        "the proxies (newest first), then the rest newest first"
    );
}

#[test]
fn upload_of_files_in_a_watch_folder_follows_that_folders_order() {
    let env = Env::new();
    write_config(
        &env,
        &watch(
            &env.media,
            "200ms",
            "order = \"largest\"\npriority = [\"*_lowres.*\"]",
        ),
    );
    // Given oldest first, and in that order on the command line.
    let given = [
        file_aged(&env, "tiny.mp4", 100, 1, Duration::from_secs(400)),
        file_aged(&env, "mid.mov", 2000, 2, Duration::from_secs(300)),
        file_aged(&env, "small_lowres.mp4", 500, 3, Duration::from_secs(200)),
        file_aged(&env, "big.mov", 3000, 4, Duration::from_secs(100)),
    ];
    let mut args = vec!["upload"];
    args.extend(given.iter().map(|p| p.to_str().unwrap()));
    let out = env.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        created_order(&env),
        ["small_lowres.mp4", "big.mov", "mid.mov", "tiny.mp4"],
        "the low-res file, then the largest first"
    );
}

#[test]
fn a_bad_priority_glob_exits_78_naming_the_key_and_the_pattern() {
    let env = Env::new();
    write_config(
        &env,
        &watch(&env.media, "1s", "priority = [\"*.proxy.mp4\", \"*.{mp4\"]"),
    );
    let out = env.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for part in ["watch[0].priority", "\"*.{mp4\"", "not a valid glob"] {
        assert!(err.contains(part), "{part:?} not said: {}", text(&out));
    }
    assert!(!env.journal.exists());

    write_config(&env, &watch(&env.media, "1s", "order = \"biggest\""));
    let out = env.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for part in ["watch[0].order", "oldest, newest, smallest, largest"] {
        assert!(err.contains(part), "{part:?} not said: {}", text(&out));
    }
}

#[test]
fn check_config_prints_the_order_and_the_priority_and_the_example_documents_them() {
    let env = Env::new();
    write_config(
        &env,
        &watch(
            &env.media,
            "1s",
            "order = \"smallest\"\npriority = [\"*.proxy.mp4\", \"*_lowres.*\"]",
        ),
    );
    let out = env.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("order = \"smallest\"\n"), "{shown}");
    assert!(
        shown.contains("priority = [\"*.proxy.mp4\", \"*_lowres.*\"]\n"),
        "{shown}"
    );
    // Without them: the defaults.
    write_config(&env, &watch(&env.media, "1s", ""));
    let out = env.run(&["check-config"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("order = \"oldest\"\npriority = []\n"),
        "{shown}"
    );

    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .unwrap();
    for key in ["order = \"oldest\"", "priority = []", "\"*.proxy.mp4\""] {
        assert!(example.contains(key), "{key} is not documented");
    }
}
