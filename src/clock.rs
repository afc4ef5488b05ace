//! Where "now" comes from. Everything that stamps or schedules takes a
//! [`Clock`], so tests run the real loops on tokio's paused clock and replay
//! runs on recorded time.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that follows tokio's clock from a fixed origin: under
/// `#[tokio::test(start_paused = true)]` it advances only when tokio's does.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: DateTime<Utc>,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(origin: DateTime<Utc>) -> Self {
        TokioClock {
            origin,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.base;
        self.origin + chrono::Duration::from_std(elapsed).expect("elapsed time fits")
    }
}
