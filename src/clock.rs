//! Where "now" comes from. The dispatcher and policies ask a [`Clock`] instead of the system
//! so tests can drive time (quiet hours, caps, cooldowns) without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::Utc;

use crate::model::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system clock, optionally shifted by a fixed offset (the sandbox's time travel).
#[derive(Default)]
pub struct SystemClock {
    offset_ms: AtomicI64,
}

impl SystemClock {
    /// Moves this clock forward (or back) relative to the system time.
    pub fn shift(&self, by: chrono::Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }
}
