//! `upload.bandwidth_limit`: one token bucket shared by every upload, at the
//! rate the limit says holds now, and its scheduled pauses (no new chunk
//! starts; one in flight finishes at the rate it had).
//!
//! A timetable is followed without a reload: the next boundary is kept as a
//! wall-clock instant, and [`Throttle::take`] compares the clock with it (one
//! clock read and one atomic load per frame). Whoever gets past it first (a
//! `take`, a pause wait, the daemon's boundary timer, a scrape) looks the
//! table up again; every change of what holds is logged once. The clock
//! (and time zone) is a [`Clock`], so tests can move time.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{BandwidthLimit, Rate};

/// Even with no boundary due, what holds is looked up again this often: the
/// time zone may have changed (`/etc/localtime`), and sleeps run on the
/// monotonic clock, which a suspend or a clock step leaves behind.
const RECHECK_AT_LEAST: Duration = Duration::from_secs(60);
/// `recheck_at_ms` of a limit that never changes by itself.
const NEVER: i64 = i64::MAX;

/// Where the time comes from: the system's, or a test's.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The wall clock.
    fn now(&self) -> Timestamp;
    /// The local time zone a timetable is read in.
    fn zone(&self) -> TimeZone;
}

/// The system clock, in the system time zone: `TZ` (an IANA name, a POSIX
/// rule or a file), else `/etc/localtime`, else UTC.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
    fn zone(&self) -> TimeZone {
        // Cached by jiff, which notices a changed zone within minutes.
        TimeZone::try_system().unwrap_or(TimeZone::UTC)
    }
}

/// What the limit lets uploads do now: what `/metrics`, the STATUS line and
/// the pause waits read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthNow {
    /// The rate chunks are sent at now, in bytes per second; 0 = unlimited.
    /// During a pause, the rate a chunk in flight finishes at.
    pub bytes_per_second: u64,
    /// A scheduled pause: no new chunk starts.
    pub paused: bool,
    /// In words: `10 MiB/s until 18:00 (timetable), then unlimited`.
    pub description: String,
}

#[derive(Debug)]
pub struct Throttle {
    /// Bytes per second; 0 = unlimited. Read on every frame.
    rate: AtomicU64,
    /// Unix ms at which what holds is looked up again ([`NEVER`] for a
    /// plain value).
    recheck_at_ms: AtomicI64,
    /// The configured limit (replaced on reload).
    limit: Mutex<BandwidthLimit>,
    /// What holds now; pause waits watch it.
    now: watch::Sender<BandwidthNow>,
    clock: Arc<dyn Clock>,
    bucket: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A throttle following `limit` on the system clock; logs what holds.
    pub fn new(limit: BandwidthLimit) -> Throttle {
        Throttle::with_clock(limit, Arc::new(SystemClock))
    }

    /// A throttle following `limit` on `clock`.
    pub fn with_clock(limit: BandwidthLimit, clock: Arc<dyn Clock>) -> Throttle {
        let throttle = Throttle {
            rate: AtomicU64::new(0),
            recheck_at_ms: AtomicI64::new(NEVER),
            limit: Mutex::new(limit),
            now: watch::channel(BandwidthNow {
                bytes_per_second: 0,
                paused: false,
                description: Rate::Unlimited.to_string(),
            })
            .0,
            clock,
            bucket: Mutex::new((0.0, Instant::now())),
        };
        throttle.refresh(true);
        throttle
    }

    /// A new limit (SIGHUP): applied at once, and what holds is logged.
    pub(crate) fn set_limit(&self, limit: BandwidthLimit) {
        *self.limit.lock().unwrap_or_else(|p| p.into_inner()) = limit;
        self.refresh(true);
    }

    /// What holds now (looked up again first if a boundary has passed).
    pub fn now(&self) -> BandwidthNow {
        self.at_boundary();
        self.now.borrow().clone()
    }

