use super::validate::{check_token, lexical};
use super::*;

fn env(pairs: &[(&str, &str)]) -> EnvMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_missing_default_config_file_means_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = dir.path().join("config.toml");
    let settings = load_with_default(None, env(&[]), &absent).expect("defaults");
    assert_eq!(settings.source, None);
    assert_eq!(settings.api.chunk_size, DEFAULT_CHUNK_SIZE);
    assert!(settings.watches.is_empty());
}

#[test]
fn an_existing_default_config_file_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[upload]\nconcurrency = 5\n").expect("write");
    let settings = load_with_default(None, env(&[]), &path).expect("loads");
    assert_eq!(settings.source.as_deref(), Some(path.as_path()));
    assert_eq!(settings.upload.concurrency, 5);
}

#[test]
fn ingestd_config_wins_over_the_default_and_must_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let default = dir.path().join("default.toml");
    std::fs::write(&default, "[upload]\nconcurrency = 5\n").expect("write");
    let chosen = dir.path().join("chosen.toml");
    std::fs::write(&chosen, "[upload]\nconcurrency = 7\n").expect("write");
    let chosen_text = chosen.to_string_lossy().to_string();

    let settings =
        load_with_default(None, env(&[("INGESTD_CONFIG", &chosen_text)]), &default).expect("loads");
    assert_eq!(settings.upload.concurrency, 7);
    assert_eq!(settings.source.as_deref(), Some(chosen.as_path()));

    let missing = dir.path().join("missing.toml");
    let missing_text = missing.to_string_lossy().to_string();
    match load_with_default(None, env(&[("INGESTD_CONFIG", &missing_text)]), &default) {
        Err(ConfigError::ReadFile { path, error }) => {
            assert_eq!(path, missing);
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected ReadFile, got {other:?}"),
    }
}

#[test]
fn an_explicit_path_wins_over_ingestd_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let explicit = dir.path().join("explicit.toml");
    std::fs::write(&explicit, "[upload]\nconcurrency = 3\n").expect("write");
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[upload]\nconcurrency = 9\n").expect("write");
    let other_text = other.to_string_lossy().to_string();
    let settings = load_with_default(
        Some(&explicit),
        env(&[("INGESTD_CONFIG", &other_text)]),
        &other,
    )
    .expect("loads");
    assert_eq!(settings.upload.concurrency, 3);
}

#[test]
fn journal_default_uses_the_first_state_directory() {
    assert_eq!(
        journal_default_in(Some("/var/lib/ingestd")),
        PathBuf::from("/var/lib/ingestd/journal.db")
    );
    assert_eq!(
        journal_default_in(Some("/var/lib/a:/var/lib/b")),
        PathBuf::from("/var/lib/a/journal.db")
    );
    assert_eq!(journal_default_in(Some("")), PathBuf::from("./ingestd.db"));
    assert_eq!(journal_default_in(None), PathBuf::from("./ingestd.db"));
}

#[test]
fn lexical_paths_ignore_dots_and_trailing_slashes() {
    assert_eq!(
        lexical(Path::new("/srv/./capture/")),
        PathBuf::from("/srv/capture")
    );
    assert!(lexical(Path::new("/srv/capture/sub")).starts_with(lexical(Path::new("/srv/capture/"))));
    assert!(!lexical(Path::new("/srv/capture2")).starts_with(lexical(Path::new("/srv/capture"))));
}

