//! Which names a watch folder cares about: the built-in ignore list (always),
//! the user's `exclude` (added to it) and `include` (when not empty); and
//! which of them go first in the upload queue (`priority`).
//!
//! Globs match the path relative to the watch root and the file name alone,
//! so `*.mp4` matches in subfolders and `raw/*.mxf` matches one folder.
//! Matching is case-insensitive: cameras write `C0001.MP4`, people write
//! `*.mp4`. Names are bytes (`OsStr`), never assumed UTF-8.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

use super::WatchError;
use crate::config::QueueOrder;
use crate::journal::QueuePlace;

/// File names never uploaded: partial downloads, editor and OS droppings,
/// and the sidecars this daemon writes itself. Dotfiles are handled apart
/// (any path component starting with `.`).
const IGNORED_FILES: &[&str] = &[
    "*.part",
    "*.partial",
    "*.tmp",
    "*.crdownload",
    "*.swp",
    "~*",
    "Thumbs.db",
    "*.ingestd.json",
];

/// Directory names whose whole subtree is skipped (Synology thumbnails).
const IGNORED_DIRS: &[&str] = &["@eaDir"];

/// The compiled name rules of one watch folder.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    builtin_files: GlobSet,
    builtin_dirs: GlobSet,
    /// `None` when `include` is empty: everything not excluded is wanted.
    include: Option<GlobSet>,
    exclude: GlobSet,
    /// Subtrees of the root never scanned (`move_to` when it lies inside the
    /// root: moved files must not be seen as new ones), relative to the root.
    skipped: Vec<PathBuf>,
}

fn glob_set(patterns: &[&str]) -> Result<GlobSet, WatchError> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .case_insensitive(true)
            .backslash_escape(true)
            .build()
            .map_err(|source| WatchError::Glob {
                pattern: (*p).to_owned(),
                source,
            })?;
        set.add(glob);
    }
    set.build().map_err(|source| WatchError::Glob {
        pattern: patterns.join(", "),
        source,
    })
}

fn starts_with_dot(name: &OsStr) -> bool {
    name.as_bytes().first() == Some(&b'.')
}

impl Filter {
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Filter, WatchError> {
        let include: Vec<&str> = include.iter().map(String::as_str).collect();
        let exclude: Vec<&str> = exclude.iter().map(String::as_str).collect();
        Ok(Filter {
            builtin_files: glob_set(IGNORED_FILES)?,
            builtin_dirs: glob_set(IGNORED_DIRS)?,
            include: if include.is_empty() {
                None
            } else {
                Some(glob_set(&include)?)
            },
            exclude: glob_set(&exclude)?,
            skipped: Vec::new(),
        })
    }

    /// Never scan `rel` (relative to the root) nor anything under it.
    pub(crate) fn skip_subtree(&mut self, rel: PathBuf) {
        if !rel.as_os_str().is_empty() && !self.skipped.contains(&rel) {
            self.skipped.push(rel);
        }
    }

    fn user_excludes(&self, rel: &Path, name: &OsStr) -> bool {
        self.exclude.is_match_candidate(&Candidate::new(rel))
            || self.exclude.is_match_candidate(&Candidate::new(name))
    }

    /// Whether the directory `rel` (relative to the root) is skipped with its
    /// whole subtree. Its ancestors are not checked (the walk never enters a
    /// skipped directory; see [`Filter::ancestors_wanted`] for an event path).
    pub(crate) fn skips_dir(&self, rel: &Path) -> bool {
        let Some(name) = rel.file_name() else {
            return false;
        };
        starts_with_dot(name)
            || self.builtin_dirs.is_match(name)
            || self.skipped.iter().any(|s| rel == s)
            || self.user_excludes(rel, name)
    }

    /// Whether the file `rel` (relative to the root) is wanted, judging its
    /// name and path (not its ancestors).
    pub(crate) fn wants_file(&self, rel: &Path) -> bool {
        let Some(name) = rel.file_name() else {
            return false;
        };
        if starts_with_dot(name) || self.builtin_files.is_match(name) {
            return false;
        }
        if self.user_excludes(rel, name) {
            return false;
        }
        match &self.include {
            None => true,
            Some(include) => {
                include.is_match_candidate(&Candidate::new(rel))
                    || include.is_match_candidate(&Candidate::new(name))
            }
        }
    }

    /// Whether no ancestor directory of `rel` is skipped: for paths that come
    /// from a watcher event rather than from a walk.
    pub(crate) fn ancestors_wanted(&self, rel: &Path) -> bool {
        let mut dir = PathBuf::new();
        let mut components = rel.components().peekable();
        while let Some(c) = components.next() {
            if components.peek().is_none() {
                break;
            }
            match c {
                Component::Normal(name) => dir.push(name),
                // A path leaving the root, or not relative: not ours.
                _ => return false,
            }
            if self.skips_dir(&dir) {
                return false;
            }
        }
        true
    }

    /// Whether a file at `rel` is wanted, ancestors included.
    #[cfg(test)]
    pub(crate) fn wants_path(&self, rel: &Path) -> bool {
        self.ancestors_wanted(rel) && self.wants_file(rel)
    }
}

/// A folder's upload order: its `priority` patterns, matched as `include`
/// is, and its `order` within each.
#[derive(Debug, Clone)]
pub(crate) struct QueueRules {
    priority: GlobSet,
    order: QueueOrder,
}

impl QueueRules {
    pub(crate) fn new(priority: &[String], order: QueueOrder) -> Result<QueueRules, WatchError> {
        let priority: Vec<&str> = priority.iter().map(String::as_str).collect();
        Ok(QueueRules {
            priority: glob_set(&priority)?,
            order,
        })
    }

