//! Real mounts (tmpfs, bind mounts, `umount -l`, …) that stay private to one
//! test: a private mount namespace, held open by a `sleep` process.
//!
//! A test binary is multi-threaded, so it cannot `unshare(CLONE_NEWNS)`
//! itself. Instead `unshare --mount --propagation private -- sleep infinity`
//! holds a namespace open; whatever must see its mounts (the daemon, `mount`,
//! `umount`, `cp -a`) runs inside it through `nsenter -t HOLDER -m`, and the
//! test process reaches the namespace's files through `/proc/HOLDER/root`.
//! The namespace, and every mount in it, dies with its last process.
//!
//! Things worth knowing (all checked on util-linux 2.38):
//! - Entering a mount namespace resets the working directory to the
//!   namespace's root, so a command run through `nsenter -m` starts in `/`,
//!   and `Command::current_dir` on the nsenter process is lost. `cmd` and
//!   `wrap` therefore pass `--wdns=DIR`, which nsenter resolves *inside* the
//!   namespace. (`--wd=DIR` is opened *before* entering: under a directory
//!   that is a mount point in the namespace it lands on the host's
//!   underlying directory, not on the mount.)
//! - Without `--fork`, nsenter execs the program (`-F` makes that explicit),
//!   so the pid of the spawned `Child` IS the program: signals (SIGTERM,
//!   SIGKILL) sent to it hit the daemon, not a forwarding parent.
//! - `/proc/HOLDER/root/…` resolves an *absolute* symlink met on the way in
//!   the test's (host) view, not the namespace's; relative ones stay inside.
//!   Give `path` paths without symlinks (the temp dirs are).
//! - `Command` has no getter for `env_clear`, so `wrap` cannot carry it over.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the holder may take to unshare and exec `sleep`.
const HOLDER_READY: Duration = Duration::from_secs(10);

/// A private mount namespace held open by a `sleep` process; everything that
/// must see its mounts (the daemon, mount/umount/cp commands) runs inside it
/// via nsenter, and the test reaches its files through /proc/<holder>/root.
pub struct Ns {
    holder: Child,
    pid: u32,
}

/// Quotes `s` for `sh` (single quotes; `'` as `'\''`).
pub fn sh_quote(s: impl AsRef<OsStr>) -> String {
    let s = String::from_utf8_lossy(s.as_ref().as_bytes()).into_owned();
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Refuses: a loud skip, or a panic when CI_REQUIRE_MOUNTS=1.
fn refuse(test: &str, why: &str) -> Option<Ns> {
    if std::env::var_os("CI_REQUIRE_MOUNTS").is_some_and(|v| v == "1") {
        panic!("{test}: mount namespaces are refused here ({why}), and CI_REQUIRE_MOUNTS=1");
    }
    eprintln!("\n*** SKIPPED: {test}: mount namespaces are refused here ({why}) ***\n");
    None
}

fn ns_link(pid: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// Mount points in a mountinfo text (field 5, octal escapes undone).
fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(OsStr::from_bytes(&unescape(f))))
        .collect()
}

