//! Pacing every worker by api.video's rate-limit headers (the limit is per
//! account, not per file). Holds no file state.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::apivideo::RateInfo;

/// Global pacing from the rate-limit headers: when the server says no request
/// is left in the window, nobody sends until it resets.
///
/// A reply's `remaining` was counted when the server took that request in;
/// requests started after it (still in flight, or answered first) may not be
/// in it yet, so they are taken off (each [`Turn`] carries its place in the
/// order). A reply to a request started before the window was seen to reset
/// says nothing about the new window and is ignored (a 429 excepted).
#[derive(Debug, Default)]
pub struct Pacer {
    state: Mutex<PacerState>,
}

#[derive(Debug, Default)]
struct PacerState {
    /// Requests left in the current window, as last reported, minus those
    /// started after the reported one.
    remaining: Option<u64>,
    /// When the current window ends.
    reset_at: Option<Instant>,
    /// Requests started so far (each turn's sequence number).
    started: u64,
    /// Windows seen to end so far.
    window: u64,
}

/// One request's place in the pacing, for [`Pacer::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    seq: u64,
    window: u64,
}

impl Pacer {
    /// Waits until a request may be sent, and counts it. When `cancel` ends
    /// the wait, the turn is counted all the same (at worst the window's
    /// estimate is one request low).
    pub(crate) async fn wait_turn(&self, cancel: &CancellationToken) -> Turn {
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                if s.reset_at.is_some_and(|reset| reset <= now) {
                    s.remaining = None;
                    s.reset_at = None;
                    s.window += 1;
                }
                match (s.remaining, s.reset_at) {
                    (Some(0), Some(reset)) if !cancel.is_cancelled() => reset - now,
                    // No request left and no word on when: try again in a second.
                    (Some(0), None) if !cancel.is_cancelled() => {
                        s.reset_at = Some(now + Duration::from_secs(1));
                        Duration::from_secs(1)
                    }
                    (remaining, _) => {
                        s.remaining = remaining.map(|n| n.saturating_sub(1));
                        s.started += 1;
                        return Turn {
                            seq: s.started,
                            window: s.window,
                        };
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }

    /// Takes in the rate-limit headers of the reply to `turn`'s request.
    pub(crate) fn observe(&self, turn: Turn, rate: &RateInfo, limited: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if turn.window != s.window && !limited {
            return;
        }
        let now = Instant::now();
        if let Some(secs) = rate.retry_after {
            s.reset_at = Some(now + Duration::from_secs(secs.max(u64::from(limited))));
        }
        if limited {
            s.remaining = Some(0);
            if s.reset_at.is_none() {
                s.reset_at = Some(now + Duration::from_secs(1));
            }
        } else if let Some(r) = rate.remaining {
            let later = s.started.saturating_sub(turn.seq);
            s.remaining = Some(r.saturating_sub(later));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pacer_blocks_until_the_window_resets() {
        let p = Pacer::default();
        let cancel = CancellationToken::new();
        let first = p.wait_turn(&cancel).await;
        p.observe(
            first,
            &RateInfo {
                limit: Some(2),
                remaining: Some(1),
                retry_after: Some(1),
            },
            false,
        );
        let t = Instant::now();
        p.wait_turn(&cancel).await; // the one remaining request
        assert!(t.elapsed() < Duration::from_millis(200));
        p.wait_turn(&cancel).await; // none left: waits for the reset
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }

    fn rate(remaining: u64, retry_after: u64) -> RateInfo {
        RateInfo {
            limit: Some(40),
            remaining: Some(remaining),
            retry_after: Some(retry_after),
        }
    }

    #[tokio::test]
    async fn pacer_counts_requests_started_after_the_one_answered() {
        let p = Pacer::default();
        let cancel = CancellationToken::new();
        let a = p.wait_turn(&cancel).await;
        let b = p.wait_turn(&cancel).await;
        let c = p.wait_turn(&cancel).await;
        // a was counted with 2 left; b and c started after it: none left.
        p.observe(a, &rate(2, 1), false);
        // b's reply, late and out of order, cannot raise the count again.
        p.observe(c, &rate(0, 1), false);
        p.observe(b, &rate(1, 1), false);
        let t = Instant::now();
        p.wait_turn(&cancel).await;
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn pacer_ignores_replies_from_a_window_that_ended() {
        let p = Pacer::default();
        let cancel = CancellationToken::new();
        let old = p.wait_turn(&cancel).await;
        let first = p.wait_turn(&cancel).await;
        p.observe(first, &rate(5, 0), false); // the window ends now
        let new = p.wait_turn(&cancel).await;
        assert_ne!(old.window, new.window);
        // The old request's reply says its window had nothing left.
        p.observe(old, &rate(0, 1), false);
        let t = Instant::now();
        p.wait_turn(&cancel).await;
        assert!(t.elapsed() < Duration::from_millis(200));
        // A 429 is heeded whatever its window.
        p.observe(old, &rate(0, 1), true);
        let t = Instant::now();
        p.wait_turn(&cancel).await;
        assert!(t.elapsed() >= Duration::from_millis(900));
    }

    #[tokio::test]
    async fn pacer_turn_is_given_at_once_when_cancelled() {
        let p = Pacer::default();
        let cancel = CancellationToken::new();
        let a = p.wait_turn(&cancel).await;
        p.observe(a, &rate(0, 60), false);
        cancel.cancel();
        let t = Instant::now();
        p.wait_turn(&cancel).await;
        assert!(t.elapsed() < Duration::from_millis(200));
    }
}
