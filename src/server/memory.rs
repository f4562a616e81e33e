//! The Rust side's allocator (mimalloc): how it is set up, and how it gives memory back.
//!
//! mimalloc returns freed pages to the OS lazily: a page becomes due `purge_delay` (1 s) after
//! it was freed, and is purged the next time its thread runs the allocator. An I/O thread
//! that goes quiet after a burst of connections runs it no more, and the burst's peak (about
//! 30 KiB per connection, mostly hyper's read and write buffers) would stay resident until
//! traffic came back. [`give_back`] purges at once when the last connection closes, and
//! otherwise purges what is due once a second.

use std::ffi::{c_int, c_long};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_collect(force: bool);
}

/// `mi_option_arena_eager_commit` (4 in mimalloc's `mi_option_e`).
const MI_OPTION_ARENA_EAGER_COMMIT: c_int = 4;

/// How often [`give_back`] purges what is due, and the least time between two forced purges.
const PERIOD: Duration = Duration::from_secs(1);

/// Woken when the last open connection closes.
static IDLE: Notify = Notify::const_new();

/// Commit mimalloc's arenas as they are used rather than up front: eager commit on an
/// overcommitting Linux, with transparent huge pages, costs every worker ~4 MiB of RSS for
/// memory it never uses. Call before the first Rust allocation makes an arena.
pub fn tune() {
    // SAFETY: mi_option_set only stores an option value; any option id and value are valid.
    unsafe { mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

/// A connection closed; `open` connections remain.
pub fn connection_closed(open: usize) {
    if open == 0 {
        IDLE.notify_one();
    }
}

/// Runs on the I/O runtime for as long as it runs.
pub async fn give_back() {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut forced_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = IDLE.notified() => {
                // A server whose connections come and go one at a time would otherwise
                // purge (and fault its pages back in) for every one.
                if forced_at.is_none_or(|at| at.elapsed() >= PERIOD) {
                    forced_at = Some(Instant::now());
                    collect(true);
                }
            }
            _ = tick.tick() => collect(false),
        }
    }
}

fn collect(force: bool) {
    // SAFETY: mi_collect only walks and trims the allocator's own structures; it may be called
    // from any thread at any time.
    unsafe { mi_collect(force) };
}
