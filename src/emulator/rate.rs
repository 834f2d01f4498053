//! Fixed-window rate limits and the `X-RateLimit-*` headers, one bucket per
//! kind of request as api.video counts them: uploads, and the API-key
//! endpoints' reads and writes (its limits per minute: uploads 100, writes
//! 200, reads 500 in production; 40, 40 and 100 in the sandbox).
//!
//! It counts and formats; refusing a request is the handlers' job.
//! Imports nothing from the product.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

use super::store::lock;

/// api.video's production limit of reads (`GET` of the API-key endpoints) per minute.
pub const PRODUCTION_READS_PER_MINUTE: u32 = 500;
/// api.video's production limit of writes (`POST`, `DELETE` …) per minute.
pub const PRODUCTION_WRITES_PER_MINUTE: u32 = 200;

/// Which rate-limit bucket a request counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateBucket {
    /// `POST /upload`.
    Uploads,
    /// `GET /upload-tokens`, `GET /upload-tokens/{id}`.
    Reads,
    /// `POST /upload-tokens`, `DELETE /upload-tokens/{id}`.
    Writes,
}

/// The three buckets, each with its own limit and windows.
#[derive(Debug)]
pub(crate) struct Buckets {
    uploads: Mutex<RateLimiter>,
    reads: Mutex<RateLimiter>,
    writes: Mutex<RateLimiter>,
}

impl Buckets {
    /// Limits of uploads, reads and writes per `window` (0 = unlimited).
    pub(crate) fn new(
        uploads: u32,
        reads: u32,
        writes: u32,
        window: Duration,
        now: Instant,
    ) -> Buckets {
        Buckets {
            uploads: Mutex::new(RateLimiter::new(uploads, window, now)),
            reads: Mutex::new(RateLimiter::new(reads, window, now)),
            writes: Mutex::new(RateLimiter::new(writes, window, now)),
        }
    }

    fn bucket(&self, bucket: RateBucket) -> &Mutex<RateLimiter> {
        match bucket {
            RateBucket::Uploads => &self.uploads,
            RateBucket::Reads => &self.reads,
            RateBucket::Writes => &self.writes,
        }
    }

    /// Counts one request in `bucket`.
    pub(crate) fn acquire(&self, bucket: RateBucket, now: Instant) -> RateInfo {
        lock(self.bucket(bucket)).acquire(now)
    }

    /// The current values of `bucket`, without counting a request.
    pub(crate) fn peek(&self, bucket: RateBucket, now: Instant) -> RateInfo {
        lock(self.bucket(bucket)).peek(now)
    }

    /// Changes one bucket's limit and window, starting a fresh window.
    pub(crate) fn reconfigure(
        &self,
        bucket: RateBucket,
        limit: u32,
        window: Duration,
        now: Instant,
    ) {
        lock(self.bucket(bucket)).reconfigure(limit, window, now);
    }
}

pub(crate) const LIMIT_HEADER: &str = "x-ratelimit-limit";
pub(crate) const REMAINING_HEADER: &str = "x-ratelimit-remaining";
pub(crate) const RETRY_AFTER_HEADER: &str = "x-ratelimit-retry-after";

/// The values of the three headers for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateInfo {
    /// Whether the request that asked was admitted.
    pub(crate) allowed: bool,
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Seconds until the current window ends (at least 1 when exhausted).
    pub(crate) retry_after: u64,
}

impl RateInfo {
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT_HEADER, HeaderValue::from(self.limit));
        headers.insert(REMAINING_HEADER, HeaderValue::from(self.remaining));
        headers.insert(RETRY_AFTER_HEADER, HeaderValue::from(self.retry_after));
    }
}

/// Fixed windows of `window` starting at the limiter's creation; `limit == 0`
/// means unlimited (the headers then advertise `u32::MAX`).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: u32,
    window: Duration,
    origin: Instant,
    current: u128,
    used: u32,
}

