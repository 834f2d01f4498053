//! The watch stage at library level: real temp dirs, a real journal, the
//! real watchers. Conditions are polled with deadlines, never slept on.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingestd::config::{AfterUpload, WatchMode, WatchSettings};
use ingestd::journal::{now_ms, FileIdentity, FileRow, FileState, Journal, JournalHandle};
use ingestd::watch::{
    self, after_upload, AfterUploadOutcome, ScanReport, WatchError, WatchOptions,
};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

struct World {
    dir: tempfile::TempDir,
    root: PathBuf,
    journal_path: PathBuf,
    journal: JournalHandle,
    work: Arc<Notify>,
}

impl World {
    fn new() -> World {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        fs::create_dir_all(&root).unwrap();
        let journal_path = dir.path().join("state/journal.db");
        let journal = JournalHandle::spawn(Journal::open(&journal_path).unwrap()).unwrap();
        World {
            dir,
            root,
            journal_path,
            journal,
            work: Arc::new(Notify::new()),
        }
    }

    /// A second handle on the same journal file, as a restarted daemon has.
    fn reopen(&mut self) {
        self.journal = JournalHandle::spawn(Journal::open(&self.journal_path).unwrap()).unwrap();
    }

    fn settings(&self, settle_ms: u64) -> WatchSettings {
        settings(&self.root, settle_ms)
    }

    async fn rows(&self) -> Vec<FileRow> {
        self.journal.call(|j| j.list(None)).await.unwrap()
    }

