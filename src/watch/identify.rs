//! Which journal row a file on disk is: the rules of content identity.
//!
//! A file is its root, relative path, size, mtime and content sample.
//! Device, inode and ctime are hints: when they all match, the file is
//! certainly the row's; when they differ (a remount, a restore, a `touch -r`
//! after an edit), the sample decides, and the row's hints follow. A file at
//! a new path with the size, mtime and sample of a row whose own path is
//! empty now is that row's file, moved. Pure: the sampling and the looks at
//! the disk are the caller's closures, so the rules are unit-tested.

use std::io;
use std::time::Duration;

use crate::config::ModifyWindow;
use crate::journal::{FileIdentity, FileRow, FileState};
use crate::sample::Sample;

/// When two mtimes are the same file's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MtimeRule {
    /// At most this far apart (ns).
    window_ns: i64,
    /// Also equal when one has no fraction of a second and both agree to
    /// the second (one went through a filesystem that keeps seconds only).
    whole_seconds: bool,
}

const NS: i64 = 1_000_000_000;

impl MtimeRule {
    /// The rule of a folder: its `modify_window`, and for `auto` the
    /// granularity of the filesystem it is on.
    pub(crate) fn new(window: ModifyWindow, granularity: Option<Duration>) -> MtimeRule {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match window {
            ModifyWindow::Exactly(d) => MtimeRule {
                window_ns: ns(d),
                whole_seconds: false,
            },
            ModifyWindow::Auto => MtimeRule {
                window_ns: granularity.map_or(0, ns),
                whole_seconds: true,
            },
        }
    }

    pub(crate) fn exact() -> MtimeRule {
        MtimeRule {
            window_ns: 0,
            whole_seconds: false,
        }
    }

    pub(crate) fn same(&self, a: i64, b: i64) -> bool {
        if a.abs_diff(b) <= self.window_ns.unsigned_abs() {
            return true;
        }
        self.whole_seconds
            && (a.rem_euclid(NS) == 0 || b.rem_euclid(NS) == 0)
            && a.div_euclid(NS) == b.div_euclid(NS)
    }
}

/// What a file on disk is to the rows journaled at its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// This row, certainly (every hint matches).
    Same(usize),
    /// This row: same size, mtime and content under new hints (a remount,
    /// a restore). Its hints follow; `Some` sample when the row had none.
    Reidentified(usize, Option<Sample>),
    /// The settling row at this path: it follows the file, still changing.
    Follow(usize),
    /// None of them.
    New,
}

/// Lazily computed sample of one file: read at most once.
pub(crate) struct Lazy<'a> {
    value: Option<io::Result<Sample>>,
    compute: &'a mut dyn FnMut() -> io::Result<Sample>,
}

