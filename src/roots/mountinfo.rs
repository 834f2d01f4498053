//! `/proc/self/mountinfo`: which mount a path lives on, its filesystem type
//! and options (the attribute cache of NFS/SMB mounts among them).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One line of mountinfo, the fields this crate has a use for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    /// As the kernel names it: "ext4", "nfs4", "cifs", "fuse.sshfs", ...
    pub fs_type: String,
    pub source: String,
    /// Per-mount options (field 6): rw, noatime, ...
    pub mount_options: Vec<String>,
    /// Per-superblock options (last field): where NFS and SMB put theirs.
    pub super_options: Vec<String>,
}

/// How long a client may serve a regular file's attributes from its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrCache {
    /// Not a filesystem that caches attributes (local, tmpfs, ...), or unknown (FUSE).
    NotCached,
    /// `noac`, `actimeo=0` or `acregmax=0`: attributes are always fresh.
    Off,
    /// Up to this long.
    UpTo(Duration),
}

/// NFS's `acregmax` when the mount does not set it (nfs(5)).
const NFS_DEFAULT_ACREGMAX: Duration = Duration::from_secs(60);
/// CIFS's `actimeo` when the mount does not set it (mount.cifs(8)).
const SMB_DEFAULT_ACTIMEO: Duration = Duration::from_secs(1);
/// FAT keeps mtimes in 2 s steps; SMB servers may too, and which one a
/// share is backed by cannot be told from here.
const COARSE_MTIME: Duration = Duration::from_secs(2);

/// Decodes the kernel's `\ooo` escapes (it escapes space, tab, newline and
/// backslash in paths); anything that is not a valid escape is kept as is.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn unescape_string(field: &str) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

fn options(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter(|o| !o.is_empty())
        .map(unescape_string)
        .collect()
}

/// One line, or `None` when it does not have the shape proc(5) gives.
fn parse_line(line: &str) -> Option<Mount> {
    // Single spaces separate fields (spaces inside them are escaped), so an
    // empty source stays an empty field instead of shifting the others.
    let fields: Vec<&str> = line.trim_end().split(' ').collect();
    let separator = fields.iter().position(|f| *f == "-")?;
    if separator < 6 || fields.len() < separator + 4 {
        return None;
    }
    fields[0].parse::<u64>().ok()?;
    fields[1].parse::<u64>().ok()?;
    let (major, minor) = fields[2].split_once(':')?;
    major.parse::<u64>().ok()?;
    minor.parse::<u64>().ok()?;
    let mount_point = PathBuf::from(OsString::from_vec(unescape(fields[4])));
    if !mount_point.is_absolute() {
        return None;
    }
    Some(Mount {
        mount_point,
        fs_type: unescape_string(fields[separator + 1]),
        source: unescape_string(fields[separator + 2]),
        mount_options: options(fields[5]),
        super_options: options(fields[separator + 3]),
    })
}

/// The mounts in mountinfo `text`, in its order; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// The mounts this process sees.
pub fn read() -> std::io::Result<Vec<Mount>> {
    let path = "/proc/self/mountinfo";
    std::fs::read_to_string(path)
        .map(|text| parse(&text))
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot read {path}: {e} (is /proc mounted?)"),
            )
        })
}

/// The mount `path` lives on: the longest mount point that is a prefix of
/// `path` (component-wise, not string-wise); when several lines have the
/// same mount point the LAST one wins (it is mounted on top).
///
/// `path` is compared as given: canonicalize it first, as a symlink can lead
/// onto another mount.
pub(crate) fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<(usize, &Mount)> = None;
    for m in mounts {
        if !path.starts_with(&m.mount_point) {
            continue;
        }
        let depth = m.mount_point.components().count();
        if best.is_none_or(|(d, _)| depth >= d) {
            best = Some((depth, m));
        }
    }
    best.map(|(_, m)| m)
}

