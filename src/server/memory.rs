//! The allocators: how they are set up, and how they give memory back.
//!
//! The Rust side allocates through mimalloc, Python through glibc's malloc.
//!
//! mimalloc returns freed pages to the OS lazily: a page becomes due `purge_delay` (1 s) after
//! it was freed, and is purged the next time its thread runs the allocator. An I/O thread
//! that goes quiet after a burst of connections runs it no more, and the burst's peak (about
//! 30 KiB per connection, mostly hyper's read and write buffers) would stay resident until
//! traffic came back. [`give_back`] purges at once when the last connection closes, and
//! otherwise purges what is due once a second.

use std::ffi::{c_int, c_long};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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

/// The size of the block [`tune_python_heap`] frees: glibc then keeps blocks under 4 MiB on its
/// heap, and trims the heap's top once more than 8 MiB of it is free.
const PYTHON_HEAP_START: usize = 4 << 20;

/// Starts glibc's malloc, which every Python object goes through, where it would be after
/// the app had freed one 4 MiB block.
///
/// glibc adapts to the process (mallopt(3), "dynamic mmap threshold"): it starts by keeping
/// only blocks under 128 KiB on its heap and trimming the heap's top past 128 KiB free, and
/// raises both each time a larger block is freed. Before that, a worker taking uploads from
/// many clients moves its heap's top by a few MiB with every request (each client's piece of
/// body is a 64 KiB `bytes`), so the kernel unmaps and then faults in and zeroes those pages
/// again: ~25 page faults per 1 MiB upload, a third of its CPU. Freeing one 4 MiB block at
/// start skips the warm-up glibc would otherwise need. What this keeps is bounded (8 MiB of
/// free heap top), and [`give_back`] trims it once no connection is open.
///
/// A user who set `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or `MALLOC_TOP_PAD_` (or
/// their `GLIBC_TUNABLES`) turned glibc's adaptation off, and this changes nothing.
pub fn tune_python_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a block from malloc, freed once, never read or written. black_box keeps the
    // compiler from eliding the pair (free's adaptation is the point).
    unsafe {
        let block = std::hint::black_box(libc::malloc(PYTHON_HEAP_START));
        libc::free(block);
    }
}

/// A connection closed; `open` connections remain.
pub fn connection_closed(open: usize) {
    if open == 0 {
        IDLE.notify_one();
    }
}

/// Runs on the I/O runtime for as long as it runs; `open` counts the open connections.
pub async fn give_back(open: Arc<AtomicUsize>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut forced_at: Option<Instant> = None;
    let mut trim_due = false;
    loop {
        tokio::select! {
            _ = IDLE.notified() => {
                // A server whose connections come and go one at a time would otherwise
                // purge (and fault its pages back in) for every one.
                if forced_at.is_none_or(|at| at.elapsed() >= PERIOD) {
                    forced_at = Some(Instant::now());
                    collect(true);
                    trim_due = true;
                }
            }
            _ = tick.tick() => {
                collect(false);
                // A tick later, not at once: the app frees the last requests' objects on
                // its own thread after their connections closed.
                if trim_due && open.load(Ordering::Relaxed) == 0 {
                    trim_due = false;
                    trim_python_heap();
                }
            }
        }
    }
}

/// Gives glibc's free memory back to the OS: what the heap's top keeps under
/// [`tune_python_heap`], and free pages inside the heap.
fn trim_python_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes glibc's arena locks itself; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn collect(force: bool) {
    // SAFETY: mi_collect only walks and trims the allocator's own structures; it may be called
    // from any thread at any time.
    unsafe { mi_collect(force) };
}
