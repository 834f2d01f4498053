//! Watch roots as things that can go away: a root's own identity (device,
//! inode, whether it is a mount point), the check that tells a share that is
//! away from files that are gone, and the registry of unavailable roots that
//! the watch stage fills and the upload workers and monitoring read.
//!
//! A root is *unavailable* when it cannot be stat'ed or listed (ENOENT,
//! ENOTCONN, EIO, ESTALE…), or when it was a mount point and is not one any
//! more (an unmounted share leaves the empty directory under it). Nothing
//! under an unavailable root becomes `gone`; its uploads wait with their
//! offset and videoId.

pub mod mountinfo;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::display::show_path;
use crate::journal::RootRecord;

/// What a look at an available root found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RootState {
    pub record: RootRecord,
    /// The filesystem type (`nfs4`, `cifs`, `fuse.sshfs`, `ext4`…), when
    /// `/proc/self/mountinfo` could be read.
    pub fs_type: Option<String>,
    /// `NFS`, `SMB`, `FUSE` or `9P` for a network filesystem.
    pub network: Option<&'static str>,
    /// The filesystem keeps mtimes this coarsely (FAT, SMB: 2 s).
    pub mtime_granularity: Option<Duration>,
}

/// Why a root is unavailable, fit for an ERROR line: what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Away {
    pub why: String,
    /// The errno behind it, when there is one.
    pub errno: Option<i32>,
}

/// What an errno on a watch root means for a person.
pub(crate) fn describe_errno(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) if n == rustix::io::Errno::NOTCONN.raw_os_error() => {
            "the share's server is not connected (ENOTCONN): check the network and the file server; \
             uploads from it resume when it answers"
                .to_owned()
        }
        Some(n) if n == rustix::io::Errno::STALE.raw_os_error() => {
            "the share's file handle is stale (ESTALE): it was remounted or its export changed on the \
             server; remount it"
                .to_owned()
        }
        Some(n) if n == rustix::io::Errno::IO.raw_os_error() => {
            "I/O error (EIO) on the share: check the disk, the network and the file server".to_owned()
        }
        Some(n) if n == rustix::io::Errno::HOSTDOWN.raw_os_error()
            || n == rustix::io::Errno::HOSTUNREACH.raw_os_error()
            || n == rustix::io::Errno::TIMEDOUT.raw_os_error() =>
        {
            format!("the share's server cannot be reached ({e}): check the network and the file server")
        }
        _ => match e.kind() {
            io::ErrorKind::NotFound => {
                "it does not exist (a share that is not mounted? create or mount it, or fix watch.path)"
                    .to_owned()
            }
            io::ErrorKind::PermissionDenied => {
                format!("cannot read it ({e}): check its permissions for the user ingestd runs as")
            }
            _ => format!("cannot read it ({e})"),
        },
    }
}

/// Whether an I/O error on a file may come from its share going away rather
/// than from the file itself (the root decides: see [`probe`]).
pub(crate) fn may_be_share(e: &io::Error) -> bool {
    let share = [
        rustix::io::Errno::NOTCONN,
        rustix::io::Errno::STALE,
        rustix::io::Errno::IO,
        rustix::io::Errno::HOSTDOWN,
        rustix::io::Errno::HOSTUNREACH,
        rustix::io::Errno::TIMEDOUT,
        rustix::io::Errno::NOENT,
        rustix::io::Errno::NOTDIR,
    ];
    e.raw_os_error()
        .is_some_and(|n| share.iter().any(|s| s.raw_os_error() == n))
}

/// Looks at `root` (blocking). `expected` is its identity when last seen
/// available: a root that was a mount point and is now an empty directory
/// that is not one is away.
/// Unless `full`, a root whose device and inode are as expected is taken to
/// be as it was (one stat and one directory read; no mount table), and the
/// filesystem facts are left out.
pub fn probe(root: &Path, expected: Option<&RootRecord>, full: bool) -> Result<RootState, Away> {
    let away = |e: io::Error| Away {
        why: describe_errno(&e),
        errno: e.raw_os_error(),
    };
    let meta = fs::metadata(root).map_err(away)?;
    if !meta.is_dir() {
        return Err(Away {
            why: "it is not a directory: point watch.path at a directory".to_owned(),
            errno: None,
        });
    }
    // Opening it is what fails on a FUSE share whose daemon died (ENOTCONN).
    let mut listing = fs::read_dir(root).map_err(away)?;
    if let Some(expected) =
        expected.filter(|e| !full && e.dev == meta.dev() && e.inode == meta.ino())
    {
        return Ok(RootState {
            record: *expected,
            fs_type: None,
            network: None,
            mtime_granularity: None,
        });
    }
    let empty = match listing.next() {
        Some(Err(e)) => return Err(away(e)),
        Some(Ok(_)) => false,
        None => true,
    };
    let mounts = mountinfo::read().unwrap_or_default();
    // The mount table names real paths: a root reached through a symlink is
    // looked up where it leads.
    let real = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let root = real.as_path();
    let mount_point = mountinfo::is_mount_point(&mounts, root);
    let record = RootRecord {
        dev: meta.dev(),
        inode: meta.ino(),
        mount_point,
    };
    // An unmounted share leaves the empty directory it was mounted on; a
    // folder someone filled on purpose in its place is taken as it is.
    if expected.is_some_and(|e| e.mount_point) && !mount_point && empty && !mounts.is_empty() {
        return Err(Away {
            why: "it was a mount point and nothing is mounted there now (the share was \
                  unmounted): mount it again; nothing under it is marked gone meanwhile"
                .to_owned(),
            errno: None,
        });
    }
    let mount = mountinfo::mount_of(&mounts, root);
    Ok(RootState {
        record,
        fs_type: mount.map(|m| m.fs_type.clone()),
        network: mount.and_then(|m| m.network_kind()),
        mtime_granularity: mount.and_then(|m| m.mtime_granularity()),
    })
}

