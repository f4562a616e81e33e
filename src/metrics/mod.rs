//! Prometheus metrics that cost a few relaxed atomic adds per request.
//!
//! Each worker process counts into its own [`Metrics`] slot. Slots live in one shared anonymous
//! mapping made by the master before it forks, so the master can sum every worker's counters
//! for `--metrics-bind` without asking them; a single process makes a private mapping.

mod render;
pub mod serve;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub use render::render;

/// Upper bounds (seconds) of the request duration histogram buckets.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Statuses counted as refused by a limit, in the order of `Metrics::refused`.
pub const REFUSALS: [u16; 7] = [400, 408, 413, 414, 431, 501, 503];

/// One process's counters. All zero bytes is a valid, empty value, which is what a fresh
/// anonymous mapping holds.
#[repr(C)]
#[derive(Default)]
pub struct Metrics {
    /// The process these counters belong to (0: slot unused).
    pub pid: AtomicU64,
    /// Completed requests by status class, 1xx to 5xx.
    pub requests: [AtomicU64; 5],
    /// Request durations: one count per bucket of [`BUCKETS`], then the overflow bucket.
    pub duration: [AtomicU64; BUCKETS.len() + 1],
    pub duration_micros: AtomicU64,
    pub in_flight: AtomicU64,
    pub connections: AtomicU64,
    pub websockets: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Of `bytes_out`, those the kernel sent straight from a file with sendfile(2).
    pub sendfile_bytes: AtomicU64,
    /// Requests refused before the app ran, by status (see [`REFUSALS`]).
    pub refused: [AtomicU64; REFUSALS.len()],
}

impl Metrics {
    pub fn request_done(&self, status: u16, took: Duration, bytes_out: u64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.duration[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    pub fn refused(&self, status: u16) {
        if let Some(i) = REFUSALS.iter().position(|&s| s == status) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves `other`'s counters into these and zeroes `other` (gauges and pid included): the
    /// master keeps the totals of a worker that exited, so that the sums never go down.
    pub fn absorb(&self, other: &Metrics) {
        for (mine, theirs) in self.counters().into_iter().zip(other.counters()) {
            mine.fetch_add(theirs.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
        for gauge in [
            &other.in_flight,
            &other.connections,
            &other.websockets,
            &other.pid,
        ] {
            gauge.store(0, Ordering::Relaxed);
        }
    }

    /// Every counter (as opposed to gauge), in a fixed order.
    fn counters(&self) -> Vec<&AtomicU64> {
        let mut all: Vec<&AtomicU64> = Vec::with_capacity(32);
        all.extend(&self.requests);
        all.extend(&self.duration);
        all.extend([
            &self.duration_micros,
            &self.bytes_in,
            &self.bytes_out,
            &self.sendfile_bytes,
        ]);
        all.extend(&self.refused);
        all
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Slots shared by every process forked after it was made.
pub struct Region {
    slots: &'static [Metrics],
}

impl Region {
    /// Maps `count` zeroed slots shared with future children. The mapping lives as long as
    /// the process.
    pub fn shared(count: usize) -> std::io::Result<Region> {
        let len = count.max(1) * std::mem::size_of::<Metrics>();
        // SAFETY: an anonymous shared mapping with no address hint has no preconditions; the
        // result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the mapping is `len` bytes, page-aligned (so aligned for Metrics), zero-filled
        // by the kernel (a valid value of a struct of atomics), and never unmapped, so the
        // slice may be 'static.
        let slots = unsafe { std::slice::from_raw_parts(ptr.cast::<Metrics>(), count.max(1)) };
        Ok(Region { slots })
    }

    pub fn slots(&self) -> &'static [Metrics] {
        self.slots
    }
}

static CURRENT: OnceLock<&'static Metrics> = OnceLock::new();

/// Makes `slot` this process's counters; the supervisor calls it in each worker after fork.
pub fn use_slot(slot: &'static Metrics) {
    slot.pid
        .store(u64::from(std::process::id()), Ordering::Relaxed);
    let _ = CURRENT.set(slot);
}

/// This process's counters: a supervisor's slot, or a private one made on first use.
pub fn current() -> &'static Metrics {
    CURRENT.get_or_init(|| {
        let slot: &'static Metrics = Box::leak(Box::default());
        slot.pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        slot
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_moves_counters_and_clears_gauges() {
        let (total, gone) = (Metrics::default(), Metrics::default());
        gone.request_done(200, Duration::from_millis(3), 10);
        gone.refused(431);
        Metrics::add(&gone.in_flight, 2);
        total.absorb(&gone);
        total.absorb(&Metrics::default());
        assert_eq!(total.requests[1].load(Ordering::Relaxed), 1);
        assert_eq!(total.bytes_out.load(Ordering::Relaxed), 10);
        assert_eq!(total.refused[4].load(Ordering::Relaxed), 1);
        assert_eq!(
            total.in_flight.load(Ordering::Relaxed),
            0,
            "gauges are not summed"
        );
        assert_eq!(gone.requests[1].load(Ordering::Relaxed), 0);
        assert_eq!(gone.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn shared_slots_are_seen_by_a_child() {
        let region = Region::shared(2).unwrap();
        let slot = &region.slots()[1];
        // SAFETY: the child only touches atomics in the shared mapping, then exits at once.
        match unsafe { libc::fork() } {
            0 => {
                slot.request_done(204, Duration::from_millis(3), 10);
                unsafe { libc::_exit(0) };
            }
            pid => {
                assert!(pid > 0);
                let mut status = 0;
                // SAFETY: waits for the child we just forked.
                unsafe { libc::waitpid(pid, &mut status, 0) };
            }
        }
        assert_eq!(slot.requests[1].load(Ordering::Relaxed), 1);
        assert_eq!(slot.bytes_out.load(Ordering::Relaxed), 10);
        assert_eq!(
            slot.duration[2].load(Ordering::Relaxed),
            1,
            "3 ms falls in the 2.5-5 ms bucket"
        );
    }
}
