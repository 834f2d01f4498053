//! While TLS with the server is refused, one worker probes the handshake
//! at a slow pace (the outage probe's shape: one probe stands for every
//! file), and opens the gate when it gets through.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Uploader, OUTAGE_PROBE};
use crate::apivideo::TokenCheck;

/// The probe starts [`OUTAGE_PROBE`] apart and slows down to this.
pub const TLS_PROBE_CAP: Duration = Duration::from_secs(60);

impl Uploader {
    /// Probes until the gate opens for TLS (the probe got through, or a
    /// reload opened it); false if cancelled first. Each probe is a new
    /// HTTP client (the trust store read again) making a real handshake: a
    /// pooled connection from before the trouble would prove nothing.
    pub(crate) async fn probe_tls(&self, cancel: &CancellationToken) -> bool {
        let mut gate = self.gate.subscribe();
        let mut delay = OUTAGE_PROBE;
        loop {
            let generation = {
                let state = gate.borrow_and_update();
                if state.tls.is_none() {
                    return true;
                }
                state.generation
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // A reload (or anything else) changed the gate: look again.
                changed = gate.changed() => if changed.is_err() { return false } else { continue },
                _ = cancel.cancelled() => return false,
            }
            let check = tokio::select! {
                check = self.client.probe_tls() => check,
                _ = gate.changed() => continue,
                _ = cancel.cancelled() => return false,
            };
            match check {
                Ok(TokenCheck::Tls(why)) => {
                    debug!("TLS probe: still refused: {why}");
                    delay = (delay * 2).min(TLS_PROBE_CAP);
                }
                Err(e) => {
                    warn!("TLS probe: {e}");
                    delay = (delay * 2).min(TLS_PROBE_CAP);
                }
                // Any reply, or any other failure, is no longer this TLS
                // trouble: the uploads themselves say what comes next.
                Ok(_) => {
                    if self.gate.tls_works(generation) {
                        info!(
                            server = %self.client.base_url(),
                            "the TLS handshake with the server works again; uploads resume"
                        );
                    }
                }
            }
        }
    }
}
