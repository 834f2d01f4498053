//! One connection's kill switch and local address, put in every request's
//! extensions: the handlers use the switch to drop a connection (a fault) or
//! to say a chunk is being stored, and the address to name the emulator when
//! a request has no `Host`; serving creates both per accepted socket.
//! Imports nothing from the product.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::store::lock;

/// The address the client connected to (concrete even when the emulator
/// listens on `0.0.0.0`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalAddr(pub(crate) SocketAddr);

/// Put in every request's extensions: [`ConnKill::kill`] drops the
/// connection; [`ConnKill::begin_store`] tells a server going down that a
/// chunk is being stored, so its reply is not lost.
#[derive(Clone)]
pub(crate) struct ConnKill {
    pub(crate) token: CancellationToken,
    phase: Arc<Mutex<ConnPhase>>,
}

/// What a connection's current request is doing, as far as going down cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnPhase {
    /// Reading a request (or idle): dropping it loses nothing stored.
    Receiving,
    /// Storing a chunk: its reply must go out.
    Storing,
    /// The server went down: nothing more is stored on this connection.
    Down,
}

impl ConnKill {
    pub(crate) fn new() -> ConnKill {
        ConnKill {
            token: CancellationToken::new(),
            phase: Arc::new(Mutex::new(ConnPhase::Receiving)),
        }
    }

    /// Drops the connection (with a reset).
    pub(crate) fn kill(&self) {
        self.token.cancel();
    }

    /// A new request started on this connection.
    pub(crate) fn request_started(&self) {
        let mut phase = lock(&self.phase);
        if *phase != ConnPhase::Down {
            *phase = ConnPhase::Receiving;
        }
    }

    /// The request is about to store its chunk; false if the server went
    /// down first (then nothing may be stored).
    pub(crate) fn begin_store(&self) -> bool {
        let mut phase = lock(&self.phase);
        if *phase == ConnPhase::Down {
            return false;
        }
        *phase = ConnPhase::Storing;
        true
    }

    /// The server is going down: true if the connection may be dropped at
    /// once (nothing more will be stored on it), false if a chunk is being
    /// stored and its reply should go out first.
    pub(crate) fn going_down(&self) -> bool {
        let mut phase = lock(&self.phase);
        if *phase == ConnPhase::Storing {
            return false;
        }
        *phase = ConnPhase::Down;
        true
    }
}
