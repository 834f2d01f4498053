//! Network shares, as a NAS user meets them: a share restored with `cp -a`
//! or mounted from another filesystem re-sends nothing and resumes a killed
//! upload on its videoId; a share that blinks away (a lazy unmount) pauses
//! its uploads, keeps every file, says so on /healthz and in an ERROR line,
//! and finishes everything once when it is back. Real mounts, inside a
//! private mount namespace (`common::Ns`); plus identity cases that need no
//! mount: a camera reusing a name, a file patched in place, a rename, a
//! root removed and recreated.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// How long any single expected outcome may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(90);

/// A watch on `media` with a short settle, a bandwidth limit that keeps a
/// 40 MiB upload going for a few seconds, and the metrics endpoint.
fn config(env: &Env, media: &Path, port: u16) {
    env.write_config(
        "8MiB",
        &format!(
            "bandwidth_limit = \"12MiB\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[watch]]\npath = {}\nsettle = \"1s\"\npoll_interval = \"1s\"\n",
            toml_path(media)
        ),
    );
}

fn row_of<'a>(rows: &'a [serde_json::Value], path: &Path) -> Option<&'a serde_json::Value> {
    rows.iter().find(|r| r["path"].as_str() == path.to_str())
}

/// Waits until every path is `done`; the rows.
fn wait_done(env: &Env, d: &Daemon, paths: &[PathBuf]) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    let ok = wait_until(WAIT, || {
        rows = env.status();
        paths
            .iter()
            .all(|p| row_of(&rows, p).is_some_and(|r| r["state"] == "done"))
    });
    assert!(ok, "not all done: {rows:#?}\n--- log\n{}", d.log());
    rows
}

/// Whether the video is named after the file (its whole name, as api.video
/// names a token upload's video).
fn titled(v: &ingestd::emulator::VideoReport, p: &Path) -> bool {
    v.title == p.file_name().unwrap().to_str().unwrap()
}

/// Every file once, complete, with its bytes; no other video at all.
fn assert_once(env: &Env, files: &[(PathBuf, String)], log: &str) {
    let videos = env.videos();
    for (p, sha) in files {
        let name = p.file_name().unwrap().to_str().unwrap();
        let same: Vec<_> = videos.iter().filter(|v| titled(v, p)).collect();
        assert_eq!(same.len(), 1, "{name}: {same:#?}\n--- log\n{log}");
        assert!(same[0].complete && same[0].sha256.as_deref() == Some(sha.as_str()));
    }
    assert_eq!(videos.len(), files.len(), "{videos:#?}");
}

