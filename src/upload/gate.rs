//! The token gate: one refused token pauses every upload until it is
//! replaced, and one refused TLS handshake until a probe gets through (or
//! a reload). Knows nothing of files or the journal.

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
    /// Why the gate is closed for the token, when it is.
    pub refused: Option<String>,
    /// Why the gate is closed for TLS, when it is: opened again by a probe
    /// that gets through, or by a reload.
    pub tls: Option<String>,
}

impl GateState {
    /// Whether no upload may start.
    pub fn closed(&self) -> bool {
        self.refused.is_some() || self.tls.is_some()
    }
}

impl Default for TokenGate {
    fn default() -> Self {
        TokenGate {
            tx: Arc::new(
                watch::channel(GateState {
                    generation: 0,
                    refused: None,
                    tls: None,
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
        self.close(generation, why, |s| &mut s.refused)
    }

    /// Closes the gate for TLS, if `generation` is still the current
    /// configuration; true if this closed it.
    pub fn tls_refused(&self, generation: u64, why: String) -> bool {
        self.close(generation, why, |s| &mut s.tls)
    }

    /// Sets the reason `slot` picks, unless it is set or `generation` is stale.
    fn close(
        &self,
        generation: u64,
        why: String,
        slot: impl FnOnce(&mut GateState) -> &mut Option<String>,
    ) -> bool {
        self.tx.send_if_modified(|s| {
            let current = s.generation == generation;
            let reason = slot(s);
            if current && reason.is_none() {
                *reason = Some(why);
                true
            } else {
                false
            }
        })
    }

    /// A handshake got through: open the gate for TLS, if `generation` is
    /// still the current configuration (a probe that began before a reload
    /// proves nothing of the new one); true if it was closed.
    pub fn tls_works(&self, generation: u64) -> bool {
        self.tx
            .send_if_modified(|s| s.generation == generation && s.tls.take().is_some())
    }

    /// A new configuration is in place (a token, an HTTP client with the
    /// trust store read again): open the gate.
    pub fn replaced(&self) {
        self.tx.send_modify(|s| {
            s.generation += 1;
            s.refused = None;
            s.tls = None;
        });
    }

    /// Waits until the gate is open; false if cancelled first.
    pub(crate) async fn wait_open(&self, cancel: &CancellationToken) -> bool {
        let mut rx = self.tx.subscribe();
        tokio::select! {
            r = rx.wait_for(|s| !s.closed()) => r.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }

    /// Every change of the gate from now on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<GateState> {
        self.tx.subscribe()
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

    #[test]
    fn tls_closes_the_gate_until_it_works_or_a_reload() {
        let g = TokenGate::default();
        let generation = g.state().generation;
        assert!(g.tls_refused(generation, "untrusted".into()));
        assert!(!g.tls_refused(generation, "again".into()));
        assert!(g.state().closed());
        assert!(
            !g.tls_works(generation + 1),
            "another configuration's probe"
        );
        assert!(g.tls_works(generation));
        assert!(!g.tls_works(generation));
        assert!(!g.state().closed());
        assert!(g.tls_refused(generation, "untrusted".into()));
        g.replaced();
        assert!(!g.state().closed());
        assert!(!g.tls_refused(generation, "stale".into()));
    }
}
