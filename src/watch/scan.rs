//! Reconcile scans: walk a watch folder (synchronously: run it on a blocking
//! thread) and diff what is on disk against the folder's journal rows.
//!
//! The walk never follows a symlink unless the folder allows it, and then
//! only to a target inside the root; it remembers the (dev, inode) of every
//! directory entered, so neither a symlink nor a bind mount can loop it.

use std::collections::{HashMap, HashSet};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::filter::Filter;
use super::identify::{identify, Found, Lazy, MtimeRule};
use crate::journal::{FileIdentity, FileRow, FileState};
use crate::sample::Sample;

/// What a walk needs to know about its folder.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    /// The root as journaled (absolute, normalised, possibly via symlinks).
    pub root: PathBuf,
    /// The root with every symlink resolved: symlink targets must lie in it.
    pub canonical_root: PathBuf,
    pub filter: Filter,
    pub recursive: bool,
    pub follow_symlinks: bool,
    /// Read a file's attributes through an open descriptor: on NFS, SMB
    /// and FUSE a plain stat may answer from a cache up to a minute old.
    pub fresh: bool,
}

/// What a walk found.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    /// Wanted regular files (symlinks to files: the target's identity).
    pub files: Vec<FileIdentity>,
    /// Every directory entered, absolute (for inotify watches).
    pub dirs: Vec<PathBuf>,
    /// Directories that could not be listed (relative): what lies under
    /// them is unknown, not gone.
    pub unreadable: Vec<PathBuf>,
    /// Directories already entered reached again (a loop).
    pub loops: usize,
}

impl Tree {
    /// The metadata that identifies the file at `path` (following a final
    /// symlink only when the folder allows it).
    pub(crate) fn stat(&self, path: &Path) -> io::Result<Metadata> {
        let meta = fs::symlink_metadata(path)?;
        let follow =
            meta.file_type().is_symlink() && self.follow_symlinks && self.link_inside(path);
        if self.fresh && (meta.is_file() || follow) {
            // Opening revalidates the attributes (close-to-open consistency).
            return fs::File::open(path)?.metadata();
        }
        if follow {
            return fs::metadata(path);
        }
        Ok(meta)
    }

    /// The content sample of `f` as it is now; an error if its size is not
    /// the one seen (it changed meanwhile).
    pub(crate) fn sample(&self, f: &FileIdentity) -> io::Result<Sample> {
        let file = self.open_as(f)?;
        Sample::of_file(&file, f.size)
    }

