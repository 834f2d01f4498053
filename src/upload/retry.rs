//! When to try again: the jittered backoff, and the [`Outage`] that lets one
//! probe stand for every file waiting on a server that cannot be reached.
//! Decides delays only; the journal records them (see `attempt`).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Backoff: full jitter over `BASE · 2^(attempt-1)`, capped.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// While the server cannot be reached, one waiting file retries at least
/// this often (see [`Outage`]).
pub const OUTAGE_PROBE: Duration = Duration::from_secs(5);

/// Full-jitter exponential backoff for the `attempt`-th failure (1-based).
pub fn backoff_delay(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(BACKOFF_CAP);
    // At least 100 ms, so a storm of failures never spins.
    let ms = fastrand::u64(100..=u64::try_from(ceiling.as_millis()).unwrap_or(100).max(100));
    Duration::from_millis(ms)
}

/// Files waiting only because the server could not be reached (nothing got
/// through: connection refused, no route). Their backoff grows while the
/// server is away; without more, once it is back each would still sit out
/// its delay, up to [`BACKOFF_CAP`], for nothing. So:
/// - one of them, the probe, retries at most [`OUTAGE_PROBE`] apart (one
///   connection attempt every few seconds; the others back off as usual);
/// - the first request that gets through, the probe's or any other, makes
///   every file waiting here due at once (a journal update).
///
/// A server still unreachable gets only the probe; one that answers with
/// errors (5xx, resets) is not unreachable, and keeps the usual backoff.
#[derive(Debug, Default)]
pub struct Outage {
    state: Mutex<OutageState>,
}

#[derive(Debug, Default)]
struct OutageState {
    /// Rows whose last attempt could not connect.
    waiting: HashSet<i64>,
    /// When the probe is due. Past (or none), the next file that cannot
    /// connect becomes the probe, so a probe whose file went away (deleted,
    /// say) is replaced.
    probe_at: Option<Instant>,
}

impl Outage {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutageState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// File `id` could not connect and would wait `delay`: the delay it
    /// waits (shorter if it is the probe).
    pub(super) fn unreachable(&self, id: i64, delay: Duration) -> Duration {
        let mut s = self.lock();
        s.waiting.insert(id);
        let now = Instant::now();
        if s.probe_at.is_some_and(|at| at > now) {
            return delay;
        }
        let delay = delay.min(OUTAGE_PROBE);
        s.probe_at = Some(now + delay);
        delay
    }

    /// File `id` failed some other way, or is no longer waiting.
    pub(super) fn forget(&self, id: i64) {
        self.lock().waiting.remove(&id);
    }

    /// A request of file `id` got through: the other files to make due now.
    pub(super) fn reached(&self, id: i64) -> Vec<i64> {
        let mut s = self.lock();
        if s.waiting.is_empty() {
            return Vec::new();
        }
        s.probe_at = None;
        s.waiting.drain().filter(|x| *x != id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        for attempt in 1..40 {
            let d = backoff_delay(attempt);
            assert!(d >= Duration::from_millis(100));
            assert!(d <= BACKOFF_CAP);
        }
        let early_max = (0..200).map(|_| backoff_delay(1)).max().unwrap();
        assert!(early_max <= Duration::from_secs(1));
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| backoff_delay(10)).collect();
        assert!(distinct.len() > 10, "full jitter spreads the delays");
    }

    #[test]
    fn outage_has_one_probe_and_a_success_wakes_the_others() {
        let o = Outage::default();
        let long = Duration::from_secs(60);
        assert_eq!(o.unreachable(1, long), OUTAGE_PROBE);
        assert_eq!(o.unreachable(2, long), long);
        let short = Duration::from_secs(2);
        assert_eq!(o.unreachable(3, short), short);
        // 3 failed otherwise since: its backoff is its own.
        o.forget(3);
        assert_eq!(o.reached(2), vec![1]);
        assert!(o.reached(1).is_empty());
        // A probe whose time passed (its file went away) is replaced.
        assert_eq!(
            o.unreachable(4, Duration::from_millis(1)),
            Duration::from_millis(1)
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(o.unreachable(5, long), OUTAGE_PROBE);
    }
}
