//! [`Live`]: a setting a reload can change while the daemon runs. Readers
//! take the current value; a stage that must restart on a change
//! subscribes. It holds values only; what a change means is the reader's.

use std::sync::Arc;

use tokio::sync::watch;

/// The current value of a reloadable setting, shared by every holder.
#[derive(Debug)]
pub struct Live<T> {
    tx: Arc<watch::Sender<Arc<T>>>,
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live {
            tx: self.tx.clone(),
        }
    }
}

/// A `Live` over a channel made elsewhere (its sender is the one value).
impl<T> From<Arc<watch::Sender<Arc<T>>>> for Live<T> {
    fn from(tx: Arc<watch::Sender<Arc<T>>>) -> Self {
        Live { tx }
    }
}

impl<T: PartialEq> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live {
            tx: Arc::new(watch::channel(Arc::new(value)).0),
        }
    }

    /// The value now (a cheap clone of the `Arc`).
    pub fn get(&self) -> Arc<T> {
        self.tx.borrow().clone()
    }

    /// Changes seen from now on, the current value marked seen or not as
    /// `watch::Receiver` does.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.tx.subscribe()
    }

    /// Sets `value` if it differs from the current one; subscribers hear of
    /// it only then. Returns whether it changed.
    pub fn set(&self, value: T) -> bool {
        self.tx.send_if_modified(|current| {
            let changed = **current != value;
            if changed {
                *current = Arc::new(value);
            }
            changed
        })
    }
}