    /// The file of `f`, opened, if it still has `f`'s size; else
    /// `UnexpectedEof` (still being written: look again later, like a file
    /// that shrank while it was read).
    pub(crate) fn open_as(&self, f: &FileIdentity) -> io::Result<fs::File> {
        let file = fs::File::open(f.path())?;
        if file.metadata()?.len() != f.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file changed while it was sampled",
            ));
        }
        Ok(file)
    }

    /// Whether `path` resolves to somewhere inside the root.
    pub(crate) fn link_inside(&self, path: &Path) -> bool {
        match fs::canonicalize(path) {
            Ok(target) => {
                target.starts_with(&self.canonical_root)
                    && target
                        .strip_prefix(&self.canonical_root)
                        .is_ok_and(|rel| self.filter.ancestors_wanted(&rel.join("x")))
            }
            // Dangling, a loop (ELOOP), or vanished.
            Err(_) => false,
        }
    }

    /// Walks the directory `start` (relative to the root; empty for the
    /// root). `on_dir` is called with each directory's absolute path before
    /// it is listed (so an inotify watch is in place before the listing and
    /// no file created in between is missed). Only a failure to list
    /// `start` itself is an error; `Interrupted` means `cancel` fired.
    pub(crate) fn walk(
        &self,
        start: &Path,
        on_dir: &mut dyn FnMut(&Path),
        cancel: &CancellationToken,
    ) -> io::Result<Walked> {
        let mut out = Walked::default();
        let mut visited: HashSet<(u64, u64)> = HashSet::new();
        let start_abs = self.root.join(start);
        let meta = fs::metadata(&start_abs)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        visited.insert((meta.dev(), meta.ino()));
        let mut stack = vec![start.to_path_buf()];
        while let Some(rel_dir) = stack.pop() {
            if cancel.is_cancelled() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
            }
            let abs_dir = self.root.join(&rel_dir);
            on_dir(&abs_dir);
            let entries = match fs::read_dir(&abs_dir) {
                Ok(entries) => entries,
                Err(e) if rel_dir == start => return Err(e),
                Err(e) => {
                    tracing::warn!(dir = %super::show(&abs_dir), error = %e,
                        "cannot list a directory of a watch folder; its files are left as they are");
                    out.unreadable.push(rel_dir);
                    continue;
                }
            };
            out.dirs.push(abs_dir.clone());
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        tracing::warn!(dir = %super::show(&abs_dir), error = %e,
                            "error while listing a directory of a watch folder");
                        out.unreadable.push(rel_dir.clone());
                        break;
                    }
                };
                let rel = rel_dir.join(entry.file_name());
                // Vanished since the listing: not an error.
                let Ok(file_type) = entry.file_type() else {
                    continue;
                };
                if file_type.is_dir() {
                    if !self.recursive || self.filter.skips_dir(&rel) {
                        continue;
                    }
                    let Ok(meta) = entry.metadata() else {
                        continue;
                    };
                    if visited.insert((meta.dev(), meta.ino())) {
                        stack.push(rel);
                    } else {
                        out.loops += 1;
                    }
                } else if file_type.is_file() {
                    if !self.filter.wants_file(&rel) {
                        continue;
                    }
                    if let Ok(meta) = entry.metadata() {
                        if meta.is_file() {
                            out.files
                                .push(FileIdentity::from_metadata(&self.root, &rel, &meta));
                        }
                    }
                } else if file_type.is_symlink() && self.follow_symlinks {
                    let abs = abs_dir.join(entry.file_name());
                    if !self.link_inside(&abs) {
                        match fs::canonicalize(&abs) {
                            // A loop or a dangling link named like a wanted
                            // file: say so, or it would be skipped unseen.
                            Err(e) if self.filter.wants_file(&rel) => {
                                tracing::warn!(path = %super::show(&abs), error = %e,
                                    "cannot follow the symlink (a loop, or its target is missing): skipped")
                            }
                            _ => tracing::debug!(path = %super::show(&abs),
                                "symlink leads outside the watch folder (or nowhere): skipped"),
                        }
                        continue;
                    }
                    let Ok(meta) = fs::metadata(&abs) else {
                        continue;
                    };
                    if meta.is_dir() {
                        if !self.recursive || self.filter.skips_dir(&rel) {
                            continue;
                        }
                        if visited.insert((meta.dev(), meta.ino())) {
                            stack.push(rel);
                        } else {
                            out.loops += 1;
                        }
                    } else if meta.is_file() && self.filter.wants_file(&rel) {
                        out.files
                            .push(FileIdentity::from_metadata(&self.root, &rel, &meta));
                    }
                }
                // Anything else (fifo, socket, device, unfollowed symlink): skipped.
            }
        }
        Ok(out)
    }
}

/// What a scan must do to bring the journal in line with the folder.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// New files: journal them as settling.
    pub add: Vec<FileIdentity>,
    /// Settling rows whose file changed since: follow it.
    pub resettle: Vec<(i64, FileIdentity)>,
    /// Settling rows whose file is as journaled: keep their clocks running.
    pub settling: Vec<(i64, FileIdentity)>,
    /// Rows whose file is there under new hints (a remount, a restore):
    /// the hints follow, and the sample when the row had none.
    pub reidentify: Vec<(i64, FileIdentity, Option<Sample>)>,
    /// `gone` rows whose file is back as it was: queued again (or settling
    /// again, when they went away before they settled).
    pub revive: Vec<(i64, FileState, FileIdentity)>,
    /// Rows not uploaded yet whose identity was not seen: check each file,
    /// then mark the vanished or changed ones gone.
    pub unseen: Vec<FileRow>,
    /// Done rows whose file is still in place, unchanged.
    pub done_in_place: Vec<FileRow>,
    pub already_done: usize,
    /// Empty files without a row: not journaled until they have bytes.
    pub empty: Vec<PathBuf>,
    /// Files whose sample could not be read: their rows are left as they are.
    pub unreadable: Vec<(PathBuf, io::ErrorKind)>,
}

