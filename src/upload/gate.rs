//! The token gate: one refused token pauses every upload until it is
//! replaced. Knows nothing of files or the journal.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// token is replaced; a stale 401 (sent with the old token) cannot close it again.
#[derive(Debug, Clone)]
pub struct TokenGate {
    tx: Arc<watch::Sender<GateState>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateState {
    /// Bumped every time the token is replaced.
    pub generation: u64,
    /// Why the gate is closed, when it is.
    pub refused: Option<String>,
}

impl Default for TokenGate {
    fn default() -> Self {
        TokenGate {
            tx: Arc::new(
                watch::channel(GateState {
                    generation: 0,
                    refused: None,
                })
                .0,
            ),
        }
    }
}

impl TokenGate {
    pub fn state(&self) -> GateState {
        self.tx.borrow().clone()
    }

    /// Closes the gate, if `generation` is still the current token.
    pub fn refuse(&self, generation: u64, why: String) -> bool {
        self.tx.send_if_modified(|s| {
            if s.generation == generation && s.refused.is_none() {
                s.refused = Some(why);
                true
            } else {
                false
            }
        })
    }

    /// A new token is in place: open the gate.
    pub fn replaced(&self) {
        self.tx.send_modify(|s| {
            s.generation += 1;
            s.refused = None;
        });
    }

    /// Waits until the gate is open; false if cancelled first.
    pub(crate) async fn wait_open(&self, cancel: &CancellationToken) -> bool {
        let mut rx = self.tx.subscribe();
        tokio::select! {
            r = rx.wait_for(|s| s.refused.is_none()) => r.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_ignores_stale_refusals() {
        let g = TokenGate::default();
        let generation = g.state().generation;
        g.replaced();
        assert!(!g.refuse(generation, "old token".into()));
        assert!(g.state().refused.is_none());
        assert!(g.refuse(generation + 1, "new token".into()));
        assert!(g.state().refused.is_some());
        g.replaced();
        assert!(g.state().refused.is_none());
    }
}
