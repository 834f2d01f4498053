//! `ingestd completions SHELL` and `ingestd manpage`, from the real binary:
//! the page (which groff formats without a warning) and every script name
//! every command that `--help` lists, nested ones too; bash's script
//! completes; a failed write is an error, not a panic. The Debian package
//! ships these outputs (`.ci/deb`).

use std::fs::OpenOptions;
use std::process::{Command, Output, Stdio};

fn ingestd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ingestd")
}

fn stdout_of(args: &[&str]) -> String {
    let out = ingestd(args);
    assert!(
        out.status.success(),
        "ingestd {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The names listed under "Commands:" in `ingestd PATH… --help`, without
/// clap's own `help`.
fn listed_commands(path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let help = stdout_of(&args);
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command the help shows, as the words after `ingestd`, depth first.
fn every_command() -> Vec<Vec<String>> {
    fn walk(path: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        for name in listed_commands(&words) {
            path.push(name);
            found.push(path.clone());
            walk(path, found);
            path.pop();
        }
    }
    let mut found = Vec::new();
    walk(&mut Vec::new(), &mut found);
    found
}

#[test]
fn the_help_lists_the_commands_the_package_documents() {
    let all: Vec<String> = every_command().iter().map(|c| c.join(" ")).collect();
    for expected in [
        "run",
        "upload",
        "status",
        "retry",
        "check-config",
        "emulator",
        "demo",
        "token",
        "token create",
        "token delete",
        "journal",
        "journal export",
        "completions",
        "manpage",
    ] {
        assert!(all.iter().any(|c| c == expected), "{expected} in {all:?}");
    }
}

#[test]
fn the_manual_page_documents_every_command() {
    let page = stdout_of(&["manpage"]);
    assert!(
        page.starts_with(".TH ingestd 1 "),
        "{}",
        &page[..page.len().min(200)]
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(page.contains(&format!("\"ingestd {version}\"")), "version");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH COMMANDS",
        ".SH \"EXIT STATUS\"",
        ".SH FILES",
        ".SH ENVIRONMENT",
    ] {
        assert_eq!(page.matches(section).count(), 1, "{section}");
    }
    for command in every_command() {
        let heading = format!(".SS \"ingestd {}\"\n", command.join(" "));
        assert!(page.contains(&heading), "no {heading:?} in the page");
    }
    // Option help reaches the page (roff escapes its dashes).
    assert!(page.contains("\\fB\\-\\-once\\fR"), "run --once");
    assert!(page.contains("\\fB\\-\\-config\\fR"), "the global --config");
    // The apostrophe string is defined once, right after .TH.
    assert_eq!(page.matches(".ds Aq").count(), 2, "one .ie/.el pair");
    assert!(page.lines().nth(1).unwrap().starts_with(".ie "));

    // When groff is there, the page formats without a warning.
    let Ok(mut groff) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("groff is not installed; the page's formatting is not checked");
        return;
    };
    use std::io::Write;
    groff
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = groff.wait_with_output().unwrap();
    assert!(out.status.success(), "groff: {:?}", out.status);
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.trim().is_empty(), "groff:\n{warnings}");
}

#[test]
fn each_completion_script_names_every_command() {
    let commands = every_command();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        for command in &commands {
            let name = command.last().unwrap();
            assert!(names(&script, name), "{shell}: no {name}");
        }
        assert!(names(&script, "config"), "{shell}: --config");
        assert!(names(&script, "once"), "{shell}: run --once");
    }
}

/// Whether `word` stands in `script` as a word of its own (not inside
/// `rerun` or `check-config-x`).
fn names(script: &str, word: &str) -> bool {
    let part_of_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    script.match_indices(word).any(|(at, _)| {
        let before = script[..at].chars().next_back();
        let after = script[at + word.len()..].chars().next();
        // A leading "--" is an option's, still the word.
        let before = before.filter(|&c| c != '-' || !script[..at].ends_with("--"));
        !before.is_some_and(part_of_word) && !after.is_some_and(part_of_word)
    })
}

#[test]
fn the_bash_script_completes_commands_and_their_subcommands() {
    let script = stdout_of(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingestd.bash");
    std::fs::write(&path, &script).unwrap();
    // As bash-completion calls it: COMP_WORDS/COMP_CWORD, then the
    // function with (command, word being completed, previous word).
    let probe = r#"
        source "$1"
        complete_words() {
            COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
            _ingestd ingestd "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\n' "${COMPREPLY[@]}"
        }
        echo "[ingestd che]"; complete_words ingestd che
        echo "[ingestd token ]"; complete_words ingestd token ""
        echo "[ingestd completions ]"; complete_words ingestd completions ""
    "#;
    let out = Command::new("bash")
        .args(["-c", probe, "probe"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let section = |title: &str| -> Vec<String> {
        text.split(&format!("[{title}]\n"))
            .nth(1)
            .unwrap_or_default()
            .lines()
            .take_while(|l| !l.starts_with('['))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(section("ingestd che"), ["check-config"], "{text}");
    let token = section("ingestd token ");
    for sub in ["create", "list", "show", "delete"] {
        assert!(token.iter().any(|w| w == sub), "{sub} in {token:?}");
    }
    let shells = section("ingestd completions ");
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|w| w == shell), "{shell} in {shells:?}");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error_naming_the_shells() {
    let out = ingestd(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'tcsh'"), "{err}");
    assert!(err.contains("bash, elvish, fish, powershell, zsh"), "{err}");
}

#[test]
fn a_failed_write_is_an_error_not_a_panic() {
    for (args, what) in [
        (&["manpage"][..], "manual page"),
        (&["completions", "zsh"][..], "completion script"),
    ] {
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ingestd"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("cannot write the {what} to standard output")),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