fn orphans(env: &Env) -> Vec<serde_json::Value> {
    let out = env.run(&["status", "--orphans", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The upload of `path` has had at least one chunk acknowledged; its videoId.
fn wait_started(env: &Env, d: &Daemon, path: &Path) -> String {
    let mut rows = Vec::new();
    let ok = wait_until(WAIT, || {
        rows = env.status();
        row_of(&rows, path).is_some_and(|r| {
            r["state"] == "uploading" && r["bytes_uploaded"].as_u64().unwrap_or(0) > 0
        })
    });
    assert!(ok, "never started: {rows:#?}\n--- log\n{}", d.log());
    row_of(&rows, path).unwrap()["video_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_restored_or_remounted_share_resends_nothing_and_a_killed_upload_resumes_on_its_video() {
    let env = Env::new();
    let Some(ns) = Ns::new("shares::a_restored_or_remounted_share_resends_nothing") else {
        return;
    };
    let media = env.media.clone();
    let q = sh_quote(&media);
    let backup = env.dir.path().join("backup");
    let other = env.dir.path().join("other");
    ns.sh(&format!("mount -t tmpfs -o size=200m tmpfs {q}"));
    let port = free_port();
    config(&env, &media, port);
    let d = Daemon::ready_in(&env, &ns);

    let mut files = Vec::new();
    for i in 0..4 {
        let p = media.join(format!("clip-{i}.mp4"));
        write_random(&ns.path(&p), 2 * MIB + i, 10 + i);
        files.push((p.clone(), sha256(&ns.path(&p))));
    }
    let small: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
    wait_done(&env, &d, &small);
    let big = media.join("big.mp4");
    write_random(&ns.path(&big), 40 * MIB, 99);
    files.push((big.clone(), sha256(&ns.path(&big))));
    let video = wait_started(&env, &d, &big);
    common::signal(&d.child, 9);
    drop(d);

    // Restored with cp -a onto a new filesystem: same paths, bytes and
    // mtimes; new device, new inodes.
    ns.sh(&format!(
        "mkdir -p {b} && cp -a {q}/. {b}/ && umount {q} && mount -t tmpfs -o size=200m tmpfs {q} && cp -a {b}/. {q}/",
        b = sh_quote(&backup)
    ));
    let d = Daemon::ready_in(&env, &ns);
    let rows = wait_done(
        &env,
        &d,
        &small
            .iter()
            .cloned()
            .chain([big.clone()])
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        row_of(&rows, &big).unwrap()["video_id"].as_str(),
        Some(video.as_str()),
        "the killed upload did not resume on its videoId"
    );
    assert!(
        d.log()
            .contains("files re-identified by their content, none sent again"),
        "{}",
        d.log()
    );
    assert_once(&env, &files, &d.log());

    // Then a bind mount of another filesystem's copy, under the running daemon.
    ns.sh(&format!(
        "mkdir -p {o} && cp -a {q}/. {o}/ && umount -l {q} && mount --bind {o} {q}",
        o = sh_quote(&other)
    ));
    assert!(
        wait_until(WAIT, || d.count("files re-identified by their content")
            >= 2),
        "the bind mount was not re-identified:\n{}",
        d.log()
    );
    // A file written after the remount is found on the new root.
    let after = media.join("after.mp4");
    write_random(&ns.path(&after), MIB, 5);
    files.push((after.clone(), sha256(&ns.path(&after))));
    let all: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
    wait_done(&env, &d, &all);
    assert_once(&env, &files, &d.log());
    assert!(orphans(&env).is_empty(), "{:#?}", orphans(&env));
    assert!(env.status().iter().all(|r| r["state"] == "done"));
    stop_ok(d);
}

#[test]
fn a_share_that_blinks_pauses_its_uploads_and_loses_nothing() {
    let env = Env::new();
    let Some(ns) = Ns::new("shares::a_share_that_blinks_pauses_its_uploads") else {
        return;
    };
    let media = env.media.clone();
    let q = sh_quote(&media);
    // The share's storage lives elsewhere; the watch folder is a bind mount
    // of it, so it can go away and come back with the same device.
    let store = env.dir.path().join("store");
    let store2 = env.dir.path().join("store2");
    let (s1, s2) = (sh_quote(&store), sh_quote(&store2));
    ns.sh(&format!(
        "mkdir -p {s1} {s2} && mount -t tmpfs -o size=200m tmpfs {s1} && mount -t tmpfs -o size=200m tmpfs {s2} && mount --bind {s1} {q}"
    ));
    let port = free_port();
    config(&env, &media, port);
    let d = Daemon::ready_in(&env, &ns);
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));

    let big = media.join("big.mp4");
    write_random(&ns.path(&big), 40 * MIB, 1);
    let mut files = vec![(big.clone(), sha256(&ns.path(&big)))];
    let video = wait_started(&env, &d, &big);
    // Three files that are still settling when the share goes.
    for i in 0..3 {
        let p = media.join(format!("new-{i}.mp4"));
        write_random(&ns.path(&p), MIB + i, 20 + i);
        files.push((p.clone(), sha256(&ns.path(&p))));
    }
    ns.sh(&format!("umount -l {q}"));
    let mut health = None;
    assert!(
        wait_until(WAIT, || {
            health = http_get(port, "/healthz");
            health
                .as_ref()
                .is_some_and(|(c, b)| *c == 503 && b.contains(media.to_str().unwrap()))
        }),
        "/healthz did not name the share: {health:?}\n{}",
        d.log()
    );
    assert!(
        wait_until(WAIT, || d
            .line_with(&["ERROR", "nothing is mounted there now"])
            .is_some()),
        "{}",
        d.log()
    );
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert!(metrics.contains("ingestd_watchers_ok 0"), "{metrics}");
    // Nothing became gone; the upload in flight pauses with its progress.
    assert!(
        wait_until(WAIT, || {
            let rows = env.status();
            row_of(&rows, &big).is_some_and(|r| r["state"] == "queued")
        }),
        "the upload did not pause: {:#?}\n{}",
        env.status(),
        d.log()
    );
    let rows = env.status();
    assert!(rows.iter().all(|r| r["state"] != "gone"), "{rows:#?}");
    assert_eq!(
        row_of(&rows, &big).unwrap()["video_id"].as_str(),
        Some(video.as_str())
    );

    // Back with the same device.
    ns.sh(&format!("mount --bind {s1} {q}"));
    let paths: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
    let rows = wait_done(&env, &d, &paths);
    assert_eq!(
        row_of(&rows, &big).unwrap()["video_id"].as_str(),
        Some(video.as_str())
    );
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));

    // Away again, and back from another device (a copy), then a new file.
    let errors_before = d.count("nothing is mounted there now");
    ns.sh(&format!("umount -l {q}"));
    assert!(
        wait_until(WAIT, || http_get(port, "/healthz")
            .is_some_and(|r| r.0 == 503)),
        "{}",
        d.log()
    );
    ns.sh(&format!("cp -a {s1}/. {s2}/ && mount --bind {s2} {q}"));
    assert!(
        wait_until(WAIT, || http_get(port, "/healthz")
            .is_some_and(|r| r.0 == 200)),
        "{}",
        d.log()
    );
    let late = media.join("late.mp4");
    let written = Instant::now();
    write_random(&ns.path(&late), MIB, 77);
    files.push((late.clone(), sha256(&ns.path(&late))));
    wait_done(&env, &d, &[late]);
    assert!(
        written.elapsed() < Duration::from_secs(20),
        "a file written after the remount took {:?}",
        written.elapsed()
    );
    assert_once(&env, &files, &d.log());
    assert!(orphans(&env).is_empty(), "{:#?}", orphans(&env));
    // One ERROR line per outage, not one per file.
    let errors = d
        .log()
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("nothing is mounted there now"))
        .count();
    assert_eq!(errors, errors_before + 1, "{}", d.log());
    stop_ok(d);
}