/// mountinfo's escapes: `\040` (space), `\011`, `\012`, `\134`.
fn unescape(f: &str) -> Vec<u8> {
    let b = f.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

impl Ns {
    /// None (after printing a loud "SKIPPED: <test>: mount namespaces are
    /// refused here (<why>)" to stderr) when the machine refuses (not root,
    /// unshare fails, mounting a tmpfs inside fails). With CI_REQUIRE_MOUNTS=1
    /// refusing is a panic instead (CI must run these tests).
    pub fn new(test: &str) -> Option<Ns> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return refuse(test, &format!("not root: euid {euid}"));
        }
        let holder = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sleep",
                "infinity",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let holder = match holder {
            Ok(h) => h,
            Err(e) => return refuse(test, &format!("cannot run unshare: {e}")),
        };
        let pid = holder.id();
        let mut ns = Ns { holder, pid };
        if let Err(why) = ns.wait_holder() {
            return refuse(test, &why);
        }
        if let Err(why) = ns.probe() {
            return refuse(test, &why);
        }
        Some(ns)
    }

    /// Waits until the holder is in its own mount namespace AND has exec'd
    /// `sleep`: `unshare` makes the mounts private only after unshare(2), so
    /// a namespace that merely differs may still propagate mounts to the host.
    fn wait_holder(&mut self) -> Result<(), String> {
        let host = ns_link("self").ok_or("cannot read /proc/self/ns/mnt")?;
        let pid = self.pid.to_string();
        let deadline = Instant::now() + HOLDER_READY;
        loop {
            if let Some(status) = self.holder.try_wait().map_err(|e| e.to_string())? {
                let mut err = String::new();
                if let Some(mut s) = self.holder.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                return Err(format!("unshare exited {status}: {}", err.trim()));
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" && ns_link(&pid).is_some_and(|l| l != host) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the unshare holder was not ready in {HOLDER_READY:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Every mount in the namespace must be private: none "shared:N".
        let info = self.mountinfo();
        if let Some(l) = info.lines().find(|l| {
            l.split(" - ")
                .next()
                .is_some_and(|head| head.split(' ').any(|f| f.starts_with("shared:")))
        }) {
            return Err(format!("--propagation private left a shared mount: {l}"));
        }
        Ok(())
    }

    /// Mounts a tmpfs inside, checks that the host does not see it, unmounts.
    fn probe(&self) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = sh_quote(dir.path());
        let out = self.try_sh(&format!("mount -t tmpfs -o size=1m tmpfs {d}"));
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs inside failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let leaked = mount_points(&host).iter().any(|m| m == dir.path());
        let seen = self.is_mounted(dir.path());
        let _ = self.try_sh(&format!("umount {d}"));
        assert!(
            !leaked,
            "a tmpfs mounted in the namespace leaked to the host: {}",
            dir.path().display()
        );
        if !seen {
            return Err("a tmpfs mounted through nsenter is not in the holder's mountinfo".into());
        }
        Ok(())
    }

    /// The holder's pid (its namespace is the test's namespace).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `nsenter -t PID -m -F --wdns=CWD -- program` (more args and env can
    /// be added). The working directory is the test's, resolved inside the
    /// namespace; `current_dir` on the returned Command has no effect (use
    /// `wrap`, or `cd` in a script).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        self.cmd_at(&cwd, program.as_ref())
    }

    fn cmd_at(&self, wd: &Path, program: &OsStr) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.pid.to_string())
            .arg("-m")
            .arg("-F")
            .arg({
                let mut a = std::ffi::OsString::from("--wdns=");
                a.push(wd);
                a
            })
            .arg("--")
            .arg(program);
        c
    }

    /// Runs `sh -c script` inside; panics with the script, status, stdout
    /// and stderr on failure; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.try_sh(script);
        assert!(
            out.status.success(),
            "in the namespace, `{script}` failed: {}",
            super::text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sh -c script` inside; its Output, unchecked.
    pub fn try_sh(&self, script: &str) -> Output {
        self.cmd("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run nsenter")
    }

    /// `c` (program, args, env set and removed, current_dir) to run inside
    /// the namespace. Stdio is not copied (set it after); nor is env_clear
    /// (Command cannot tell).
    pub fn wrap(&self, c: &Command) -> Command {
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let wd = match c.get_current_dir() {
            Some(d) => here.join(d),
            None => here,
        };
        let mut n = self.cmd_at(&wd, c.get_program());
        n.args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => n.env(k, v),
                None => n.env_remove(k),
            };
        }
        n
    }

    /// The absolute path `p` as seen inside the namespace, reachable from
    /// the test process: /proc/<holder pid>/root/<p>. (An absolute symlink
    /// on the way resolves in the host's view.)
    pub fn path(&self, p: &Path) -> PathBuf {
        let rel = p
            .strip_prefix("/")
            .unwrap_or_else(|_| panic!("Ns::path wants an absolute path, not {}", p.display()));
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(rel)
    }

    /// The holder's /proc/PID/mountinfo: the namespace's mounts.
    pub fn mountinfo(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid))
            .expect("cannot read the holder's mountinfo")
    }

    /// Whether something is mounted exactly at `p` inside the namespace.
    pub fn is_mounted(&self, p: &Path) -> bool {
        mount_points(&self.mountinfo()).iter().any(|m| m == p)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
