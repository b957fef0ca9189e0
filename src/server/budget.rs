//! The cap on request bytes held in memory at once, across every request in flight.
//!
//! A request reserves what its body may cost (its declared length, or the batch limit when
//! chunked, plus the batch limit again for a gzip body's decoded form) before any body byte
//! is read, and gives it back when its answer is ready. Requests without an `Authorization`
//! header (key in the body, so read before they are authenticated) reserve from a smaller
//! share of the cap. Nothing waits: a request that does not fit is answered
//! `503 server_busy` at once.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in KiB (a semaphore counts permits in `u32` per call).
const UNIT: usize = 1024;

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

/// The byte cap.
pub(crate) struct Budget {
    all: Arc<Semaphore>,
    unauthenticated: Arc<Semaphore>,
}

/// Bytes reserved by one request; given back on drop.
pub(crate) struct Reserved {
    _all: OwnedSemaphorePermit,
    _unauthenticated: Option<OwnedSemaphorePermit>,
}

impl Budget {
    pub(crate) fn new(max_bytes: usize, max_unauthenticated: usize) -> Self {
        Budget {
            all: Arc::new(Semaphore::new(max_bytes / UNIT)),
            unauthenticated: Arc::new(Semaphore::new(max_unauthenticated / UNIT)),
        }
    }

    /// Reserve `bytes`, from the unauthenticated share too when `authenticated` is false.
    /// `None` when they do not fit now.
    pub(crate) fn try_reserve(&self, bytes: usize, authenticated: bool) -> Option<Reserved> {
        let n = units(bytes);
        let unauthenticated = if authenticated {
            None
        } else {
            Some(
                Arc::clone(&self.unauthenticated)
                    .try_acquire_many_owned(n)
                    .ok()?,
            )
        };
        let all = Arc::clone(&self.all).try_acquire_many_owned(n).ok()?;
        Some(Reserved {
            _all: all,
            _unauthenticated: unauthenticated,
        })
    }
}