/// A plain (unmounted) watch folder, for the identity cases.
fn plain(env: &Env) -> Daemon {
    env.write_config(
        "8MiB",
        &format!(
            "\n[[watch]]\npath = {}\nsettle = \"1s\"\n",
            toml_path(&env.media)
        ),
    );
    Daemon::ready(env)
}

fn set_mtime(p: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn a_reused_name_or_a_patched_file_with_its_mtime_put_back_is_a_new_upload() {
    let env = Env::new();
    let d = plain(&env);
    let p = env.media.join("cam.mp4");
    write_random(&p, 2 * MIB, 1);
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    wait_done(&env, &d, std::slice::from_ref(&p));

    // The camera reuses the name: same size, same mtime, other bytes.
    std::fs::remove_file(&p).unwrap();
    write_random(&p, 2 * MIB, 2);
    set_mtime(&p, mtime);
    let second = sha256(&p);
    assert!(
        wait_until(WAIT, || env
            .videos()
            .iter()
            .any(|v| v.complete && v.sha256.as_deref() == Some(&second))),
        "a new recording under an old name was not uploaded:\n{}",
        d.log()
    );

    // Patched in place at its head, mtime put back (`touch -r`).
    {
        let mut f = std::fs::File::options().write(true).open(&p).unwrap();
        f.write_all(b"patched!").unwrap();
    }
    set_mtime(&p, mtime);
    let third = sha256(&p);
    assert!(
        wait_until(WAIT, || env
            .videos()
            .iter()
            .any(|v| v.complete && v.sha256.as_deref() == Some(&third))),
        "a patched file was not uploaded again:\n{}",
        d.log()
    );
    let videos = env.videos();
    let complete = videos
        .iter()
        .filter(|v| v.complete && titled(v, &p))
        .count();
    assert_eq!((complete, videos.len()), (3, 3), "{videos:#?}");
    stop_ok(d);
}

#[test]
fn a_rename_within_the_root_moves_the_row_and_sends_nothing() {
    let env = Env::new();
    let d = plain(&env);
    let a = env.media.join("take.mp4");
    write_random(&a, 3 * MIB, 4);
    let rows = wait_done(&env, &d, std::slice::from_ref(&a));
    let id = row_of(&rows, &a).unwrap()["id"].as_i64().unwrap();
    std::fs::create_dir(env.media.join("day1")).unwrap();
    let b = env.media.join("day1/renamed.mp4");
    std::fs::rename(&a, &b).unwrap();
    let mut rows = Vec::new();
    assert!(
        wait_until(WAIT, || {
            rows = env.status();
            row_of(&rows, &b).is_some_and(|r| r["id"].as_i64() == Some(id) && r["state"] == "done")
        }),
        "status does not show the row at its new path: {rows:#?}\n{}",
        d.log()
    );
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(env.videos().len(), 1);
    assert!(
        d.log().contains("file moved within the watch folder"),
        "{}",
        d.log()
    );
    stop_ok(d);
}

#[test]
fn a_root_removed_and_recreated_empty_marks_nothing_gone() {
    let env = Env::new();
    let port = free_port();
    env.write_config(
        "8MiB",
        &format!(
            "\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[[watch]]\npath = {}\nsettle = \"1s\"\n",
            toml_path(&env.media)
        ),
    );
    let d = Daemon::ready(&env);
    let a = env.media.join("a.mp4");
    write_random(&a, MIB, 1);
    wait_done(&env, &d, std::slice::from_ref(&a));
    // A file still settling when its root goes.
    write_random(&env.media.join("b.mp4"), MIB, 2);
    std::fs::remove_dir_all(&env.media).unwrap();
    assert!(
        wait_until(WAIT, || http_get(port, "/healthz")
            .is_some_and(|r| r.0 == 503 && r.1.contains("does not exist"))),
        "{}",
        d.log()
    );
    std::fs::create_dir(&env.media).unwrap();
    assert!(
        wait_until(WAIT, || http_get(port, "/healthz")
            .is_some_and(|r| r.0 == 200)),
        "{}",
        d.log()
    );
    let c = env.media.join("c.mp4");
    write_random(&c, MIB, 3);
    wait_done(&env, &d, std::slice::from_ref(&c));
    let rows = env.status();
    assert_eq!(row_of(&rows, &a).unwrap()["state"], "done");
    // b really went with its root (deleted with it): nothing else is gone.
    let gone: Vec<_> = rows.iter().filter(|r| r["state"] == "gone").collect();
    assert!(
        gone.iter()
            .all(|r| r["path"].as_str().unwrap().ends_with("b.mp4")),
        "{rows:#?}"
    );
    stop_ok(d);
}

#[test]
fn a_video_abandoned_mid_upload_is_listed_as_an_orphan_and_counted() {
    let env = Env::new();
    let port = free_port();
    config(&env, &env.media, port);
    let d = Daemon::ready(&env);
    let f = env.media.join("abandoned.mp4");
    write_random(&f, 40 * MIB, 3);
    let video = wait_started(&env, &d, &f);
    std::fs::remove_file(&f).unwrap();
    assert!(
        wait_until(WAIT, || row_of(&env.status(), &f)
            .is_some_and(|r| r["state"] == "gone")),
        "{}",
        d.log()
    );
    let listed = orphans(&env);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["video_id"].as_str(), Some(video.as_str()));
    assert_eq!(listed[0]["path"].as_str(), f.to_str());
    assert!(
        listed[0]["why"].as_str().unwrap().contains("unlinked"),
        "{listed:#?}"
    );
    let table = text(&env.run(&["status", "--orphans"]));
    assert!(
        table.contains(&video) && table.contains("1 orphan video"),
        "{table}"
    );
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert!(metrics.contains("ingestd_orphan_videos 1"), "{metrics}");
    stop_ok(d);
}

