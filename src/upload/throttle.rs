//! `upload.bandwidth_limit`: one token bucket shared by every upload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Throttle {
    /// Bytes per second; 0 = unlimited.
    rate: AtomicU64,
    bucket: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(rate: u64) -> Throttle {
        Throttle {
            rate: AtomicU64::new(rate),
            bucket: Mutex::new((0.0, Instant::now())),
        }
    }

    pub(crate) fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// Waits until `n` bytes may be sent.
    pub async fn take(&self, n: usize) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn throttle_limits_the_rate() {
        let t = Throttle::new(4 * MIB);
        let start = Instant::now();
        for _ in 0..8 {
            t.take(256 * 1024).await; // 2 MiB in all at 4 MiB/s
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        let t = Throttle::new(0);
        let start = Instant::now();
        t.take(usize::MAX / 2).await;
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
