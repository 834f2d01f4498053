//! `sd_notify(3)` without libsystemd: one datagram per message to the
//! socket named by `$NOTIFY_SOCKET`, a path or an abstract `@name`.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, warn};

/// How long a send may block. PID 1 drains its notification socket
/// continuously; a full queue means it is stuck, and then skipping a status
/// line beats stalling a runtime thread.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to the service manager's notification socket. Cloning is
/// cheap (one socket shared).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// Unbound: each message is addressed, so a socket systemd re-creates
    /// (daemon-reexec) is found again by name.
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for log lines.
    shown: String,
    /// `$WATCHDOG_USEC`, when systemd expects this process to ping.
    watchdog: Option<Duration>,
    /// Whether the last send failed, so a dead socket is logged once, not
    /// every few seconds.
    failing: AtomicBool,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("socket", &self.inner.shown)
            .field("watchdog", &self.inner.watchdog)
            .finish()
    }
}

impl Notifier {
    /// The notifier systemd set up for this process: `None` when not run by
    /// systemd with `Type=notify` (no `$NOTIFY_SOCKET`), or when the variable
    /// cannot be used (logged).
    pub(crate) fn from_env() -> Option<Notifier> {
        Notifier::from_vars(|name| std::env::var_os(name), std::process::id())
    }

    /// [`Notifier::from_env`] with the variables looked up by `get` and this
    /// process's id given, so tests never touch the process environment.
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the
    /// watchdog is ours only if `WATCHDOG_PID` is absent or is `pid`).
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>, pid: u32) -> Option<Notifier> {
        let socket = get("NOTIFY_SOCKET").filter(|s| !s.is_empty())?;
        let shown = socket.to_string_lossy().into_owned();
        let text = |name: &str| get(name).map(|v| v.to_string_lossy().trim().to_owned());
        let for_us = match text("WATCHDOG_PID") {
            None => true,
            Some(p) => p.parse::<u32>().is_ok_and(|p| p == pid),
        };
        let watchdog = match text("WATCHDOG_USEC").filter(|_| for_us) {
            None => None,
            Some(usec) => match usec.parse::<u64>() {
                Ok(usec) if usec > 0 => Some(Duration::from_micros(usec)),
                _ => {
                    warn!("WATCHDOG_USEC={usec:?} is not a positive number; no watchdog pings");
                    None
                }
            },
        };
        match Notifier::connect_with(socket.as_bytes(), watchdog) {
            Ok(n) => Some(n),
            Err(e) => {
                error!(
                    "NOTIFY_SOCKET={shown:?} cannot be used ({e}); systemd will not hear that \
                     ingestd is ready or alive"
                );
                None
            }
        }
    }

    /// A notifier for the socket `addr`: an absolute path, or `@name` for
    /// an abstract socket (Linux).
    pub fn connect(addr: &[u8]) -> io::Result<Notifier> {
        Notifier::connect_with(addr, None)
    }

    fn connect_with(addr: &[u8], watchdog: Option<Duration>) -> io::Result<Notifier> {
        let shown = String::from_utf8_lossy(addr).into_owned();
        let target = match addr.first() {
            Some(b'/') => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(addr))?,
            Some(b'@') => abstract_addr(&addr[1..])?,
            _ => return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an absolute path nor an @abstract name (other socket kinds are not supported)",
            )),
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Notifier {
            inner: Arc::new(Inner {
                socket,
                addr: target,
                shown,
                watchdog,
                failing: AtomicBool::new(false),
            }),
        })
    }

    /// `$WATCHDOG_USEC`: the time systemd waits for a ping before it kills
    /// the service, if it expects pings from this process.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.inner.watchdog
    }

    /// How often to send WATCHDOG=1: half the timeout, as sd_watchdog_enabled(3) advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.inner.watchdog.map(|d| d / 2)
    }

    /// Sends one message (`KEY=value` lines) as is.
    pub fn notify(&self, message: &str) -> io::Result<usize> {
        self.inner
            .socket
            .send_to_addr(message.as_bytes(), &self.inner.addr)
    }

    /// Sends `message`; a failure is logged (once until sends work again),
    /// never returned: losing a notification must not stop the daemon.
    fn send(&self, message: &str) {
        match self.notify(message) {
            Ok(_) => {
                if self.inner.failing.swap(false, Ordering::Relaxed) {
                    warn!("notifications to systemd work again");
                }
            }
            Err(e) => {
                if !self.inner.failing.swap(true, Ordering::Relaxed) {
                    warn!(
                        socket = %self.inner.shown,
                        "cannot notify systemd: {e}; it may consider ingestd stuck"
                    );
                }
            }
        }
    }

    /// READY=1: start-up (or a reload) is complete.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// STATUS=…, the line `systemctl status` shows. Line breaks become spaces.
    pub fn status(&self, status: &str) {
        let line: String = status
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.send(&format!("STATUS={line}"));
    }

    /// WATCHDOG=1: alive.
    pub(crate) fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// STOPPING=1: shutting down (systemd stops expecting watchdog pings).
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// RELOADING=1 with MONOTONIC_USEC (systemd ≥ 253 uses it to match the
    /// notification to the reload it asked for). Send [`Notifier::ready`]
    /// when the reload is over, whether it succeeded or not.
    pub fn reloading(&self) {
        match monotonic_usec() {
            Some(usec) => self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")),
            None => self.send("RELOADING=1"),
        }
    }

    /// EXTEND_TIMEOUT_USEC=…: the start-up (or stop) takes longer; systemd
    /// waits `by` more from now instead of failing the unit.
    pub(crate) fn extend_timeout(&self, by: Duration) {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()));
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// `CLOCK_MONOTONIC` in microseconds, or `None` if it cannot be read.
///
/// `std::time::Instant` is `CLOCK_MONOTONIC` on Linux, but it offers no
/// absolute value; its `Debug` output shows the raw `timespec`
/// (`Instant { tv_sec: 12, tv_nsec: 34 }`). Reading that is the only way to
/// the clock without a C binding; if the format ever changes, MONOTONIC_USEC
/// is simply left out (systemd accepts RELOADING=1 without it).
pub(crate) fn monotonic_usec() -> Option<u64> {
    let text = format!("{:?}", std::time::Instant::now());
    let field = |name: &str| -> Option<u64> {
        let start = text.find(name)? + name.len();
        let digits: String = text[start..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let secs = field("tv_sec:")?;
    let nanos = field("tv_nsec:")?;
    if nanos >= 1_000_000_000 {
        return None;
    }
    secs.checked_mul(1_000_000)?.checked_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_monotonic_clock_is_readable_and_follows_instant() {
        let a = monotonic_usec().expect("Instant's Debug shows tv_sec and tv_nsec on Linux");
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let b = monotonic_usec().expect("readable");
        let d = b - a;
        assert!((20_000..2_000_000).contains(&d), "{d} µs");
    }

    #[test]
    fn only_paths_and_abstract_names_are_accepted() {
        assert!(Notifier::connect(b"relative/sock").is_err());
        assert!(Notifier::connect(b"vsock:2:1234").is_err());
        assert!(Notifier::connect(b"/run/systemd/notify").is_ok());
    }
}
