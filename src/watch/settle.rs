//! Readiness clocks: the settling files of one folder, each with the identity
//! last seen and the instant it is due to be checked again. A file is ready
//! when that check finds the same size, mtime and inode; every event on the
//! file pushes its deadline back.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::journal::FileIdentity;

/// One settling file: its journal row and what it looked like last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settling {
    pub id: i64,
    pub identity: FileIdentity,
}

#[derive(Debug)]
struct Entry {
    file: Settling,
    deadline: Instant,
}

/// The settling files of one folder, by path relative to the root.
#[derive(Debug)]
pub(crate) struct Settler {
    settle: Duration,
    entries: HashMap<PathBuf, Entry>,
    /// The same entries ordered by deadline, so the next one is found
    /// without a pass over thousands of files.
    queue: BTreeSet<(Instant, PathBuf)>,
}

impl Settler {
    pub(crate) fn new(settle: Duration) -> Settler {
        Settler {
            settle,
            entries: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&self, rel: &Path) -> Option<&Settling> {
        self.entries.get(rel).map(|e| &e.file)
    }

    /// Starts (or restarts) the clock of `file`.
    pub(crate) fn track(&mut self, file: Settling, now: Instant) {
        self.track_until(file, now + self.settle);
    }

    /// Tracks `file` to be checked again at `deadline` (an unfinished
    /// container: when it fails unless it changes; a change restarts the
    /// clock as usual).
    pub(crate) fn track_until(&mut self, file: Settling, deadline: Instant) {
        let rel = file.identity.rel_path.clone();
        if let Some(old) = self.entries.remove(&rel) {
            self.queue.remove(&(old.deadline, rel.clone()));
        }
        self.queue.insert((deadline, rel.clone()));
        self.entries.insert(rel, Entry { file, deadline });
    }

    /// Tracks `file`, keeping its running clock if it is already tracked
    /// unchanged (a periodic scan must not postpone readiness).
    pub(crate) fn keep(&mut self, file: Settling, now: Instant) {
        match self.entries.get(&file.identity.rel_path) {
            Some(e) if e.file == file => {}
            _ => self.track(file, now),
        }
    }

    /// Restarts the clock of the file at `rel`, if tracked.
    pub(crate) fn touch(&mut self, rel: &Path, now: Instant) -> bool {
        let Some(file) = self.forget(rel) else {
            return false;
        };
        self.track(file, now);
        true
    }

    pub(crate) fn forget(&mut self, rel: &Path) -> Option<Settling> {
        let entry = self.entries.remove(rel)?;
        self.queue.remove(&(entry.deadline, rel.to_path_buf()));
        Some(entry.file)
    }

    /// Forgets every file under the directory `rel` (it vanished).
    pub(crate) fn forget_under(&mut self, rel: &Path) -> Vec<Settling> {
        let under: Vec<PathBuf> = self
            .entries
            .keys()
            .filter(|p| p.starts_with(rel) && p.as_path() != rel)
            .cloned()
            .collect();
        under.iter().filter_map(|p| self.forget(p)).collect()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|(d, _)| *d)
    }

    /// Removes and returns the files whose clock ran out.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Settling> {
        let mut due = Vec::new();
        while let Some((deadline, _)) = self.queue.first() {
            if *deadline > now {
                break;
            }
            let Some((_, rel)) = self.queue.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&rel) {
                due.push(entry.file);
            }
        }
        due
    }

    /// Forgets everything whose id is not in `keep`.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Settling) -> bool) {
        let drop: Vec<PathBuf> = self
            .entries
            .iter()
            .filter(|(_, e)| !keep(&e.file))
            .map(|(p, _)| p.clone())
            .collect();
        for p in drop {
            self.forget(&p);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: i64, name: &str, size: u64) -> Settling {
        Settling {
            id,
            identity: FileIdentity {
                root: PathBuf::from("/r"),
                rel_path: PathBuf::from(name),
                size,
                mtime_ns: 1,
                dev: 1,
                inode: id as u64,
                ctime_ns: None,
            },
        }
    }

    #[test]
    fn clocks_run_out_in_order_and_touch_restarts_them() {
        let t0 = Instant::now();
        let mut s = Settler::new(Duration::from_secs(10));
        s.track(file(1, "a", 1), t0);
        s.track(file(2, "b", 1), t0 + Duration::from_secs(1));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert!(s.touch(Path::new("a"), t0 + Duration::from_secs(5)));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(11)));
        assert!(s.take_due(t0 + Duration::from_secs(10)).is_empty());
        let due = s.take_due(t0 + Duration::from_secs(11));
        assert_eq!(due.iter().map(|f| f.id).collect::<Vec<_>>(), vec![2]);
        let due = s.take_due(t0 + Duration::from_secs(15));
        assert_eq!(due.iter().map(|f| f.id).collect::<Vec<_>>(), vec![1]);
        assert!(s.len() == 0 && s.next_deadline().is_none());
    }

    #[test]
    fn keep_does_not_postpone_an_unchanged_file() {
        let t0 = Instant::now();
        let mut s = Settler::new(Duration::from_secs(10));
        s.track(file(1, "a", 1), t0);
        s.keep(file(1, "a", 1), t0 + Duration::from_secs(5));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(10)));
        s.keep(file(1, "a", 2), t0 + Duration::from_secs(5));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(15)));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn forget_under_a_directory() {
        let t0 = Instant::now();
        let mut s = Settler::new(Duration::from_secs(1));
        s.track(file(1, "d/a", 1), t0);
        s.track(file(2, "d/e/b", 1), t0);
        s.track(file(3, "dd/c", 1), t0);
        let mut gone: Vec<i64> = s
            .forget_under(Path::new("d"))
            .iter()
            .map(|f| f.id)
            .collect();
        gone.sort();
        assert_eq!(gone, vec![1, 2]);
        assert_eq!(s.len(), 1);
        s.retain(|f| f.id != 3);
        assert_eq!(s.len(), 0);
    }
}
