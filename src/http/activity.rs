//! What a connection is doing, as far as its timeouts care, and the timeouts themselves:
//! shared by the connection drivers (HTTP/1.1 and HTTP/2), the socket reader and the service.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use super::limits::Refusal;
use super::sendfile::Placeholders;
use crate::net::clock::now_ms;

/// A request head the framing check refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Which request of the connection it is (from 0). hyper parses the heads released before
    /// it first, and answers each of them before this one's stand-in.
    pub head: u64,
    pub violation: Refusal,
}

/// What a connection is doing, as far as its timeouts care.
pub struct Activity {
    /// Set when the framing check refused a request head: the request the service sees in
    /// that head's place is a stand-in, to be answered with the violation.
    pub refusal: OnceLock<Refused>,
    /// Requests the service has seen on this connection.
    requests: AtomicU64,
    in_flight: AtomicU32,
    /// When the connection last became idle (accepted, or a response completed).
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived; 0 while none has.
    head_since: AtomicU64,
    /// Since when writing to the socket has made no progress (it would block); 0 while
    /// writes go through.
    write_blocked_since: AtomicU64,
    /// What the kernel still had to send when that stall was last looked at.
    unsent_at_stall: AtomicU64,
    /// The socket, to ask the kernel how much it still has to send; `None` in unit tests.
    fd: Option<RawFd>,
    /// On a plain HTTP/1.1 connection, the file chunks its socket sends with sendfile.
    files: Option<Placeholders>,
}

