//! The mount-namespace harness itself (`common::Ns`): real mounts that stay
//! private to a test, a daemon that runs among them, files the test reaches
//! through /proc/<holder>/root. Skipped (loudly) where mount namespaces are
//! refused, unless CI_REQUIRE_MOUNTS=1.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How long any single expected outcome may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

fn mounted_on_host(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[test]
fn a_file_on_a_private_tmpfs_is_uploaded_by_a_daemon_inside_the_namespace() {
    let started = Instant::now();
    let env = Env::new();
    let Some(ns) = Ns::new("mounts_harness::a_file_on_a_private_tmpfs_is_uploaded") else {
        return;
    };
    let media = sh_quote(&env.media);

    // A tmpfs over the watch folder, seen inside only.
    ns.sh(&format!("mount -t tmpfs -o size=64m tmpfs {media}"));
    assert!(ns.is_mounted(&env.media), "{}", ns.mountinfo());
    assert!(!mounted_on_host(&env.media), "the tmpfs leaked to the host");
    let probe = ns.path(&env.media).join("probe.txt");
    std::fs::write(&probe, "inside\n").unwrap();
    assert!(
        !env.media.join("probe.txt").exists(),
        "the host sees a file written on the namespace's tmpfs"
    );
    assert_eq!(ns.sh(&format!("cat {media}/probe.txt")), "inside\n");
    assert!(
        ns.sh(&format!("stat -f -c %T {media}")).trim() == "tmpfs",
        "the namespace's media is not the tmpfs"
    );
    std::fs::remove_file(&probe).unwrap();

    env.write_config(
        "8MiB",
        &format!(
            "\n[[watch]]\npath = {}\nsettle = \"1s\"\npoll_interval = \"1s\"\n",
            toml_path(&env.media)
        ),
    );
    let d = Daemon::ready_in(&env, &ns);

    // nsenter exec'd ingestd: the pid the test signals is the daemon's, in
    // the holder's namespace, with the environment env.cmd set.
    let pid = d.child.id();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "ingestd", "pid {pid} is not ingestd");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe,
        Path::new(env!("CARGO_BIN_EXE_ingestd"))
            .canonicalize()
            .unwrap()
    );
    let ns_of = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_eq!(
        ns_of(pid),
        ns_of(ns.pid()),
        "the daemon is not in the namespace"
    );
    assert_ne!(ns_of(pid), std::fs::read_link("/proc/self/ns/mnt").unwrap());
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(
        vars.contains(&&b"INGESTD_LOG=info"[..]),
        "env not passed through nsenter"
    );
    assert!(
        !vars.iter().any(|v| v.starts_with(b"RUST_LOG=")),
        "env_remove lost"
    );

    // A file written through /proc/<holder>/root: inotify on the tmpfs
    // inside sees it, the daemon uploads it.
    let inside = ns.path(&env.media).join("take.mp4");
    write_random(&inside, 3 * MIB, 7);
    assert!(!env.media.join("take.mp4").exists());
    let sha = sha256(&inside);
    let want_path = env.media.join("take.mp4");
    let mut last = Vec::new();
    let uploaded = wait_until(WAIT, || {
        last = env.status();
        let Some(row) = last
            .iter()
            .find(|r| r["path"].as_str() == want_path.to_str() && r["state"] == "done")
        else {
            return false;
        };
        let id = row["video_id"].as_str().expect("a done row has a video_id");
        env.videos()
            .iter()
            .any(|v| v.video_id == id && v.complete && v.sha256.as_deref() == Some(&sha))
    });
    assert!(
        uploaded,
        "never uploaded with the right bytes; status: {last:#?}\nvideos: {:?}\n--- log\n{}",
        env.videos(),
        d.log()
    );

    // A lazy unmount inside: gone from the namespace's mountinfo.
    ns.sh(&format!("umount -l {media}"));
    assert!(!ns.is_mounted(&env.media), "{}", ns.mountinfo());
    assert!(!ns.path(&env.media).join("take.mp4").exists());

    // SIGTERM reaches ingestd itself (no nsenter in between).
    stop_ok(d);
    eprintln!("mounts harness: {:?}", started.elapsed());
}

#[test]
fn wrapped_commands_keep_args_env_and_working_directory_inside() {
    let env = Env::new();
    let Some(ns) = Ns::new("mounts_harness::wrapped_commands_keep_args_env_and_cwd") else {
        return;
    };
    let media = sh_quote(&env.media);
    ns.sh(&format!("mount -t tmpfs -o size=1m tmpfs {media}"));
    std::fs::write(ns.path(&env.media).join("marker"), "").unwrap();

    // current_dir is the namespace's view of the path (the tmpfs, not the
    // host directory under it); env set and removed; args as given.
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("echo \"$1|${HARNESS_PROBE-unset}|${HOME-unset}|$(pwd)|$(ls)\"")
        .arg("sh")
        .arg("an arg")
        .env("HARNESS_PROBE", "set")
        .env_remove("HOME")
        .current_dir(&env.media);
    let out = ns.wrap(&c).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("an arg|set|unset|{}|marker", env.media.display())
    );

    // Without current_dir: the test's own working directory, not "/".
    let out = ns.cmd("pwd").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        std::env::current_dir().unwrap().to_str().unwrap()
    );

    // A failing script is reported, not asserted, by try_sh.
    let out = ns.try_sh("echo oops >&2; exit 3");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "oops");

    // The holder's death ends the namespace: its mounts with it.
    let holder = ns.pid();
    drop(ns);
    assert!(
        !Path::new(&format!("/proc/{holder}")).exists() || {
            // A recycled pid is not ours: it has another namespace or none.
            std::fs::read_to_string(format!("/proc/{holder}/comm")).unwrap_or_default() != "sleep\n"
        }
    );
    assert!(!mounted_on_host(&env.media));
}