/// Diffs the files found on disk against every journal row of the folder:
/// one pass over each, with hash maps, whatever the folder's size. A file
/// is sampled (`sample`) only when a row has its path, size and mtime but
/// other hints, so a steady folder costs no reads.
pub(crate) fn plan(
    files: Vec<FileIdentity>,
    rows: Vec<FileRow>,
    rule: MtimeRule,
    sample: &mut dyn FnMut(&FileIdentity) -> io::Result<Sample>,
) -> Plan {
    let mut by_path: HashMap<&[u8], Vec<usize>> = HashMap::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        by_path
            .entry(row.identity.rel_path.as_os_str().as_bytes())
            .or_default()
            .push(i);
    }
    let mut seen = vec![false; rows.len()];
    let mut plan = Plan::default();
    for file in files {
        let at: Vec<(usize, &FileRow)> = by_path
            .get(file.rel_path.as_os_str().as_bytes())
            .map(|ids| {
                ids.iter()
                    .filter(|i| !seen[**i])
                    .map(|i| (*i, &rows[*i]))
                    .collect()
            })
            .unwrap_or_default();
        let mut compute = || sample(&file);
        let mut lazy = Lazy::new(&mut compute);
        let found = identify(&file, &at, rule, &mut lazy);
        drop(lazy);
        match found {
            Err(kind) => {
                // Unknown: none of these rows is judged on this pass.
                for (i, _) in &at {
                    seen[*i] = true;
                }
                plan.unreadable.push((file.path(), kind));
            }
            // A gone row comes back only with its content: equal hints
            // are not proof enough there (the upload saw other bytes).
            Ok(Found::Same(i)) if rows[i].state == FileState::Gone && rows[i].sample.is_some() => {
                seen[i] = true;
                match sample(&file) {
                    Ok(s) if Some(s) == rows[i].sample => {
                        settled_match(&mut plan, &rows[i], file, None)
                    }
                    Ok(_) => plan.add.push(file),
                    Err(e) => plan.unreadable.push((file.path(), e.kind())),
                }
            }
            Ok(Found::Same(i)) => {
                seen[i] = true;
                settled_match(&mut plan, &rows[i], file, None);
            }
            Ok(Found::Reidentified(i, new_sample)) => {
                seen[i] = true;
                plan.reidentify.push((rows[i].id, file.clone(), new_sample));
                settled_match(&mut plan, &rows[i], file, new_sample);
            }
            Ok(Found::Follow(i)) => {
                seen[i] = true;
                plan.resettle.push((rows[i].id, file));
            }
            // Never queued while empty; journaled once it has bytes.
            Ok(Found::New) if file.size == 0 => plan.empty.push(file.path()),
            Ok(Found::New) => plan.add.push(file),
        }
    }
    plan.unseen = rows
        .iter()
        .zip(seen)
        .filter(|(row, seen)| {
            !seen
                && matches!(
                    row.state,
                    FileState::Settling | FileState::Queued | FileState::Retrying
                )
        })
        .map(|(row, _)| row.clone())
        .collect();
    plan
}

