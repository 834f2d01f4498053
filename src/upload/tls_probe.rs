//! While TLS with the server is refused, one worker probes the handshake
//! at a slow pace (the outage probe's shape: one probe stands for every
//! file), and opens the gate when it gets through.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{Uploader, OUTAGE_PROBE};
use crate::apivideo::TokenCheck;

/// The probe starts [`OUTAGE_PROBE`] apart and slows down to this.
pub const TLS_PROBE_CAP: Duration = Duration::from_secs(60);

impl Uploader {
    /// Probes until the gate opens for TLS (the probe got through, or a
    /// reload opened it); false if cancelled first.
    pub(crate) async fn probe_tls(&self, cancel: &CancellationToken) -> bool {
        let mut delay = OUTAGE_PROBE;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                changed = self.gate.changed(cancel) => if !changed { return false },
            }
            if cancel.is_cancelled() {
                return false;
            }
            if self.gate.state().tls.is_none() {
                return true;
            }
            match self.client.check_token().await {
                TokenCheck::Tls(why) => {
                    debug!("TLS probe: still refused: {why}");
                    delay = (delay * 2).min(TLS_PROBE_CAP);
                }
                // Any reply, or any other failure, is no longer this TLS
                // trouble: the uploads themselves say what comes next.
                _ => {
                    if self.gate.tls_works() {
                        info!(
                            server = %self.client.base_url(),
                            "the TLS handshake with the server works again; uploads resume"
                        );
                    }
                    return true;
                }
            }
        }
    }
}