#[test]
fn tokens_with_whitespace_or_control_characters_are_refused() {
    assert!(check_token("to1abc", "x").is_ok());
    for bad in ["", "to1 abc", "to1\tabc", "to1\u{7}abc", "to1\nabc"] {
        match check_token(bad, "in test") {
            Err(ConfigError::BadToken { from, .. }) => assert_eq!(from, "in test"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn a_watch_root_is_absolute_without_dots() {
    let watch = WatchSettings::new("/srv/./in/../capture/");
    assert_eq!(watch.root(), PathBuf::from("/srv/capture"));
    let relative = WatchSettings::new("capture/./today");
    let cwd = std::env::current_dir().expect("current dir");
    assert_eq!(relative.root(), cwd.join("capture/today"));
}

#[test]
fn journal_urls_are_redacted_in_the_user_part_and_the_password_parameter() {
    use super::settings::redact_url;
    for (url, redacted) in [
        (
            "postgresql://ingestd@db.studio.lan/ingestd",
            "postgresql://ingestd@db.studio.lan/ingestd",
        ),
        (
            "postgresql://ingestd:hunter2@db.studio.lan:5433/ingestd",
            "postgresql://ingestd:***@db.studio.lan:5433/ingestd",
        ),
        (
            "postgres://ingestd:p%40ss:w@db/x?sslmode=require",
            "postgres://ingestd:***@db/x?sslmode=require",
        ),
        (
            "postgresql://db/x?user=i&password=hunter2&sslmode=require",
            "postgresql://db/x?user=i&password=***&sslmode=require",
        ),
        (
            "postgresql://db/x?pass%77ord=hunter2",
            "postgresql://db/x?pass%77ord=***",
        ),
        ("postgresql://:hunter2@db/x", "postgresql://:***@db/x"),
        ("postgresql://u:hun@ter2@db/x", "postgresql://***"),
        (
            "postgresql://db/x?password=hun&ter2&sslmode=require",
            "postgresql://db/x?password=***&***&sslmode=require",
        ),
        ("http://u:hunter2@db/x", "http://***"),
        ("host=db password=hunter2", "***"),
    ] {
        assert_eq!(redact_url(url), redacted, "{url}");
        assert!(!redact_url(url).contains("hun"), "{url}");
    }
}

#[test]
fn node_names_are_short_plain_labels() {
    use super::pg_journal::valid_node;
    for good in ["capture-01", "a", "node_2.studio", &"x".repeat(63)] {
        assert!(valid_node(good), "{good}");
    }
    for bad in ["", "capture 01", "café", "a/b", "a:b", &"x".repeat(64)] {
        assert!(!valid_node(bad), "{bad}");
    }
}

#[test]
fn journal_passwords_must_be_one_non_empty_line() {
    use super::pg_journal::check_password;
    assert_eq!(
        check_password("pass word", "x").expect("ok").expose(),
        "pass word"
    );
    for bad in ["", "a\nb", "a\r", "a\0b"] {
        match check_password(bad, "in test") {
            Err(ConfigError::BadPassword { from, .. }) => assert_eq!(from, "in test"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn a_bandwidth_timetable_loads_from_the_file_and_the_environment_and_renders_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let absent = dir.path().join("absent.toml");
    let table = "Mon-08:00,10MiB 18:00,512KiB Sat-00:00,off Sun-12:00,pause";
    std::fs::write(&path, format!("[upload]\nbandwidth_limit = \"{table}\"\n")).expect("write");
    let settings = load_with_default(Some(&path), env(&[]), &absent).expect("loads");
    let limit = &settings.upload.bandwidth_limit;
    assert_eq!(
        limit.timetable().map(ToString::to_string).as_deref(),
        Some(table)
    );
    // check-config's output loads back to the same table.
    let rendered = settings.render();
    assert!(
        rendered.contains(&format!("bandwidth_limit = \"{table}\"  # timetable")),
        "{rendered}"
    );
    std::fs::write(&path, &rendered).expect("write");
    let again = load_with_default(Some(&path), env(&[]), &absent).expect("loads back");
    assert_eq!(&again.upload.bandwidth_limit, limit);

    let daily = "08:00,10MiB;18:00,off";
    let settings = load_with_default(
        None,
        env(&[("INGESTD_UPLOAD__BANDWIDTH_LIMIT", daily)]),
        &absent,
    )
    .expect("loads");
    assert_eq!(
        settings.upload.bandwidth_limit,
        BandwidthLimit::parse(daily).expect("parses")
    );
    // Plain values render as they always did.
    for (value, line) in [
        (
            "\"20MiB\"",
            "bandwidth_limit = \"20 MiB\"  # bytes per second",
        ),
        ("1048576", "bandwidth_limit = \"1 MiB\"  # bytes per second"),
        ("\"0\"", "bandwidth_limit = \"0\"  # unlimited"),
        ("\"off\"", "bandwidth_limit = \"0\"  # unlimited"),
        ("\"pause\"", "bandwidth_limit = \"pause\""),
    ] {
        std::fs::write(&path, format!("[upload]\nbandwidth_limit = {value}\n")).expect("write");
        let settings = load_with_default(Some(&path), env(&[]), &absent).expect("loads");
        assert!(
            settings.render().contains(line),
            "{value}: {}",
            settings.render()
        );
    }
}

#[test]
fn a_bad_bandwidth_timetable_names_the_key_where_it_was_written_and_the_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let absent = dir.path().join("absent.toml");
    for (table, wanted) in [
        ("08:00,10MiB 25:00,off", "bad time \"25:00\""),
        ("Mon-08:00,10MiB Sut-00:00,off", "bad weekday \"Sut\""),
        ("08:00,10 potatoes", "entry \"potatoes\""),
        ("08:00,lots 18:00,off", "bad rate"),
        ("18:00,off 08:00,10MiB", "unordered"),
        ("08:00,10MiB 08:00,off", "overlapping"),
        ("", "empty"),
    ] {
        std::fs::write(
            &path,
            format!("[api]\nchunk_size = \"8MiB\"\n\n[upload]\nbandwidth_limit = \"{table}\"\n"),
        )
        .expect("write");
        let error = load_with_default(Some(&path), env(&[]), &absent).expect_err(table);
        let message = error.to_string();
        match &error {
            ConfigError::Invalid { key, origin, .. } => {
                assert_eq!(key, "upload.bandwidth_limit", "{message}");
                assert_eq!(
                    origin,
                    &ValueOrigin::File {
                        path: path.clone(),
                        line: Some(5)
                    },
                    "{message}"
                );
            }
            other => panic!("{table}: {other:?}"),
        }
        assert!(message.contains(wanted), "{table}: {message}");
    }
    let error = load_with_default(
        None,
        env(&[("INGESTD_UPLOAD__BANDWIDTH_LIMIT", "08:00,10MiB 07:00,off")]),
        &absent,
    )
    .expect_err("unordered");
    let message = error.to_string();
    assert!(
        message.contains("INGESTD_UPLOAD__BANDWIDTH_LIMIT"),
        "{message}"
    );
    assert!(message.contains("\"07:00,off\" is unordered"), "{message}");
}