/// `file` is `row`'s: what that means in the row's state.
fn settled_match(plan: &mut Plan, row: &FileRow, file: FileIdentity, new_sample: Option<Sample>) {
    match row.state {
        FileState::Settling => plan.settling.push((row.id, file)),
        FileState::Done => {
            plan.already_done += 1;
            let mut row = row.clone();
            row.identity = file;
            plan.done_in_place.push(row);
        }
        FileState::Gone => {
            let to = if row.sample.or(new_sample).is_some() {
                FileState::Queued
            } else {
                FileState::Settling
            };
            plan.revive.push((row.id, to, file));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::identify::tests::{ident, row};
    use super::*;

    fn no_reads(f: &FileIdentity) -> io::Result<Sample> {
        panic!("{} was sampled", f.rel_path.display())
    }

    #[test]
    fn plan_sorts_every_case() {
        let rows = vec![
            row(1, ident("done.mp4", 10, 1), FileState::Done),
            row(2, ident("growing.mp4", 10, 2), FileState::Settling),
            row(3, ident("steady.mp4", 10, 3), FileState::Settling),
            row(4, ident("vanished.mp4", 10, 4), FileState::Queued),
            row(5, ident("changed.mp4", 10, 5), FileState::Queued),
            row(6, ident("uploading.mp4", 10, 6), FileState::Uploading),
            row(7, ident("old-gone.mp4", 10, 7), FileState::Gone),
        ];
        let files = vec![
            ident("done.mp4", 10, 1),
            ident("growing.mp4", 20, 2),
            ident("steady.mp4", 10, 3),
            ident("changed.mp4", 11, 5),
            ident("new.mp4", 1, 8),
            ident("empty.mp4", 0, 9),
        ];
        let p = plan(files, rows, MtimeRule::exact(), &mut no_reads);
        assert_eq!(p.already_done, 1);
        assert_eq!(p.done_in_place[0].id, 1);
        assert_eq!(p.resettle.len(), 1);
        assert_eq!((p.resettle[0].0, p.resettle[0].1.size), (2, 20));
        assert_eq!(p.settling.iter().map(|s| s.0).collect::<Vec<_>>(), vec![3]);
        let added: Vec<_> = p.add.iter().map(|f| f.rel_path.clone()).collect();
        assert_eq!(
            added,
            vec![PathBuf::from("changed.mp4"), PathBuf::from("new.mp4")]
        );
        assert_eq!(p.empty, vec![PathBuf::from("/r/empty.mp4")]);
        let unseen: Vec<i64> = p.unseen.iter().map(|r| r.id).collect();
        assert_eq!(unseen, vec![4, 5]);
        assert!(p.reidentify.is_empty() && p.revive.is_empty());
    }

    #[test]
    fn a_remounted_folder_is_re_identified_and_gone_rows_come_back() {
        let rows = vec![
            row(1, ident("done.mp4", 10, 1), FileState::Done),
            row(2, ident("half.mp4", 10, 2), FileState::Queued),
            row(3, ident("blinked.mp4", 10, 3), FileState::Gone),
            row(4, ident("reused.mp4", 10, 4), FileState::Done),
        ];
        let remounted = |name: &str, inode: u64| {
            let mut f = ident(name, 10, inode + 100);
            f.dev = 2;
            f
        };
        let files = vec![
            remounted("done.mp4", 1),
            remounted("half.mp4", 2),
            remounted("blinked.mp4", 3),
            remounted("reused.mp4", 4),
        ];
        let mut reads = 0;
        let mut sample = |f: &FileIdentity| {
            reads += 1;
            Ok(match f.inode - 100 {
                4 => Sample([99; 16]), // a new recording under an old name
                n => Sample([n as u8; 16]),
            })
        };
        let p = plan(files, rows, MtimeRule::exact(), &mut sample);
        assert_eq!(reads, 4);
        let re: Vec<i64> = p.reidentify.iter().map(|r| r.0).collect();
        assert_eq!(re, vec![1, 2, 3]);
        assert_eq!(p.already_done, 1);
        assert_eq!(
            p.revive.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
            vec![(3, FileState::Queued)]
        );
        assert_eq!(p.add.len(), 1);
        assert_eq!(p.add[0].rel_path, PathBuf::from("reused.mp4"));
        assert!(p.unseen.is_empty());
    }

    #[test]
    fn a_file_that_cannot_be_sampled_leaves_its_rows_alone() {
        let rows = vec![row(2, ident("half.mp4", 10, 2), FileState::Queued)];
        let mut f = ident("half.mp4", 10, 200);
        f.dev = 9;
        let mut sample = |_: &FileIdentity| Err(io::Error::from(io::ErrorKind::PermissionDenied));
        let p = plan(vec![f], rows, MtimeRule::exact(), &mut sample);
        assert!(p.unseen.is_empty() && p.add.is_empty() && p.reidentify.is_empty());
        assert_eq!(p.unreadable.len(), 1);
    }
}