    /// Waits until `n` bytes may be sent.
    pub async fn take(&self, n: usize) {
        self.at_boundary();
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return;
        }
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let rate = rate as f64;
            // Allow a burst of at most a quarter second of traffic.
            let burst = rate / 4.0;
            b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(burst);
            b.1 = now;
            b.0 -= n as f64;
            if b.0 < 0.0 {
                Duration::from_secs_f64(-b.0 / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Why no new chunk may start now, when a scheduled pause holds: the
    /// note a file given back to the queue carries.
    pub(crate) fn paused(&self) -> Option<String> {
        let now = self.now();
        now.paused.then(|| {
            format!(
                "waiting: upload.bandwidth_limit: {} (scheduled, not a fault)",
                now.description
            )
        })
    }

    /// Waits until no scheduled pause holds; false if cancelled first.
    pub(crate) async fn wait_unpaused(&self, cancel: &CancellationToken) -> bool {
        loop {
            let mut changes = self.now.subscribe();
            self.at_boundary();
            if !changes.borrow_and_update().paused {
                return true;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(self.until_recheck()) => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }

    /// Sleeps until the next boundary of a timetable (at most a minute),
    /// then applies what holds; never returns for a plain value. The
    /// daemon runs it so that a boundary is logged (and shown) on time
    /// even while nothing uploads.
    pub(crate) async fn next_boundary(&self) {
        if self.recheck_at_ms.load(Ordering::Relaxed) == NEVER {
            return std::future::pending().await;
        }
        tokio::time::sleep(self.until_recheck()).await;
        self.at_boundary();
    }

    /// How long until what holds is looked up again (at most
    /// [`RECHECK_AT_LEAST`]).
    fn until_recheck(&self) -> Duration {
        let at = self.recheck_at_ms.load(Ordering::Relaxed);
        let now = self.clock.now().as_millisecond();
        let ms = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
        Duration::from_millis(ms).clamp(Duration::from_millis(10), RECHECK_AT_LEAST)
    }

    /// Looks the limit up again if its next boundary has passed. The hot
    /// path: a plain value costs one atomic load.
    fn at_boundary(&self) {
        let at = self.recheck_at_ms.load(Ordering::Relaxed);
        if at != NEVER && self.clock.now().as_millisecond() >= at {
            self.refresh(false);
        }
    }

    /// Applies what the limit says holds now; logs it when it changed (or
    /// when `announce`, at start and on reload).
    fn refresh(&self, announce: bool) {
        let limit = self.limit.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock: two takers past one boundary log it once.
        let now = self.clock.now();
        let zone = self.clock.zone();
        let holding = limit.at(zone.to_datetime(now));
        let bytes_per_second = match holding.rate {
            Rate::Limit(bytes) => bytes,
            Rate::Unlimited => 0,
            // The chunk in flight finishes at the rate it had.
            Rate::Pause => self.rate.load(Ordering::Relaxed),
        };
        let recheck = match holding.change {
            None if !holding.timetable => NEVER,
            None => now
                .as_millisecond()
                .saturating_add(millis(RECHECK_AT_LEAST)),
            Some((at, _)) => {
                let ceiling = now
                    .as_millisecond()
                    .saturating_add(millis(RECHECK_AT_LEAST));
                // A boundary that the zone cannot place (or places in the
                // past, around a clock change) is looked at again shortly.
                let at = boundary_instant(&zone, now, at).map_or(ceiling, |at| at.as_millisecond());
                at.clamp(now.as_millisecond().saturating_add(1000), ceiling)
            }
        };
        self.rate.store(bytes_per_second, Ordering::Relaxed);
        self.recheck_at_ms.store(recheck, Ordering::Relaxed);
        let next = BandwidthNow {
            bytes_per_second,
            paused: holding.rate == Rate::Pause,
            description: holding.to_string(),
        };
        let changed = self.now.send_if_modified(|current| {
            let changed = *current != next;
            *current = next.clone();
            changed
        });
        let quiet = !holding.timetable && holding.rate == Rate::Unlimited;
        if changed || (announce && !quiet) {
            let zone = zone.iana_name().unwrap_or("local time");
            if holding.timetable {
                info!(zone, "bandwidth: {}", next.description);
            } else {
                info!("bandwidth: {}", next.description);
            }
        }
    }
}

/// When the local clock of `zone` first reads `boundary` (or later) after
/// `now`: `boundary` in that zone, except that one in a daylight-saving gap
/// (02:30 on the night the clocks skip from 02:00 to 03:00) is reached at
/// the jump, as a look at the table then says.
fn boundary_instant(zone: &TimeZone, now: Timestamp, boundary: DateTime) -> Option<Timestamp> {
    let at = zone.to_timestamp(boundary).ok()?;
    let jump = zone
        .following(now)
        .next()
        .map(|transition| transition.timestamp())
        .filter(|&jump| jump < at && zone.to_datetime(jump) >= boundary);
    Some(jump.unwrap_or(at))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// A clock set by the test, then running with tokio's clock (which a
    /// test with paused time moves on by itself when all else waits).
    #[derive(Debug)]
    struct Hands {
        set: Mutex<(Timestamp, tokio::time::Instant)>,
        zone: TimeZone,
    }

    impl Hands {
        fn at(local: &str, zone: TimeZone) -> Arc<Hands> {
            let hands = Arc::new(Hands {
                set: Mutex::new((Timestamp::UNIX_EPOCH, tokio::time::Instant::now())),
                zone,
            });
            hands.set(local);
            hands
        }
        fn set(&self, local: &str) {
            let at = local.parse::<jiff::civil::DateTime>().unwrap();
            let at = self.zone.to_timestamp(at).unwrap();
            *self.set.lock().unwrap() = (at, tokio::time::Instant::now());
        }
        fn local(&self) -> jiff::civil::DateTime {
            self.zone.to_datetime(self.now())
        }
    }

    impl Clock for Hands {
        fn now(&self) -> Timestamp {
            let (at, since) = *self.set.lock().unwrap();
            let run = jiff::SignedDuration::try_from(since.elapsed()).unwrap();
            at.checked_add(run).unwrap()
        }
        fn zone(&self) -> TimeZone {
            self.zone.clone()
        }
    }

    fn limit(text: &str) -> BandwidthLimit {
        BandwidthLimit::parse(text).unwrap()
    }

    #[tokio::test]
    async fn throttle_limits_the_rate() {
        let t = Throttle::new(BandwidthLimit::bytes(4 * MIB));
        let start = Instant::now();
        for _ in 0..8 {
            t.take(256 * 1024).await; // 2 MiB in all at 4 MiB/s
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        let t = Throttle::new(BandwidthLimit::bytes(0));
        let start = Instant::now();
        t.take(usize::MAX / 2).await;
        assert!(start.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn the_rate_switches_at_a_boundary_without_a_reload() {
        let clock = Hands::at("2024-06-03T17:59:58", TimeZone::UTC);
        let t = Throttle::with_clock(limit("08:00,10MiB 18:00,off"), clock.clone());
        assert_eq!(t.rate.load(Ordering::Relaxed), 10 * MIB);
        assert_eq!(
            t.now().description,
            "10 MiB/s until 18:00 (timetable), then unlimited"
        );
        // The next take past 18:00 sees the new rate: nothing else runs.
        clock.set("2024-06-03T18:00:00");
        t.take(1).await;
        assert_eq!(t.rate.load(Ordering::Relaxed), 0);
        let now = t.now();
        assert_eq!((now.bytes_per_second, now.paused), (0, false));
        assert_eq!(
            now.description,
            "unlimited until 08:00 (timetable), then 10 MiB/s"
        );
        // The boundary is a wall-clock instant in the zone: 08:00 local.
        let zone = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let clock = Hands::at("2024-06-03T07:59:00", zone.clone());
        let t = Throttle::with_clock(limit("08:00,10MiB 18:00,off"), clock.clone());
        let eight = zone
            .to_timestamp("2024-06-03T08:00".parse().unwrap())
            .unwrap();
        assert_eq!(
            t.recheck_at_ms.load(Ordering::Relaxed),
            eight.as_millisecond()
        );
        clock.set("2024-06-03T08:00:01");
        t.take(1).await;
        assert_eq!(t.rate.load(Ordering::Relaxed), 10 * MIB);
        // 02:30 on the night the clocks skip from 02:00 to 03:00: it holds
        // from the jump (01:00 UTC), as a look at the table then says.
        let clock = Hands::at("2024-03-31T01:59:00", zone.clone());
        let t = Throttle::with_clock(limit("02:30,4MiB 12:00,off"), clock.clone());
        assert_eq!(t.rate.load(Ordering::Relaxed), 0);
        let jump: Timestamp = "2024-03-31T01:00:00Z".parse().unwrap();
        assert_eq!(
            t.recheck_at_ms.load(Ordering::Relaxed),
            jump.as_millisecond()
        );
        clock.set("2024-03-31T03:00:00");
        assert_eq!(t.now().bytes_per_second, 4 * MIB);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_new_chunks_until_its_window_ends() {
        let clock = Hands::at("2024-06-03T12:00:00", TimeZone::UTC);
        let table = limit("00:00,4MiB 12:00,pause 13:00,off");
        let t = Throttle::with_clock(table.clone(), clock.clone());
        let note = t.paused().expect("paused at noon");
        assert!(note.contains("paused until 13:00"), "{note}");
        assert!(note.contains("upload.bandwidth_limit"), "{note}");
        // The wait sleeps through the window and ends at its boundary (in
        // tokio's paused time, which runs on while everything waits).
        let cancel = CancellationToken::new();
        assert!(t.wait_unpaused(&cancel).await);
        let ended = clock.local();
        assert!(
            ended >= "2024-06-03T13:00:00".parse().unwrap()
                && ended < "2024-06-03T13:01:00".parse().unwrap(),
            "the wait ended at {ended}"
        );
        assert!(t.paused().is_none());
        assert_eq!(
            t.now().description,
            "unlimited until 00:00 (timetable), then 4 MiB/s"
        );
        // The daemon's boundary timer applies the next change by itself.
        clock.set("2024-06-03T23:59:30");
        for _ in 0..3 {
            t.next_boundary().await;
        }
        assert_eq!(t.rate.load(Ordering::Relaxed), 4 * MIB);
        // Shutdown ends a wait.
        clock.set("2024-06-03T12:30:00");
        t.set_limit(table);
        cancel.cancel();
        assert!(!t.wait_unpaused(&cancel).await);
        assert!(t.paused().is_some());
    }

    #[tokio::test]
    async fn entering_a_pause_keeps_the_rate_of_the_chunk_in_flight() {
        let clock = Hands::at("2024-06-03T11:59:00", TimeZone::UTC);
        let t = Throttle::with_clock(limit("00:00,4MiB 12:00,pause 13:00,off"), clock.clone());
        clock.set("2024-06-03T12:00:00");
        let now = t.now();
        assert!(now.paused);
        assert_eq!(now.bytes_per_second, 4 * MIB);
        // A reload replaces the table at once, and wakes the waits.
        t.set_limit(BandwidthLimit::bytes(0));
        assert!(t.paused().is_none());
        assert_eq!(t.recheck_at_ms.load(Ordering::Relaxed), NEVER);
    }
}