/// Whether `path` itself is a mount point (some line has exactly this mount point).
pub(crate) fn is_mount_point(mounts: &[Mount], path: &Path) -> bool {
    mounts.iter().any(|m| m.mount_point == path)
}

impl Mount {
    /// "NFS", "SMB", "FUSE", "9P" or None for local filesystems. nfs,
    /// nfs4 → NFS; cifs, smb3, smbfs → SMB; fuse, fuseblk, fuse.* → FUSE;
    /// 9p → 9P.
    pub(crate) fn network_kind(&self) -> Option<&'static str> {
        match self.fs_type.as_str() {
            "nfs" | "nfs4" => Some("NFS"),
            "cifs" | "smb3" | "smbfs" => Some("SMB"),
            "fuse" | "fuseblk" => Some("FUSE"),
            t if t.starts_with("fuse.") => Some("FUSE"),
            "9p" => Some("9P"),
            _ => None,
        }
    }

    /// The value of the last `key=N` (seconds) among both option lists; the
    /// superblock's come last, as they are what the kernel settled on.
    fn seconds(&self, key: &str) -> Option<Duration> {
        self.mount_options
            .iter()
            .chain(&self.super_options)
            .filter_map(|o| o.strip_prefix(key)?.strip_prefix('='))
            .filter_map(|v| v.parse::<u64>().ok())
            .next_back()
            .map(Duration::from_secs)
    }

    fn has_option(&self, name: &str) -> bool {
        self.mount_options
            .iter()
            .chain(&self.super_options)
            .any(|o| o == name)
    }

    /// How long the client may cache a regular file's attributes.
    pub(crate) fn attr_cache(&self) -> AttrCache {
        let (explicit, default) = match self.network_kind() {
            Some("NFS") => {
                if self.has_option("noac") {
                    return AttrCache::Off;
                }
                (
                    self.seconds("acregmax").or_else(|| self.seconds("actimeo")),
                    NFS_DEFAULT_ACREGMAX,
                )
            }
            Some("SMB") => (
                self.seconds("acregmax").or_else(|| self.seconds("actimeo")),
                SMB_DEFAULT_ACTIMEO,
            ),
            _ => return AttrCache::NotCached,
        };
        match explicit.unwrap_or(default) {
            d if d.is_zero() => AttrCache::Off,
            d => AttrCache::UpTo(d),
        }
    }

    /// Mtime granularity of the filesystem when coarser than 1 ns: 2 s for
    /// vfat, msdos, exfat, cifs, smb3, smbfs; None otherwise.
    pub(crate) fn mtime_granularity(&self) -> Option<Duration> {
        matches!(
            self.fs_type.as_str(),
            "vfat" | "msdos" | "exfat" | "cifs" | "smb3" | "smbfs"
        )
        .then_some(COARSE_MTIME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 22 0:26 / /tmp rw,nosuid,nodev shared:14 - tmpfs tmpfs rw,size=8088812k,nr_inodes=1048576,inode64
40 22 0:45 / /srv/nas rw,relatime shared:30 - nfs4 nas:/export/video rw,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,acregmin=3,acregmax=30,acdirmin=30,acdirmax=60,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.5,local_lock=none,addr=10.0.0.2
41 22 0:46 / /srv/fresh rw,relatime shared:31 - nfs nas:/export/fresh rw,vers=3,rsize=65536,actimeo=0,hard,proto=tcp
42 22 0:47 / /srv/noac rw,relatime shared:32 - nfs4 nas:/export/noac rw,sync,vers=4.1,noac,hard,proto=tcp
43 22 0:48 / /srv/plain rw,relatime shared:33 - nfs4 nas:/export/plain rw,vers=4.2,rsize=1048576,hard,proto=tcp,timeo=600
44 22 0:49 / /mnt/smb rw,relatime shared:34 - cifs //fs/share rw,vers=3.1.1,cache=strict,username=cap,uid=0,actimeo=1,closetimeo=1
45 22 0:50 / /mnt/smbold rw,relatime shared:35 - smb3 //fs/old rw,vers=3.0,cache=strict,uid=0
46 22 0:51 / /mnt/ssh rw,nosuid,nodev,relatime shared:36 - fuse.sshfs cap@host:/data rw,user_id=1000,group_id=1000
47 22 8:17 / /media/card rw,nosuid,nodev,relatime shared:37 - vfat /dev/sdb1 rw,fmask=0022,dmask=0022,codepage=437
48 22 0:52 / /mnt/my\\040share rw,relatime shared:38 - cifs //fs/my\\040share rw,actimeo=5
49 40 0:53 / /srv/nas/inner rw,relatime - tmpfs tmpfs rw
50 40 0:54 / /srv/nas rw,relatime - ext4 /dev/sdc1 rw
this line is not mountinfo
51 22 0:55 / /srv/nasty rw,relatime master:3 propagate_from:2 unbindable - 9p share rw,trans=virtio
";

    fn mounts() -> Vec<Mount> {
        parse(SAMPLE)
    }

    fn at<'a>(mounts: &'a [Mount], point: &str) -> &'a Mount {
        match mounts.iter().find(|m| m.mount_point == Path::new(point)) {
            Some(m) => m,
            None => panic!("no mount at {point}"),
        }
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_eq!(mounts().len(), 15);
        assert!(parse("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw").is_empty());
        assert!(parse("x 35 98:0 / /mnt rw - ext3 /dev/root rw").is_empty());
        assert!(parse("36 35 98:0 / /mnt rw - ext3").is_empty());
        assert!(parse("").is_empty());
    }

    #[test]
    fn ext4_root_fields() {
        let all = mounts();
        let root = at(&all, "/");
        assert_eq!(root.fs_type, "ext4");
        assert_eq!(root.source, "/dev/nvme0n1p2");
        assert_eq!(root.mount_options, ["rw", "relatime"]);
        assert_eq!(root.super_options, ["rw", "errors=remount-ro"]);
        assert_eq!(root.network_kind(), None);
        assert_eq!(root.attr_cache(), AttrCache::NotCached);
        assert_eq!(root.mtime_granularity(), None);
    }

    #[test]
    fn optional_fields_of_any_count() {
        let line = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
        let m = parse(line);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, Path::new("/mnt2"));
        assert_eq!(m[0].fs_type, "ext3");
        let none = "36 35 98:0 / /mnt2 rw - ext3 /dev/root rw";
        assert_eq!(parse(none)[0].source, "/dev/root");
        let all = mounts();
        assert_eq!(at(&all, "/srv/nasty").fs_type, "9p");
        assert_eq!(at(&all, "/srv/nasty").network_kind(), Some("9P"));
    }

    #[test]
    fn escaped_paths_are_decoded() {
        let all = mounts();
        let m = at(&all, "/mnt/my share");
        assert_eq!(m.source, "//fs/my share");
        let odd = parse("1 0 0:1 / /a\\011b\\012c\\134d rw - tmpfs x\\1 rw");
        assert_eq!(odd[0].mount_point, Path::new("/a\tb\nc\\d"));
        assert_eq!(odd[0].source, "x\\1");
    }

    #[test]
    fn nfs_attribute_cache() {
        let all = mounts();
        let nas = at(&all, "/srv/nas");
        assert_eq!(nas.fs_type, "nfs4");
        assert_eq!(nas.network_kind(), Some("NFS"));
        assert_eq!(nas.attr_cache(), AttrCache::UpTo(Duration::from_secs(30)));
        assert_eq!(at(&all, "/srv/fresh").attr_cache(), AttrCache::Off);
        assert_eq!(at(&all, "/srv/noac").attr_cache(), AttrCache::Off);
        let plain = at(&all, "/srv/plain");
        assert_eq!(plain.attr_cache(), AttrCache::UpTo(Duration::from_secs(60)));
        assert_eq!(plain.mtime_granularity(), None);
        let actimeo = parse("1 0 0:1 / /n rw - nfs h:/e rw,actimeo=15");
        assert_eq!(
            actimeo[0].attr_cache(),
            AttrCache::UpTo(Duration::from_secs(15))
        );
        let zero = parse("1 0 0:1 / /n rw - nfs4 h:/e rw,acregmin=0,acregmax=0");
        assert_eq!(zero[0].attr_cache(), AttrCache::Off);
    }

    #[test]
    fn smb_attribute_cache_and_granularity() {
        let all = mounts();
        let smb = at(&all, "/mnt/smb");
        assert_eq!(smb.network_kind(), Some("SMB"));
        assert_eq!(smb.attr_cache(), AttrCache::UpTo(Duration::from_secs(1)));
        assert_eq!(smb.mtime_granularity(), Some(Duration::from_secs(2)));
        let old = at(&all, "/mnt/smbold");
        assert_eq!(old.network_kind(), Some("SMB"));
        assert_eq!(old.attr_cache(), AttrCache::UpTo(Duration::from_secs(1)));
        let share = at(&all, "/mnt/my share");
        assert_eq!(share.attr_cache(), AttrCache::UpTo(Duration::from_secs(5)));
        let off = parse("1 0 0:1 / /s rw - cifs //h/s rw,actimeo=0");
        assert_eq!(off[0].attr_cache(), AttrCache::Off);
        let reg = parse("1 0 0:1 / /s rw - cifs //h/s rw,acregmax=7,acdirmax=3");
        assert_eq!(reg[0].attr_cache(), AttrCache::UpTo(Duration::from_secs(7)));
    }

    #[test]
    fn fuse_tmpfs_and_vfat() {
        let all = mounts();
        let ssh = at(&all, "/mnt/ssh");
        assert_eq!(ssh.network_kind(), Some("FUSE"));
        assert_eq!(ssh.attr_cache(), AttrCache::NotCached);
        let tmp = at(&all, "/tmp");
        assert_eq!(tmp.network_kind(), None);
        assert_eq!(tmp.attr_cache(), AttrCache::NotCached);
        let card = at(&all, "/media/card");
        assert_eq!(card.network_kind(), None);
        assert_eq!(card.mtime_granularity(), Some(Duration::from_secs(2)));
        assert_eq!(card.attr_cache(), AttrCache::NotCached);
    }

    #[test]
    fn mount_of_is_the_longest_component_prefix() {
        let all = mounts();
        let of = |p: &str| mount_of(&all, Path::new(p)).map(|m| m.mount_point.clone());
        assert_eq!(of("/srv/nasty/x"), Some(PathBuf::from("/srv/nasty")));
        assert_eq!(
            of("/srv/nas/inner/a.mp4"),
            Some(PathBuf::from("/srv/nas/inner"))
        );
        assert_eq!(of("/srv/nas2/a.mp4"), Some(PathBuf::from("/")));
        assert_eq!(of("/home/cap"), Some(PathBuf::from("/")));
        assert_eq!(mount_of(&all[1..2], Path::new("/home")), None);
        assert_eq!(mount_of(&[], Path::new("/")), None);
    }

    #[test]
    fn stacked_mounts_the_last_wins() {
        let all = mounts();
        let top = mount_of(&all, Path::new("/srv/nas/video/a.mp4"));
        assert_eq!(top.map(|m| m.fs_type.as_str()), Some("ext4"));
        assert_eq!(top.map(|m| m.source.as_str()), Some("/dev/sdc1"));
    }

    #[test]
    fn mount_points() {
        let all = mounts();
        assert!(is_mount_point(&all, Path::new("/srv/nas")));
        assert!(is_mount_point(&all, Path::new("/mnt/my share")));
        assert!(!is_mount_point(&all, Path::new("/srv/nas/video")));
        assert!(!is_mount_point(&all, Path::new("/srv")));
    }

    #[test]
    fn reads_this_machine() {
        // Only where /proc is there; the parse is what the other tests check.
        if let Ok(all) = read() {
            assert!(mount_of(&all, Path::new("/")).is_some());
        }
    }
}
