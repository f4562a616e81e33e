//! A coarse clock for timeouts: reading it is one atomic load, so connections can note their
//! activity on every read without a system call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often the clock advances; timeouts are this precise.
pub const RESOLUTION: Duration = Duration::from_millis(50);

static NOW_MS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process first looked at the clock, as of the last tick.
pub fn now_ms() -> u64 {
    NOW_MS.load(Ordering::Relaxed)
}

fn update() {
    NOW_MS.store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// Advances the clock for as long as the runtime runs.
pub async fn tick() {
    let mut interval = tokio::time::interval(RESOLUTION);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        update();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_moves_forward() {
        update();
        let a = now_ms();
        std::thread::sleep(Duration::from_millis(5));
        update();
        assert!(now_ms() >= a + 5);
    }
}