    /// Where the file `rel` (relative to the root) goes in the queue: the
    /// rank of the first pattern it matches, by path or by name.
    pub(crate) fn place(&self, rel: &Path) -> QueuePlace {
        let mut matched = self.priority.matches_candidate(&Candidate::new(rel));
        if let Some(name) = rel.file_name() {
            matched.extend(self.priority.matches_candidate(&Candidate::new(name)));
        }
        QueuePlace::new(matched.into_iter().min(), self.order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> Filter {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Filter::new(&s(include), &s(exclude)).unwrap()
    }

    #[test]
    fn builtin_ignores_always_apply() {
        let f = filter(&[], &[]);
        for name in [
            ".hidden.mp4",
            "clip.mp4.part",
            "clip.PARTIAL",
            "x.tmp",
            "dl.crdownload",
            ".clip.swp",
            "x.swp",
            "~lock.mp4",
            "._clip.mp4",
            ".DS_Store",
            "Thumbs.db",
            "thumbs.db",
            "clip.mp4.ingestd.json",
            "sub/.hidden",
        ] {
            assert!(!f.wants_path(Path::new(name)), "{name} should be ignored");
        }
        for path in [".git/clip.mp4", "a/@eaDir/clip.mp4", "a/.cache/b/clip.mp4"] {
            assert!(!f.wants_path(Path::new(path)), "{path} should be ignored");
        }
        assert!(f.skips_dir(Path::new("@eaDir")));
        assert!(f.skips_dir(Path::new("a/.trash")));
        assert!(f.wants_path(Path::new("a/b/clip.mp4")));
        assert!(f.wants_path(Path::new("part")));
    }

    #[test]
    fn include_matches_name_and_relative_path_case_insensitively() {
        let f = filter(&["*.mp4", "raw/*.mxf"], &[]);
        assert!(f.wants_path(Path::new("clip.mp4")));
        assert!(f.wants_path(Path::new("day1/cam2/C0001.MP4")));
        assert!(f.wants_path(Path::new("raw/a.mxf")));
        assert!(!f.wants_path(Path::new("other/a.mxf")));
        assert!(!f.wants_path(Path::new("clip.mov")));
        // Directories are not subject to `include`.
        assert!(!f.skips_dir(Path::new("day1")));
    }

    #[test]
    fn exclude_adds_to_the_builtin_list_and_prunes_directories() {
        let f = filter(&[], &["*.txt", "proxies", "b-roll/**"]);
        assert!(!f.wants_path(Path::new("notes.txt")));
        assert!(!f.wants_path(Path::new("a/notes.TXT")));
        assert!(f.skips_dir(Path::new("day1/proxies")));
        assert!(!f.wants_path(Path::new("day1/proxies/x.mp4")));
        assert!(!f.wants_path(Path::new("b-roll/x.mp4")));
        assert!(!f.wants_path(Path::new("x.part")));
        assert!(f.wants_path(Path::new("x.mp4")));
    }

    #[test]
    fn skipped_subtree_and_odd_names() {
        let mut f = filter(&[], &[]);
        f.skip_subtree(PathBuf::from("done"));
        assert!(f.skips_dir(Path::new("done")));
        assert!(!f.wants_path(Path::new("done/a/x.mp4")));
        assert!(f.wants_path(Path::new("done2/x.mp4")));
        let odd = PathBuf::from(OsStr::from_bytes(b"caf\xe9\nclip.mp4"));
        assert!(f.wants_path(&odd));
        assert!(!f.wants_path(Path::new("../x.mp4")));
        assert!(!f.wants_path(Path::new("")));
    }

    #[test]
    fn bad_glob_is_a_named_error() {
        let err = Filter::new(&["a[".into()], &[]).unwrap_err();
        assert!(err.to_string().contains("a["), "{err}");
    }

    #[test]
    fn priority_ranks_by_the_first_pattern_matched_by_path_or_name() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let rules =
            QueueRules::new(&s(&["*.proxy.mp4", "day1/*_lowres.*"]), QueueOrder::Newest).unwrap();
        let rank = |p: &str| rules.place(Path::new(p)).rank;
        assert_eq!(rank("cam/A001.PROXY.MP4"), 0);
        assert_eq!(rank("day1/a_lowres.mov"), 1);
        // Both: the first pattern decides.
        assert_eq!(rank("day1/a_lowres.proxy.mp4"), 0);
        assert_eq!(rank("day2/a_lowres.mov"), QueuePlace::UNMATCHED);
        assert_eq!(rank("a.mp4"), QueuePlace::UNMATCHED);
        assert_eq!(rules.place(Path::new("a.mp4")).order, QueueOrder::Newest);
        let none = QueueRules::new(&[], QueueOrder::Oldest).unwrap();
        assert_eq!(none.place(Path::new("a.proxy.mp4")), QueuePlace::DEFAULT);
        assert!(QueueRules::new(&s(&["a["]), QueueOrder::Oldest).is_err());
    }

    #[test]
    fn sidecar_and_temp_names_are_ignored_by_watchers() {
        let f = Filter::new(&[], &[]).unwrap();
        let side = crate::after_upload::sidecar_path(Path::new("a/clip.mp4"));
        assert_eq!(side, PathBuf::from("a/clip.mp4.ingestd.json"));
        assert!(!f.wants_path(&side));
        let tmp = crate::after_upload::temp_beside(Path::new("a/clip.mp4"), "move");
        assert!(!f.wants_path(&tmp));
    }
}
