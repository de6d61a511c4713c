//! Where "now" comes from. The dispatcher and policies ask a [`Clock`] instead of the system
//! so tests can drive time (quiet hours, caps, cooldowns) without sleeping.
//!
//! Testing aid, debug builds only: when the binary is built with `debug_assertions` (what
//! `cargo test` runs) and `LIFEBOAT_TEST_CLOCK_FILE` names a file holding an RFC 3339 time,
//! [`SystemClock`] reads that time as "now" from the moment it sees the file's content and runs
//! on from there at the system's pace; writing a new time into the file moves the clock again
//! (it looks at the file at most every 20 ms). Black-box tests use it to step a real gateway
//! process to 23:00 in Warsaw and on to the next morning. Release builds ignore the variable.

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
    #[cfg(debug_assertions)]
    file: test_clock::FileClock,
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
        let now =
            Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        #[cfg(debug_assertions)]
        let now = now + self.file.offset();
        now
    }
}

#[cfg(debug_assertions)]
mod test_clock {
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// The variable naming the time file (debug builds only).
    pub const VAR: &str = "LIFEBOAT_TEST_CLOCK_FILE";
    const LOOK_EVERY: Duration = Duration::from_millis(20);

    struct Seen {
        looked: Instant,
        content: String,
        offset: chrono::Duration,
    }

    pub struct FileClock {
        path: Option<PathBuf>,
        seen: Mutex<Option<Seen>>,
    }

    impl Default for FileClock {
        fn default() -> Self {
            FileClock {
                path: std::env::var_os(VAR).map(PathBuf::from),
                seen: Mutex::new(None),
            }
        }
    }

    impl FileClock {
        /// How far the file moved the clock (zero without a file).
        pub fn offset(&self) -> chrono::Duration {
            let Some(path) = &self.path else {
                return chrono::Duration::zero();
            };
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = seen.as_ref().filter(|s| s.looked.elapsed() < LOOK_EVERY) {
                return s.offset;
            }
            let content = std::fs::read_to_string(path).unwrap_or_default();
            let content = content.trim().to_string();
            let offset = match seen.as_ref() {
                Some(s) if s.content == content => s.offset,
                _ => chrono::DateTime::parse_from_rfc3339(&content)
                    .map(|t| t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .unwrap_or_else(|_| chrono::Duration::zero()),
            };
            *seen = Some(Seen {
                looked: Instant::now(),
                content,
                offset,
            });
            offset
        }
    }
}