impl Activity {
    /// `fd`: the connection's socket (under TLS too), which outlives every use made of it
    /// here: the connection's task owns both.
    pub(super) fn new(fd: Option<RawFd>) -> Self {
        Activity {
            refusal: OnceLock::new(),
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now_ms()),
            head_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            unsent_at_stall: AtomicU64::new(0),
            fd,
            files: None,
        }
    }

    /// A plain HTTP/1.1 connection's, whose pathsend files go out with sendfile.
    pub(super) fn with_sendfile(fd: RawFd) -> Self {
        Activity {
            files: Some(Placeholders::default()),
            ..Activity::new(Some(fd))
        }
    }

    /// Where file chunks for sendfile are registered; `None` where files are read.
    pub(super) fn files(&self) -> Option<&Placeholders> {
        self.files.as_ref()
    }

    /// A write to the socket would block. Only the connection's task writes: a plain load
    /// and store are enough.
    pub(super) fn write_blocked(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) == 0 {
            self.write_blocked_since
                .store(now_ms().max(1), Ordering::Relaxed);
            self.unsent_at_stall
                .store(unsent(self.fd).unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// A write to the socket went through. After a stall, hyper may be writing the end of a
    /// response the app is done with: the connection is not idle before that is written.
    pub(super) fn write_progressed(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) != 0 {
            self.write_blocked_since.store(0, Ordering::Relaxed);
            self.idle_since.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// A write to the socket is waiting for room.
    pub(super) fn write_waiting(&self) -> bool {
        self.write_blocked_since.load(Ordering::Relaxed) != 0
    }

    /// Past the write deadline: whether the kernel sent some of what it held since the stall
    /// was last looked at. Its send buffer grows to megabytes, and a write waits until much
    /// of it has drained: a client that reads, slowly, can leave writes blocked for longer
    /// than the timeout. That counts as progress, and the stall is timed again from now.
    pub(super) fn still_draining(&self, now: u64) -> bool {
        if !self.write_waiting() {
            return false;
        }
        let Some(left) = unsent(self.fd) else {
            return false;
        };
        if left >= self.unsent_at_stall.load(Ordering::Relaxed) {
            return false;
        }
        self.unsent_at_stall.store(left, Ordering::Relaxed);
        self.write_blocked_since
            .store(now.max(1), Ordering::Relaxed);
        true
    }

    /// Counts a request the service got from hyper; the violation to answer it with when it is
    /// the stand-in of a refused head. Requests parsed from heads released before the refused
    /// one are served normally, however the bytes were split into reads.
    pub fn next_request(&self) -> Option<Refusal> {
        // Only the connection's task calls this: a plain load and store are enough.
        let index = self.requests.load(Ordering::Relaxed);
        self.requests.store(index + 1, Ordering::Relaxed);
        let refused = self.refusal.get()?;
        (refused.head == index).then_some(refused.violation)
    }

    /// No request is being handled: the connection is fresh, or idle between keep-alive
    /// requests, or has only part of a request head.
    pub(super) fn waiting(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Part of a request head has arrived, and no request started since.
    pub(super) fn head_started(&self) -> bool {
        self.head_since.load(Ordering::Relaxed) != 0
    }

    /// Whether a shutdown held back for [`SHUTDOWN_GRACE`] (until `until`) may now go to
    /// hyper, which closes a connection with no request running. Not while a request head is
    /// arriving: that request is already on its way, and gets until the head-read deadline.
    pub(super) fn grace_over(&self, until: u64, now: u64) -> bool {
        now >= until && !self.head_started()
    }

    pub(super) fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            // `max(1)`: 0 means "no head started".
            self.head_since.store(now_ms().max(1), Ordering::Relaxed);
        }
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    pub fn request_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        self.idle_since.store(now_ms(), Ordering::Relaxed);
    }

    /// The time (ms) at which the connection must be closed, or `None` while a request is in
    /// flight and its response is not stuck (its own timeouts apply then).
    pub(super) fn deadline(&self, limits: &Timeouts) -> Option<u64> {
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked != 0 {
            // Whether a request is in flight or not: hyper may still be writing the end of a
            // response that is over for the app. Never the idle timeout then.
            return limits.write.map(|w| blocked + w.as_millis() as u64);
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_since.load(Ordering::Relaxed);
        if head != 0 {
            Some(head + limits.header_read.as_millis() as u64)
        } else {
            Some(self.idle_since.load(Ordering::Relaxed) + limits.idle().as_millis() as u64)
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// How long an idle keep-alive connection stays open; zero turns keep-alive off.
    pub keep_alive: Duration,
    /// How long a client may take to send a request head, from its first byte.
    pub header_read: Duration,
    /// How long writing to the socket may make no progress; `None`: as long as it takes.
    pub write: Option<Duration>,
}

/// Bytes the kernel holds for the socket and the peer has not taken yet (TIOCOUTQ: unsent or
/// unacknowledged for TCP, unread for a unix socket); `None` when it cannot tell.
#[cfg(target_os = "linux")]
fn unsent(fd: Option<RawFd>) -> Option<u64> {
    let fd = fd?;
    let mut bytes: libc::c_int = 0;
    // SAFETY: TIOCOUTQ stores one c_int through the pointer, which points to `bytes`; on an
    // fd it does not apply to, the call fails and stores nothing.
    let done = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut bytes) };
    (done == 0).then(|| bytes.max(0) as u64)
}

/// Other systems have no TIOCOUTQ (macOS's SO_NWRITE counts only unsent bytes, not the
/// unacknowledged ones a stalled peer leaves): the write timeout then goes by progress alone.
#[cfg(not(target_os = "linux"))]
fn unsent(_: Option<RawFd>) -> Option<u64> {
    None
}

impl Timeouts {
    /// How long a connection may stay idle. Without keep-alive, hyper closes the connection
    /// after its one response, so this only bounds the wait for the first request.
    pub fn idle(&self) -> Duration {
        if self.keep_alive.is_zero() {
            self.header_read
        } else {
            self.keep_alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn grace_ends_unless_a_request_head_is_arriving() {
        let activity = Activity::new(None);
        assert!(!activity.grace_over(1000, 999));
        assert!(activity.grace_over(1000, 1000));
        // Bytes of a head came: that request is waited for, past the grace.
        activity.bytes_arrived();
        assert!(activity.head_started());
        assert!(!activity.grace_over(1000, 5000));
        // Once it is served, the connection is idle again: the grace applies.
        activity.request_started();
        activity.request_done();
        assert!(activity.grace_over(1000, 5000));
    }

    #[test]
    fn only_the_refused_heads_request_is_refused() {
        let activity = Activity::new(None);
        let violation = Refusal(StatusCode::BAD_REQUEST, "missing or repeated Host");
        activity
            .refusal
            .set(Refused { head: 2, violation })
            .unwrap();
        // Requests 0 and 1 came from heads released before the refused one.
        assert_eq!(activity.next_request(), None);
        assert_eq!(activity.next_request(), None);
        assert_eq!(activity.next_request(), Some(violation));
    }

    #[test]
    fn a_head_arriving_past_the_grace_is_bounded_by_the_head_read_timeout() {
        let limits = Timeouts {
            keep_alive: Duration::from_secs(5),
            header_read: Duration::from_secs(30),
            write: None,
        };
        let activity = Activity::new(None);
        activity.bytes_arrived();
        let since = activity.head_since.load(Ordering::Relaxed);
        assert_eq!(activity.deadline(&limits), Some(since + 30_000));
        activity.request_started();
        assert_eq!(activity.deadline(&limits), None);
    }

    #[test]
    fn a_response_making_no_progress_has_a_deadline() {
        let mut limits = Timeouts {
            keep_alive: Duration::from_secs(5),
            header_read: Duration::from_secs(30),
            write: Some(Duration::from_secs(60)),
        };
        let activity = Activity::new(None);
        activity.bytes_arrived();
        activity.request_started();
        assert_eq!(activity.deadline(&limits), None);
        activity.write_blocked();
        let since = activity.write_blocked_since.load(Ordering::Relaxed);
        // Another blocked write later does not move it.
        activity.write_blocked();
        assert!(activity.write_waiting());
        assert_eq!(activity.deadline(&limits), Some(since + 60_000));
        // Without a socket to ask, nothing says the kernel is still sending.
        assert!(!activity.still_draining(since + 60_000));
        // Once the request is over for the app, hyper may still be stuck on its last bytes.
        activity.request_done();
        assert_eq!(activity.deadline(&limits), Some(since + 60_000));
        activity.write_progressed();
        assert!(!activity.write_waiting());
        // Idle from the end of the stall, not from the end of the app's response.
        let idle_from = activity.idle_since.load(Ordering::Relaxed);
        assert_eq!(activity.deadline(&limits), Some(idle_from + 5_000));
        // With the timeout off, a stalled write has no deadline at all.
        activity.write_blocked();
        limits.write = None;
        assert_eq!(activity.deadline(&limits), None);
    }

    /// A stall is progress while the kernel's queue for the socket goes down: the peer reads.
    #[test]
    fn a_stall_still_draining_is_timed_again() {
        use std::io::{Read, Write};
        let (mut ours, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let chunk = [7u8; 4096];
        while ours.write(&chunk).is_ok() {}
        let activity = Activity::new(Some(std::os::fd::AsRawFd::as_raw_fd(&ours)));
        activity.write_blocked();
        assert!(!activity.still_draining(100_000), "nothing was read yet");
        let mut sink = [0u8; 65536];
        peer.read_exact(&mut sink).unwrap();
        assert!(activity.still_draining(100_000));
        assert_eq!(
            activity.write_blocked_since.load(Ordering::Relaxed),
            100_000
        );
        assert!(
            !activity.still_draining(200_000),
            "and not again without another read"
        );
    }
}