#[test]
fn retry_takes_a_gone_file_back_only_when_its_file_is_back_as_it_was() {
    use ingestd::journal::{FileIdentity, FileState, Journal};
    let env = Env::new();
    let f = env.file("back.mp4", 3 * MIB, 8);
    let id = {
        let mut j = Journal::open(&env.journal).unwrap();
        let meta = std::fs::metadata(&f).unwrap();
        let ident = FileIdentity::from_metadata(&env.media, Path::new("back.mp4"), &meta);
        let sample =
            ingestd::sample::Sample::of_file(&std::fs::File::open(&f).unwrap(), ident.size)
                .unwrap();
        let id = j.add_sampled(&ident, sample, FileState::Queued).unwrap().id;
        j.mark_gone(id, "the file vanished before it was uploaded")
            .unwrap();
        id
    };
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    // Changed meanwhile (same size, mtime put back): it stays gone.
    let keep = std::fs::read(&f).unwrap();
    write_random(&f, 3 * MIB, 9);
    set_mtime(&f, mtime);
    let out = env.run(&["retry", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("still gone") && text(&out).contains("other content"),
        "{}",
        text(&out)
    );
    // Back as it was: queued again.
    std::fs::write(&f, keep).unwrap();
    set_mtime(&f, mtime);
    let out = env.run(&["retry", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("queued again"), "{}", text(&out));
    let row = rows(&env).into_iter().find(|r| r.id == id).unwrap();
    assert_eq!(row.state, FileState::Queued);
}

#[test]
fn a_row_whose_root_is_no_longer_configured_or_mounted_is_never_marked_gone() {
    use ingestd::journal::{FileIdentity, FileState, Journal};
    let env = Env::new();
    let old_root = env.dir.path().join("old-share");
    {
        let mut j = Journal::open(&env.journal).unwrap();
        let ident = FileIdentity {
            root: old_root.clone(),
            rel_path: PathBuf::from("left.mp4"),
            size: 10,
            mtime_ns: 1_700_000_000_000_000_000,
            dev: 1,
            inode: 2,
            ctime_ns: None,
        };
        j.add_file(&ident, FileState::Queued).unwrap();
    }
    let d = plain(&env);
    let mut rows = Vec::new();
    assert!(
        wait_until(WAIT, || {
            rows = env.status();
            rows.first().is_some_and(|r| {
                r["state"] == "retrying"
                    && r["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("is unavailable"))
            })
        }),
        "{rows:#?}\n{}",
        d.log()
    );
    assert!(rows.iter().all(|r| r["state"] != "gone"), "{rows:#?}");
    stop_ok(d);
}