impl RateLimiter {
    pub(crate) fn new(limit: u32, window: Duration, now: Instant) -> RateLimiter {
        RateLimiter {
            limit,
            window: window.max(Duration::from_millis(1)),
            origin: now,
            current: 0,
            used: 0,
        }
    }

    /// Changes the limit and window, starting a fresh window.
    pub(crate) fn reconfigure(&mut self, limit: u32, window: Duration, now: Instant) {
        *self = RateLimiter::new(limit, window, now);
    }

    /// Counts one upload request.
    pub(crate) fn acquire(&mut self, now: Instant) -> RateInfo {
        self.roll(now);
        let allowed = self.limit == 0 || self.used < self.limit;
        if allowed && self.limit != 0 {
            self.used += 1;
        }
        self.info(now, allowed)
    }

    /// The current values, without counting a request.
    pub(crate) fn peek(&mut self, now: Instant) -> RateInfo {
        self.roll(now);
        self.info(now, true)
    }

    fn roll(&mut self, now: Instant) {
        let index = now.saturating_duration_since(self.origin).as_nanos() / self.window.as_nanos();
        if index != self.current {
            self.current = index;
            self.used = 0;
        }
    }

    fn info(&self, now: Instant, allowed: bool) -> RateInfo {
        if self.limit == 0 {
            return RateInfo {
                allowed: true,
                limit: u64::from(u32::MAX),
                remaining: u64::from(u32::MAX),
                retry_after: 0,
            };
        }
        let window_ns = self.window.as_nanos();
        let end_ns = (self.current + 1) * window_ns;
        let elapsed_ns = now.saturating_duration_since(self.origin).as_nanos();
        let left_ns = end_ns.saturating_sub(elapsed_ns);
        let secs = u64::try_from(left_ns.div_ceil(1_000_000_000)).unwrap_or(u64::MAX);
        RateInfo {
            allowed,
            limit: u64::from(self.limit),
            remaining: u64::from(self.limit - self.used.min(self.limit)),
            retry_after: secs.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(2, Duration::from_secs(10), t0);
        let a = rl.acquire(t0);
        assert!(a.allowed);
        assert_eq!((a.limit, a.remaining, a.retry_after), (2, 1, 10));
        let b = rl.acquire(t0 + Duration::from_millis(2500));
        assert!(b.allowed);
        assert_eq!((b.remaining, b.retry_after), (0, 8));
        let c = rl.acquire(t0 + Duration::from_millis(9990));
        assert!(!c.allowed);
        assert_eq!((c.remaining, c.retry_after), (0, 1));
        let d = rl.acquire(t0 + Duration::from_secs(10));
        assert!(d.allowed);
        assert_eq!((d.remaining, d.retry_after), (1, 10));
        assert_eq!(rl.peek(t0 + Duration::from_secs(11)).remaining, 1);
    }

    #[test]
    fn buckets_count_apart() {
        let t0 = Instant::now();
        let b = Buckets::new(1, 2, 0, Duration::from_secs(60), t0);
        assert!(b.acquire(RateBucket::Uploads, t0).allowed);
        assert!(!b.acquire(RateBucket::Uploads, t0).allowed);
        let r = b.acquire(RateBucket::Reads, t0);
        assert!(r.allowed);
        assert_eq!((r.limit, r.remaining), (2, 1));
        assert!(b.acquire(RateBucket::Reads, t0).allowed);
        assert!(!b.acquire(RateBucket::Reads, t0).allowed);
        for _ in 0..1000 {
            assert!(b.acquire(RateBucket::Writes, t0).allowed, "0 = unlimited");
        }
        assert_eq!(b.peek(RateBucket::Uploads, t0).remaining, 0);
        b.reconfigure(RateBucket::Uploads, 5, Duration::from_secs(1), t0);
        assert_eq!(b.peek(RateBucket::Uploads, t0).remaining, 5);
        assert_eq!(b.peek(RateBucket::Reads, t0).remaining, 0, "untouched");
    }

    #[test]
    fn unlimited() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(0, Duration::from_secs(60), t0);
        for _ in 0..1000 {
            assert!(rl.acquire(t0).allowed);
        }
    }
}