impl<'a> Lazy<'a> {
    pub(crate) fn new(compute: &'a mut dyn FnMut() -> io::Result<Sample>) -> Lazy<'a> {
        Lazy {
            value: None,
            compute,
        }
    }

    fn get(&mut self) -> Result<Sample, io::ErrorKind> {
        let compute = &mut self.compute;
        match self.value.get_or_insert_with(compute) {
            Ok(s) => Ok(*s),
            Err(e) => Err(e.kind()),
        }
    }
}

/// Which of `rows` (the rows at the file's path that no other file claimed)
/// `file` is. Live rows are preferred to `gone` ones, the newest first.
/// A failed sample makes the row unknown (`Err`): leave it as it is.
pub(crate) fn identify(
    file: &FileIdentity,
    rows: &[(usize, &FileRow)],
    rule: MtimeRule,
    sample: &mut Lazy<'_>,
) -> Result<Found, io::ErrorKind> {
    let mut ordered: Vec<&(usize, &FileRow)> = rows.iter().collect();
    // Live before gone, then newest first.
    ordered.sort_by_key(|(_, r)| (r.state == FileState::Gone, std::cmp::Reverse(r.id)));
    if let Some((i, _)) = ordered.iter().find(|(_, r)| r.identity.same_hints(file)) {
        return Ok(Found::Same(*i));
    }
    let alike = ordered.iter().filter(|(_, r)| {
        r.identity.size == file.size && rule.same(r.identity.mtime_ns, file.mtime_ns)
    });
    for (i, row) in alike {
        if row.state == FileState::Settling {
            return Ok(Found::Follow(*i));
        }
        match row.sample {
            Some(stored) if stored == sample.get()? => return Ok(Found::Reidentified(*i, None)),
            Some(_) => {}
            // Written by an older ingestd, or gone while still settling:
            // path, size and mtime decide, as they did before samples.
            None => return Ok(Found::Reidentified(*i, sample.get().ok())),
        }
    }
    Ok(ordered
        .iter()
        .find(|(_, r)| r.state == FileState::Settling)
        .map_or(Found::New, |(i, _)| Found::Follow(*i)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::path::PathBuf;

    pub(in crate::watch) fn ident(name: &str, size: u64, inode: u64) -> FileIdentity {
        FileIdentity {
            root: PathBuf::from("/r"),
            rel_path: PathBuf::from(name),
            size,
            mtime_ns: 5 * NS,
            dev: 1,
            inode,
            ctime_ns: Some(9),
        }
    }

    pub(in crate::watch) fn row(id: i64, identity: FileIdentity, state: FileState) -> FileRow {
        FileRow {
            id,
            identity,
            state,
            chunk_size: None,
            bytes_uploaded: 0,
            video_id: None,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
            created_at: 0,
            updated_at: 0,
            started_at: None,
            done_at: None,
            sends_in_doubt: 0,
            sample: (state != FileState::Settling).then_some(Sample([id as u8; 16])),
        }
    }

    fn run(file: &FileIdentity, rows: &[FileRow], disk: Sample) -> (Found, usize) {
        let mut reads = 0;
        let mut compute = || {
            reads += 1;
            Ok(disk)
        };
        let mut lazy = Lazy::new(&mut compute);
        let indexed: Vec<(usize, &FileRow)> = rows.iter().enumerate().collect();
        let found = identify(file, &indexed, MtimeRule::exact(), &mut lazy).unwrap();
        drop(lazy);
        (found, reads)
    }

    #[test]
    fn equal_hints_are_certain_and_cost_no_read() {
        let rows = [row(1, ident("a", 10, 7), FileState::Done)];
        assert_eq!(
            run(&ident("a", 10, 7), &rows, Sample([0; 16])),
            (Found::Same(0), 0)
        );
    }

    #[test]
    fn new_hints_with_the_same_sample_are_the_same_file_and_another_sample_is_not() {
        let rows = [row(1, ident("a", 10, 7), FileState::Done)];
        let mut remounted = ident("a", 10, 99);
        remounted.dev = 2;
        assert_eq!(
            run(&remounted, &rows, Sample([1; 16])),
            (Found::Reidentified(0, None), 1)
        );
        // A camera reusing the name: same size and mtime, other content.
        assert_eq!(run(&remounted, &rows, Sample([2; 16])), (Found::New, 1));
        // Patched in place with the mtime put back: same inode, new ctime.
        let mut patched = ident("a", 10, 7);
        patched.ctime_ns = Some(10);
        assert_eq!(run(&patched, &rows, Sample([2; 16])), (Found::New, 1));
    }

    #[test]
    fn live_rows_win_over_gone_ones_and_a_gone_row_can_be_found_again() {
        let rows = [
            row(1, ident("a", 10, 7), FileState::Gone),
            row(2, ident("a", 10, 7), FileState::Queued),
        ];
        assert_eq!(
            run(&ident("a", 10, 7), &rows, Sample([0; 16])).0,
            Found::Same(1)
        );
        let rows = [row(1, ident("a", 10, 7), FileState::Gone)];
        let mut back = ident("a", 10, 8);
        back.dev = 3;
        assert_eq!(
            run(&back, &rows, Sample([1; 16])).0,
            Found::Reidentified(0, None)
        );
    }

    #[test]
    fn settling_rows_follow_and_rows_without_a_sample_are_judged_on_path_size_and_mtime() {
        let rows = [row(1, ident("a", 10, 7), FileState::Settling)];
        assert_eq!(
            run(&ident("a", 20, 7), &rows, Sample([0; 16])),
            (Found::Follow(0), 0)
        );
        let mut legacy = row(1, ident("a", 10, 7), FileState::Done);
        legacy.sample = None;
        legacy.identity.ctime_ns = None;
        let mut restored = ident("a", 10, 70);
        restored.dev = 5;
        assert_eq!(
            run(&restored, &[legacy.clone()], Sample([4; 16])),
            (Found::Reidentified(0, Some(Sample([4; 16]))), 1)
        );
        // Same device and inode, no ctime recorded: certain, as before.
        assert_eq!(
            run(&ident("a", 10, 7), &[legacy], Sample([4; 16])).0,
            Found::Same(0)
        );
    }

    #[test]
    fn mtime_rules() {
        let exact = MtimeRule::exact();
        assert!(exact.same(5, 5) && !exact.same(5, 6));
        let auto = MtimeRule::new(ModifyWindow::Auto, None);
        assert!(auto.same(5 * NS, 5 * NS + 123));
        assert!(!auto.same(5 * NS + 1, 5 * NS + 2));
        assert!(!auto.same(5 * NS, 6 * NS));
        let fat = MtimeRule::new(ModifyWindow::Auto, Some(Duration::from_secs(2)));
        assert!(fat.same(5 * NS, 7 * NS) && !fat.same(5 * NS, 8 * NS + 1));
        let given = MtimeRule::new(
            ModifyWindow::Exactly(Duration::ZERO),
            Some(Duration::from_secs(2)),
        );
        assert!(!given.same(5 * NS, 5 * NS + 1));
    }
}