    /// Polls the journal until `pred` holds; panics with the rows if not in time.
    async fn wait_rows(&self, what: &str, pred: impl Fn(&[FileRow]) -> bool) -> Vec<FileRow> {
        let start = Instant::now();
        loop {
            let rows = self.rows().await;
            if pred(&rows) {
                return rows;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting for {what}; journal: {:#?}",
                    summary(&rows)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts the stage; returns once its first scan is reported.
    async fn start(&self, watches: Vec<WatchSettings>, opts: WatchOptions) -> Running {
        start(watches, self.journal.clone(), self.work.clone(), opts).await
    }

    /// Drives a row to `done` as a worker would.
    async fn finish_upload(&self, id: i64, video_json: Option<&'static str>) -> FileRow {
        self.journal
            .call(move |j| {
                let claimed = j.claim_next(now_ms(), Duration::from_secs(1), Some(&[id]))?;
                assert!(claimed.is_some(), "file {id} was not claimable");
                j.mark_done(id, Some("vi4k2Example"), video_json, None)?;
                Ok(j.get(id)?.unwrap())
            })
            .await
            .unwrap()
    }
}

fn settings(root: &Path, settle_ms: u64) -> WatchSettings {
    WatchSettings {
        path: root.to_path_buf(),
        recursive: true,
        include: vec![],
        exclude: vec![],
        settle: Duration::from_millis(settle_ms),
        mode: WatchMode::Events,
        poll_interval: Duration::from_millis(200),
        after_upload: AfterUpload::Keep,
        follow_symlinks: false,
        sidecar: true,
        ..WatchSettings::new(root)
    }
}

fn opts() -> WatchOptions {
    WatchOptions {
        // Long: the tests prove events (or polling) do the work.
        reconcile_every: Duration::from_secs(3600),
        retry_unavailable_every: Duration::from_millis(200),
        sidecars: true,
        ready: None,
        ..WatchOptions::default()
    }
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<Result<(), WatchError>>,
    first: ScanReport,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the watch stage did not stop on cancel")
            .unwrap()
            .unwrap();
    }
}

async fn start(
    watches: Vec<WatchSettings>,
    journal: JournalHandle,
    work: Arc<Notify>,
    mut opts: WatchOptions,
) -> Running {
    let (tx, rx) = oneshot::channel();
    opts.ready = Some(tx);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(watch::run(watches, journal, work, opts, cancel.clone()));
    let first = tokio::time::timeout(DEADLINE, rx)
        .await
        .expect("no ready signal")
        .expect("the stage ended before its first scan");
    Running {
        cancel,
        task,
        first,
    }
}

fn summary(rows: &[FileRow]) -> Vec<(i64, String, u64, FileState)> {
    rows.iter()
        .map(|r| {
            (
                r.id,
                r.identity.rel_path.to_string_lossy().into_owned(),
                r.identity.size,
                r.state,
            )
        })
        .collect()
}

fn at<'a>(rows: &'a [FileRow], rel: &str) -> Vec<&'a FileRow> {
    rows.iter()
        .filter(|r| r.identity.rel_path == Path::new(rel))
        .collect()
}

fn queued(rows: &[FileRow], rel: &str) -> bool {
    at(rows, rel).iter().any(|r| r.state == FileState::Queued)
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(path, bytes).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_written_file_is_queued_once_after_it_stops_changing() {
    let w = World::new();
    let running = w.start(vec![w.settings(1000)], opts()).await;
    let path = w.root.join("slow.mp4");
    let mut f = fs::File::create(&path).unwrap();
    let mut last_write = Instant::now();
    for _ in 0..10 {
        f.write_all(&[7u8; 4096]).unwrap();
        f.flush().unwrap();
        last_write = Instant::now();
        // The writer's pace, not a wait for the code under test.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rows = w.rows().await;
        assert!(
            !queued(&rows, "slow.mp4"),
            "queued while still being written: {:?}",
            summary(&rows)
        );
    }
    drop(f);
    let rows = w
        .wait_rows("slow.mp4 queued", |r| queued(r, "slow.mp4"))
        .await;
    let settled_after = last_write.elapsed();
    assert!(
        settled_after >= Duration::from_millis(900),
        "queued {settled_after:?} after the last write, before the 1 s settle"
    );
    let mine = at(&rows, "slow.mp4");
    assert_eq!(
        mine.len(),
        1,
        "one row per file, not per growth step: {:?}",
        summary(&rows)
    );
    assert_eq!(mine[0].identity.size, 40960);
    assert!(mine[0].identity.matches(&fs::metadata(&path).unwrap()));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_file_renamed_to_mp4_is_queued_once() {
    let w = World::new();
    let running = w.start(vec![w.settings(300)], opts()).await;
    let part = w.root.join("clip.mp4.part");
    write(&part, &[1u8; 10_000]);
    fs::rename(&part, w.root.join("clip.mp4")).unwrap();
    let rows = w
        .wait_rows("clip.mp4 queued", |r| queued(r, "clip.mp4"))
        .await;
    assert_eq!(rows.len(), 1, "{:?}", summary(&rows));
    assert_eq!(rows[0].identity.size, 10_000);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_new_subdirectories_are_queued() {
    let w = World::new();
    let running = w.start(vec![w.settings(300)], opts()).await;
    // A directory created in place, then filled.
    write(&w.root.join("day1/cam1/a.mp4"), b"aaaa");
    // A directory filled elsewhere, then moved in: its files were there
    // before any watch on it could exist.
    let staging = w.dir.path().join("staging");
    write(&staging.join("b.mp4"), b"bbbb");
    write(&staging.join("deep/c.mp4"), b"cccc");
    fs::rename(&staging, w.root.join("day2")).unwrap();
    // And a file in a directory created right after the move.
    write(&w.root.join("day2/deep/later/d.mp4"), b"dddd");
    let rows = w
        .wait_rows("all four queued", |r| {
            [
                "day1/cam1/a.mp4",
                "day2/b.mp4",
                "day2/deep/c.mp4",
                "day2/deep/later/d.mp4",
            ]
            .iter()
            .all(|p| queued(r, p))
        })
        .await;
    assert_eq!(rows.len(), 4, "{:?}", summary(&rows));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_present_before_start_are_queued_and_reported() {
    let w = World::new();
    write(&w.root.join("a.mp4"), b"a");
    write(&w.root.join("sub/b.mp4"), b"b");
    let running = w.start(vec![w.settings(200)], opts()).await;
    assert_eq!(running.first.files, 2);
    assert_eq!(running.first.journaled, 2);
    assert!(running.first.unavailable.is_empty());
    w.wait_rows("both queued", |r| {
        queued(r, "a.mp4") && queued(r, "sub/b.mp4")
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_journal_done_files_again() {
    let mut w = World::new();
    write(&w.root.join("a.mp4"), b"uploaded once");
    let running = w.start(vec![w.settings(200)], opts()).await;
    let rows = w.wait_rows("a.mp4 queued", |r| queued(r, "a.mp4")).await;
    w.finish_upload(rows[0].id, None).await;
    running.stop().await;

    w.reopen();
    let running = w.start(vec![w.settings(200)], opts()).await;
    assert_eq!(running.first.already_done, 1);
    assert_eq!(running.first.journaled, 0);
    // A new file proves the stage is live; the done one stays alone.
    write(&w.root.join("b.mp4"), b"new");
    let rows = w.wait_rows("b.mp4 queued", |r| queued(r, "b.mp4")).await;
    let a = at(&rows, "a.mp4");
    assert_eq!(a.len(), 1, "{:?}", summary(&rows));
    assert_eq!(a[0].state, FileState::Done);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_and_excluded_names_are_never_journaled() {
    let w = World::new();
    // No `include` here: only the built-in list and `exclude` keep these out.
    let names = [
        ".hidden.mp4",
        "x.mp4.part",
        "x.partial",
        "x.tmp",
        "x.crdownload",
        ".x.mp4.swp",
        "x.swp",
        "~x.mp4",
        "._x.mp4",
        ".DS_Store",
        "Thumbs.db",
        "@eaDir/t.mp4",
        "sub/@eaDir/t.mp4",
        ".trash/x.mp4",
        "notes.txt",
        "a-skip-me.mp4",
        "clip.mp4.ingestd.json",
        "empty.mp4",
    ];
    let create = |prefix: &str| {
        for n in names {
            let bytes: &[u8] = if n == "empty.mp4" { b"" } else { b"data" };
            write(&w.root.join(prefix).join(n), bytes);
        }
    };
    create("before");
    write(&w.root.join("before/ok.mkv"), b"ok");
    write(&w.root.join("before/sub/OK2.MP4"), b"ok");
    let mut s = w.settings(200);
    s.exclude = vec!["*skip*".into(), "*.txt".into()];
    // A second folder with `include`: it matches names in subfolders too.
    let only_mp4 = w.dir.path().join("only-mp4");
    write(&only_mp4.join("a.mkv"), b"not included");
    write(&only_mp4.join("deep/er/b.MP4"), b"included");
    let mut s2 = settings(&only_mp4, 200);
    s2.include = vec!["*.mp4".into()];
    let running = w.start(vec![s, s2], opts()).await;
    create("after");
    write(&only_mp4.join("c.mov"), b"not included");
    write(&w.root.join("after/ok.mp4"), b"ok");
    write(&only_mp4.join("d.mp4"), b"included");
    let wanted = [
        "before/ok.mkv",
        "before/sub/OK2.MP4",
        "after/ok.mp4",
        "deep/er/b.MP4",
        "d.mp4",
    ];
    let rows = w
        .wait_rows("the wanted files queued", |r| {
            wanted.iter().all(|p| queued(r, p))
        })
        .await;
    assert_eq!(
        summary(&rows).len(),
        wanted.len(),
        "only the wanted files are journaled: {:?}",
        summary(&rows)
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_finds_new_and_moved_in_files() {
    let w = World::new();
    let mut s = w.settings(300);
    s.mode = WatchMode::Poll;
    let running = w.start(vec![s], opts()).await;
    write(&w.root.join("polled.mp4"), b"polled");
    let staging = w.dir.path().join("staging");
    write(&staging.join("moved.mp4"), b"moved");
    fs::rename(&staging, w.root.join("dir")).unwrap();
    let rows = w
        .wait_rows("polled files queued", |r| {
            queued(r, "polled.mp4") && queued(r, "dir/moved.mp4")
        })
        .await;
    assert_eq!(rows.len(), 2, "{:?}", summary(&rows));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_before_upload_ends_gone() {
    let w = World::new();
    let running = w.start(vec![w.settings(1500)], opts()).await;
    // Deleted while settling.
    write(&w.root.join("short.mp4"), b"short-lived");
    w.wait_rows("short.mp4 settling", |r| {
        at(r, "short.mp4")
            .iter()
            .any(|r| r.state == FileState::Settling)
    })
    .await;
    fs::remove_file(w.root.join("short.mp4")).unwrap();
    // Deleted once queued.
    write(&w.root.join("queued.mp4"), b"queued then deleted");
    w.wait_rows("queued.mp4 queued", |r| queued(r, "queued.mp4"))
        .await;
    fs::remove_file(w.root.join("queued.mp4")).unwrap();
    let rows = w
        .wait_rows("both gone", |r| {
            r.len() == 2 && r.iter().all(|r| r.state == FileState::Gone)
        })
        .await;
    assert!(rows.iter().all(|r| r.last_error.is_some()));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_after_it_was_queued_is_a_new_file() {
    let w = World::new();
    let running = w.start(vec![w.settings(300)], opts()).await;
    write(&w.root.join("a.mp4"), b"first");
    w.wait_rows("a.mp4 queued", |r| queued(r, "a.mp4")).await;
    write(&w.root.join("a.mp4"), b"second, longer");
    let rows = w
        .wait_rows("old gone, new queued", |r| {
            let a = at(r, "a.mp4");
            a.len() == 2
                && a.iter()
                    .any(|r| r.state == FileState::Gone && r.identity.size == 5)
                && a.iter()
                    .any(|r| r.state == FileState::Queued && r.identity.size == 14)
        })
        .await;
    assert_eq!(rows.len(), 2);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_and_settle_queues_what_is_ready_and_names_the_rest() {
    let w = World::new();
    write(&w.root.join("a.mp4"), b"a");
    write(&w.root.join("b/c.mp4"), b"c");
    // One file still being written while the scan runs.
    let growing = w.root.join("growing.mp4");
    write(&growing, b"start");
    let writer_path = growing.clone();
    let writer = std::thread::spawn(move || {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(writer_path)
            .unwrap();
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(100));
            f.write_all(&[b'x'; 1000]).unwrap();
        }
    });
    let report = watch::scan_and_settle(
        &[w.settings(400)],
        w.journal.clone(),
        w.work.clone(),
        opts(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    writer.join().unwrap();
    assert_eq!(report.queued, 2, "{report:?}");
    assert_eq!(report.not_ready.len(), 1, "{report:?}");
    assert!(
        report.not_ready[0].path.ends_with("growing.mp4")
            && report.not_ready[0].why.contains("still being written"),
        "{report:?}"
    );
    let rows = w.rows().await;
    let g = at(&rows, "growing.mp4");
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].state, FileState::Settling, "{:?}", summary(&rows));
    assert!(
        rows.iter()
            .filter(|r| !r.identity.rel_path.ends_with("growing.mp4"))
            .all(|r| r.state == FileState::Queued),
        "{:?}",
        summary(&rows)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_20000_journaled_files_is_fast() {
    let w = World::new();
    let n = 20_000;
    let mut identities = Vec::with_capacity(n);
    for i in 0..n {
        let rel = PathBuf::from(format!("d{:02}/f{i:05}.mp4", i % 20));
        let path = w.root.join(&rel);
        if i < 20 {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        fs::write(&path, b"x").unwrap();
        identities.push(FileIdentity::from_metadata(
            &w.root,
            &rel,
            &fs::metadata(&path).unwrap(),
        ));
    }
    w.journal
        .call(move |j| j.add_files(&identities, FileState::Done))
        .await
        .unwrap();
    let started = Instant::now();
    let report = watch::scan_and_settle(
        &[w.settings(200)],
        w.journal.clone(),
        w.work.clone(),
        WatchOptions {
            sidecars: false,
            ..opts()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    println!("scan of {n} journaled files: {elapsed:?} ({report:?})");
    assert_eq!(report.files, n);
    assert_eq!(report.already_done, n);
    assert_eq!(report.journaled, 0);
    assert!(elapsed < Duration::from_secs(20), "too slow: {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_folder_is_named_and_retried_while_others_work() {
    let w = World::new();
    let missing = w.dir.path().join("not-yet");
    let running = w
        .start(vec![w.settings(200), settings(&missing, 200)], opts())
        .await;
    assert_eq!(running.first.unavailable.len(), 1);
    let err = running.first.unavailable[0].to_string();
    assert!(
        matches!(running.first.unavailable[0], WatchError::Missing { .. }),
        "{err}"
    );
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");
    write(&w.root.join("a.mp4"), b"a");
    w.wait_rows("a.mp4 queued", |r| queued(r, "a.mp4")).await;
    // The folder appears (already holding a file) and is picked up.
    write(&missing.join("b.mp4"), b"b");
    w.wait_rows("b.mp4 queued", |r| queued(r, "b.mp4")).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_that_is_a_file_is_reported() {
    let w = World::new();
    let file = w.dir.path().join("a-file");
    write(&file, b"not a dir");
    let report = watch::scan_and_settle(
        &[settings(&file, 100), w.settings(100)],
        w.journal.clone(),
        w.work.clone(),
        opts(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.folders, 1);
    assert!(
        matches!(
            report.unavailable.as_slice(),
            [WatchError::NotADirectory { .. }]
        ),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_newlines_and_invalid_utf8_are_journaled_as_bytes() {
    let w = World::new();
    let odd = OsStr::from_bytes(b"caf\xe9\nline.mp4");
    write(&w.root.join(odd), b"odd");
    let running = w.start(vec![w.settings(200)], opts()).await;
    let odd2 = OsStr::from_bytes(b"new\xff\xfe.mp4");
    write(&w.root.join(odd2), b"odd2");
    let rows = w
        .wait_rows("both queued", |r| {
            r.len() == 2 && r.iter().all(|r| r.state == FileState::Queued)
        })
        .await;
    let mut names: Vec<&[u8]> = rows
        .iter()
        .map(|r| r.identity.rel_path.as_os_str().as_bytes())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![b"caf\xe9\nline.mp4".as_slice(), b"new\xff\xfe.mp4"]
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_followed_only_inside_the_root_and_loops_end() {
    let w = World::new();
    write(&w.root.join("real.mp4"), b"real");
    let outside = w.dir.path().join("outside");
    write(&outside.join("secret.mp4"), b"secret");
    std::os::unix::fs::symlink(&outside, w.root.join("out")).unwrap();
    std::os::unix::fs::symlink(&w.root, w.root.join("loop")).unwrap();
    std::os::unix::fs::symlink(w.root.join("real.mp4"), w.root.join("link.mp4")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.mp4"), w.root.join("leak.mp4")).unwrap();

    let plain = watch::scan_and_settle(
        &[w.settings(100)],
        w.journal.clone(),
        w.work.clone(),
        opts(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(plain.files, 1, "{plain:?}");

    let mut s = w.settings(100);
    s.follow_symlinks = true;
    let followed = tokio::time::timeout(
        DEADLINE,
        watch::scan_and_settle(
            &[s],
            w.journal.clone(),
            w.work.clone(),
            opts(),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("a symlink loop must not hang the scan")
    .unwrap();
    let rows = w.rows().await;
    let mut names: Vec<String> = summary(&rows).into_iter().map(|r| r.1).collect();
    names.sort();
    assert_eq!(names, vec!["link.mp4", "real.mp4"], "{followed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_applies_a_move_interrupted_by_a_crash() {
    let w = World::new();
    let mut s = w.settings(100);
    s.after_upload = AfterUpload::Move(PathBuf::from("done"));
    write(&w.root.join("day/a.mp4"), b"uploaded, not moved yet");
    let first = watch::scan_and_settle(
        &[s.clone()],
        w.journal.clone(),
        w.work.clone(),
        opts(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(first.queued, 1);
    let id = w.rows().await[0].id;
    w.finish_upload(id, Some(r#"{"videoId":"vi4k2Example","assets":{"player":"https://embed.api.video/vod/vi4k2Example"}}"#))
        .await;
    // The process died before after_upload ran: the next scan does it.
    let second = watch::scan_and_settle(
        &[s.clone()],
        w.journal.clone(),
        w.work.clone(),
        opts(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(second.after_upload, 1, "{second:?}");
    assert!(!w.root.join("day/a.mp4").exists());
    let moved = w.root.join("done/day/a.mp4");
    assert_eq!(fs::read(&moved).unwrap(), b"uploaded, not moved yet");
    let side: serde_json::Value =
        serde_json::from_slice(&fs::read(w.root.join("done/day/a.mp4.ingestd.json")).unwrap())
            .unwrap();
    assert_eq!(side["videoId"], "vi4k2Example");
    // move_to inside the root is not watched: nothing new is journaled.
    let third = watch::scan_and_settle(
        &[s],
        w.journal.clone(),
        w.work.clone(),
        opts(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!((third.files, third.journaled), (0, 0), "{third:?}");
    assert_eq!(w.rows().await.len(), 1);
}

/// A done row for a file written at `rel` under the world's root.
async fn done_file(
    w: &World,
    rel: &str,
    bytes: &[u8],
    video_json: Option<&'static str>,
) -> FileRow {
    let path = w.root.join(rel);
    write(&path, bytes);
    let identity = FileIdentity::from_metadata(
        &watch::journal_root(&w.root),
        Path::new(rel),
        &fs::metadata(&path).unwrap(),
    );
    let added = w
        .journal
        .call(move |j| j.add_file(&identity, FileState::Queued))
        .await
        .unwrap();
    w.finish_upload(added.id, video_json).await
}

const VIDEO: &str = r#"{"videoId":"vi4k2Example","assets":{"player":"https://embed.api.video/vod/vi4k2Example","mp4":"https://vod.api.video/x.mp4"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_upload_delete() {
    let w = World::new();
    let row = done_file(&w, "a.mp4", b"bytes", None).await;
    let mut s = w.settings(100);
    s.after_upload = AfterUpload::Delete;
    let out = after_upload(&s, &row, None, None, true).unwrap();
    assert_eq!(out, AfterUploadOutcome::Deleted { path: row.path() });
    assert!(!row.path().exists());
    // Again: already gone, nothing to do.
    let out = after_upload(&s, &row, None, None, true).unwrap();
    assert!(
        matches!(out, AfterUploadOutcome::Vanished { .. }),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_upload_move_keeps_the_relative_path_and_writes_a_sidecar() {
    let w = World::new();
    let body = b"the video bytes".to_vec();
    let row = done_file(&w, "day1/cam/a.mp4", &body, Some(VIDEO)).await;
    let done = w.dir.path().join("archive");
    let mut s = w.settings(100);
    s.after_upload = AfterUpload::Move(done.clone());
    let out = after_upload(&s, &row, Some(VIDEO), None, true).unwrap();
    let to = done.join("day1/cam/a.mp4");
    let side = done.join("day1/cam/a.mp4.ingestd.json");
    assert_eq!(
        out,
        AfterUploadOutcome::Moved {
            from: row.path(),
            to: to.clone(),
            sidecar: Some(side.clone()),
        }
    );
    assert!(!row.path().exists());
    assert_eq!(fs::read(&to).unwrap(), body);
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&side).unwrap()).unwrap();
    assert_eq!(json["videoId"], "vi4k2Example");
    assert_eq!(json["player"], "https://embed.api.video/vod/vi4k2Example");
    assert_eq!(json["size"], body.len() as u64);
    assert_eq!(json["sha256"], sha256_hex(&body));
    assert!(
        json["uploadedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{json}"
    );
    // No temp file left behind.
    let names: Vec<_> = fs::read_dir(done.join("day1/cam")).unwrap().collect();
    assert_eq!(names.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_upload_move_never_overwrites() {
    let w = World::new();
    let done = w.dir.path().join("archive");
    write(&done.join("a.mp4"), b"someone else's");
    write(
        &done.join("a (1).mp4.ingestd.json"),
        b"{\"videoId\":\"other\"}",
    );
    let row = done_file(&w, "a.mp4", b"mine", None).await;
    let mut s = w.settings(100);
    s.after_upload = AfterUpload::Move(done.clone());
    let out = after_upload(&s, &row, None, None, true).unwrap();
    let AfterUploadOutcome::Moved { to, .. } = out else {
        panic!("{out:?}");
    };
    // `a (1)` has a sidecar that is not ours: taken too.
    assert_eq!(to, done.join("a (2).mp4"));
    assert_eq!(fs::read(done.join("a.mp4")).unwrap(), b"someone else's");
    assert_eq!(fs::read(&to).unwrap(), b"mine");
    assert_eq!(
        fs::read(done.join("a (1).mp4.ingestd.json")).unwrap(),
        b"{\"videoId\":\"other\"}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_upload_keep_writes_the_sidecar_atomically_beside_the_file() {
    let w = World::new();
    let row = done_file(&w, "a.mp4", b"kept", Some(VIDEO)).await;
    let s = w.settings(100);
    let out = after_upload(&s, &row, Some(VIDEO), None, true).unwrap();
    let side = w.root.join("a.mp4.ingestd.json");
    assert_eq!(
        out,
        AfterUploadOutcome::Kept {
            sidecar: Some(side.clone())
        }
    );
    assert_eq!(fs::read(row.path()).unwrap(), b"kept");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&side).unwrap()).unwrap();
    assert_eq!(json["sha256"], sha256_hex(b"kept"));
    assert_eq!(fs::read_dir(&w.root).unwrap().count(), 2);
    // Without sidecars, keep does nothing at all.
    fs::remove_file(&side).unwrap();
    let out = after_upload(&s, &row, Some(VIDEO), None, false).unwrap();
    assert_eq!(out, AfterUploadOutcome::Kept { sidecar: None });
    assert!(!side.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_upload_never_touches_a_file_not_done_or_changed() {
    let w = World::new();
    write(&w.root.join("q.mp4"), b"queued");
    let identity = FileIdentity::from_metadata(
        &watch::journal_root(&w.root),
        Path::new("q.mp4"),
        &fs::metadata(w.root.join("q.mp4")).unwrap(),
    );
    let id = w
        .journal
        .call(move |j| j.add_file(&identity, FileState::Queued))
        .await
        .unwrap()
        .id;
    let queued_row = w.journal.call(move |j| j.get(id)).await.unwrap().unwrap();
    let mut s = w.settings(100);
    s.after_upload = AfterUpload::Delete;
    let err = after_upload(&s, &queued_row, None, None, true).unwrap_err();
    assert!(matches!(err, WatchError::NotDone { .. }), "{err}");
    assert_eq!(fs::read(w.root.join("q.mp4")).unwrap(), b"queued");

    // Done, but rewritten since: left alone by delete and by move.
    let row = done_file(&w, "c.mp4", b"uploaded", None).await;
    write(&row.path(), b"rewritten after upload");
    let out = after_upload(&s, &row, None, None, true).unwrap();
    assert!(matches!(out, AfterUploadOutcome::Changed { .. }), "{out:?}");
    s.after_upload = AfterUpload::Move(w.dir.path().join("archive"));
    let out = after_upload(&s, &row, None, None, true).unwrap();
    assert!(matches!(out, AfterUploadOutcome::Changed { .. }), "{out:?}");
    assert_eq!(fs::read(row.path()).unwrap(), b"rewritten after upload");
    assert!(!w.dir.path().join("archive/c.mp4").exists());

    // A row of another folder is refused.
    let other = settings(&w.dir.path().join("elsewhere"), 100);
    let err = after_upload(&other, &row, None, None, true).unwrap_err();
    assert!(matches!(err, WatchError::NotInFolder { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_marks_gone_what_vanished_while_nobody_watched() {
    let w = World::new();
    write(&w.root.join("a.mp4"), b"a");
    write(&w.root.join("b.mp4"), b"b");
    let watches = [w.settings(100)];
    let scan = || {
        watch::scan_and_settle(
            &watches,
            w.journal.clone(),
            w.work.clone(),
            opts(),
            CancellationToken::new(),
        )
    };
    assert_eq!(scan().await.unwrap().queued, 2);
    fs::remove_file(w.root.join("a.mp4")).unwrap();
    let report = scan().await.unwrap();
    assert_eq!((report.gone, report.journaled), (1, 0), "{report:?}");
    let rows = w.rows().await;
    assert_eq!(at(&rows, "a.mp4")[0].state, FileState::Gone);
    assert_eq!(at(&rows, "b.mp4")[0].state, FileState::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_waits_for_bytes() {
    let w = World::new();
    write(&w.root.join("placeholder.mp4"), b"");
    let running = w.start(vec![w.settings(200)], opts()).await;
    assert_eq!((running.first.files, running.first.journaled), (1, 0));
    // A later file proves the stage is live and the empty one was skipped.
    write(&w.root.join("other.mp4"), b"x");
    let rows = w
        .wait_rows("other.mp4 queued", |r| queued(r, "other.mp4"))
        .await;
    assert_eq!(rows.len(), 1, "{:?}", summary(&rows));
    fs::write(w.root.join("placeholder.mp4"), b"now it has bytes").unwrap();
    let rows = w
        .wait_rows("placeholder.mp4 queued", |r| queued(r, "placeholder.mp4"))
        .await;
    assert_eq!(at(&rows, "placeholder.mp4")[0].identity.size, 16);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_replaced_under_the_same_name_is_watched_again() {
    let w = World::new();
    write(&w.root.join("day/a.mp4"), b"a");
    let running = w.start(vec![w.settings(200)], opts()).await;
    w.wait_rows("a.mp4 queued", |r| queued(r, "day/a.mp4"))
        .await;
    fs::remove_dir_all(w.root.join("day")).unwrap();
    fs::create_dir(w.root.join("day")).unwrap();
    write(&w.root.join("day/b.mp4"), b"b");
    // A file written a moment later needs the new directory's own watch.
    w.wait_rows("b.mp4 queued", |r| queued(r, "day/b.mp4"))
        .await;
    write(&w.root.join("day/c.mp4"), b"c");
    let rows = w
        .wait_rows("c.mp4 queued and a.mp4 gone", |r| {
            queued(r, "day/c.mp4") && at(r, "day/a.mp4")[0].state == FileState::Gone
        })
        .await;
    assert_eq!(rows.len(), 3, "{:?}", summary(&rows));
    running.stop().await;
}