/// The watch roots known to be unavailable, and each root's identity when
/// last seen available. Shared by the watch stage (which fills it), the
/// upload workers (which leave those roots' files alone) and monitoring.
#[derive(Debug, Default)]
pub struct Shares {
    inner: Mutex<BTreeMap<PathBuf, Known>>,
}

#[derive(Debug, Default, Clone)]
struct Known {
    record: Option<RootRecord>,
    away: Option<String>,
}

impl Shares {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<PathBuf, Known>) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `root` is unavailable for `why`; true when it was not already.
    pub(crate) fn set_away(&self, root: &Path, why: &str) -> bool {
        self.with(|m| {
            let k = m.entry(root.to_path_buf()).or_default();
            let new = k.away.is_none();
            k.away = Some(why.to_owned());
            new
        })
    }

    /// `root` is available, as `record` says; true when it was away.
    pub(crate) fn set_back(&self, root: &Path, record: RootRecord) -> bool {
        self.with(|m| {
            let k = m.entry(root.to_path_buf()).or_default();
            k.record = Some(record);
            k.away.take().is_some()
        })
    }

    /// Remembers what `root` looked like when last seen available (from
    /// the journal, or a look just taken), without saying it is available.
    pub(crate) fn remember(&self, root: &Path, record: RootRecord) {
        self.with(|m| m.entry(root.to_path_buf()).or_default().record = Some(record));
    }

    /// Forgets roots no longer configured (after a reload).
    pub(crate) fn retain(&self, roots: &[PathBuf]) {
        self.with(|m| m.retain(|r, _| roots.contains(r)));
    }

    pub(crate) fn is_away(&self, root: &Path) -> bool {
        self.with(|m| m.get(root).is_some_and(|k| k.away.is_some()))
    }

    /// The unavailable roots, each with why.
    pub fn away(&self) -> Vec<(PathBuf, String)> {
        self.with(|m| {
            m.iter()
                .filter_map(|(r, k)| k.away.clone().map(|w| (r.clone(), w)))
                .collect()
        })
    }

    pub(crate) fn away_roots(&self) -> Vec<PathBuf> {
        self.away().into_iter().map(|(r, _)| r).collect()
    }

    /// The identity `root` had when last seen available.
    pub fn record(&self, root: &Path) -> Option<RootRecord> {
        self.with(|m| m.get(root).and_then(|k| k.record))
    }

    /// Looks at `root` now (blocking), as an upload worker does after an
    /// error that may be the share's: marks it away if it is, and returns
    /// why. A root this registry never saw is only checked for existence.
    pub(crate) fn check_now(&self, root: &Path) -> Option<String> {
        let expected = self.record(root);
        match probe(root, expected.as_ref(), false) {
            Ok(_) => None,
            Err(away) => {
                let why = format!(
                    "watch folder {} is unavailable: {}",
                    show_path(root),
                    away.why
                );
                self.set_away(root, &why);
                Some(why)
            }
        }
    }

    /// One line for `/healthz` and systemd's STATUS, when roots are away.
    pub fn summary(&self) -> Option<String> {
        let away = self.away();
        (!away.is_empty()).then(|| {
            away.iter()
                .map(|(_, why)| why.clone())
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_explained_for_shares() {
        let e = io::Error::from_raw_os_error(rustix::io::Errno::NOTCONN.raw_os_error());
        assert!(
            describe_errno(&e).contains("server is not connected"),
            "{}",
            describe_errno(&e)
        );
        assert!(may_be_share(&e));
        let e = io::Error::from_raw_os_error(rustix::io::Errno::STALE.raw_os_error());
        assert!(describe_errno(&e).contains("ESTALE"));
        let e = io::Error::from(io::ErrorKind::NotFound);
        assert!(describe_errno(&e).contains("does not exist"));
        let e = io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error());
        assert!(describe_errno(&e).contains("permissions"));
        assert!(!may_be_share(&e));
    }

    #[test]
    fn a_missing_root_is_away_and_an_existing_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let state = probe(dir.path(), None, true).unwrap();
        assert!(!state.record.mount_point);
        let gone = dir.path().join("nope");
        let away = probe(&gone, Some(&state.record), false).unwrap_err();
        assert!(away.why.contains("does not exist"), "{away:?}");
        // Expected to be a mount point, and it is not: away.
        let expected = RootRecord {
            mount_point: true,
            ..state.record
        };
        if mountinfo::read().is_ok_and(|m| !m.is_empty()) {
            let away = probe(dir.path(), Some(&expected), true).unwrap_err();
            assert!(
                away.why.contains("nothing is mounted there now"),
                "{away:?}"
            );
        }
    }

    #[test]
    fn the_registry_says_once_when_a_root_goes_and_comes_back() {
        let s = Shares::default();
        let root = Path::new("/srv/nas");
        assert!(s.set_away(root, "watch folder /srv/nas is unavailable: x"));
        assert!(!s.set_away(root, "watch folder /srv/nas is unavailable: x"));
        assert!(s.is_away(root));
        assert_eq!(s.away_roots(), vec![root.to_path_buf()]);
        assert!(s.summary().unwrap().contains("/srv/nas"));
        let rec = RootRecord {
            dev: 1,
            inode: 2,
            mount_point: true,
        };
        assert!(s.set_back(root, rec));
        assert!(!s.set_back(root, rec));
        assert_eq!(s.record(root), Some(rec));
        assert!(s.summary().is_none());
        s.retain(&[]);
        assert_eq!(s.record(root), None);
    }
}
