//! The time every session decision reads: the system clock in service, a settable one in tests,
//! so idle and absolute expiry are tested by moving time instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// Now, as the registry and the TokenActor see it. Cloning shares the clock.
#[derive(Clone, Default)]
pub struct Clock {
    /// Microseconds added to the system time; only a [`ManualClock`] moves it.
    offset: Arc<AtomicI64>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(+{}µs)", self.offset.load(Ordering::Relaxed))
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that follows the system's until a test moves it forward with the handle.
    pub fn settable() -> (Self, ManualClock) {
        let clock = Self::default();
        let handle = ManualClock {
            offset: Arc::clone(&clock.offset),
        };
        (clock, handle)
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::microseconds(self.offset.load(Ordering::Relaxed))
    }
}

/// Moves a [`Clock::settable`] clock (and every clone of it) forward.
#[derive(Clone, Debug)]
pub struct ManualClock {
    offset: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn advance(&self, by: std::time::Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset.fetch_add(micros, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settable_clock_moves_every_clone() {
        let (clock, handle) = Clock::settable();
        let copy = clock.clone();
        let before = copy.now();
        handle.advance(std::time::Duration::from_secs(3600));
        assert!(copy.now() - before >= TimeDelta::seconds(3600));
        assert!(Clock::system().now() < clock.now());
    }
}
