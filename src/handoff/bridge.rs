//! The two batched queues between the I/O thread and the event-loop thread.
//!
//! I/O -> loop: events are pushed into `inbox`; only the push that finds it empty asks for a
//! wake-up of the loop, so one wake-up carries every event queued until it drains. The
//! eventfd is written by a task of the I/O runtime ([`Bridge::signal`]) that runs after the
//! tasks already ready: the requests that arrived together go over in one batch, and the loop
//! thread is not woken (and, on a shared CPU, scheduled) once per request.
//!
//! loop -> I/O: exchanges whose response side changed are pushed into `outbox`; the loop thread
//! then wakes the I/O thread's dispatcher once per batch (see `Core::flush`), which wakes each
//! exchange's task locally.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::exchange::Exchange;
use super::head::RequestHead;

/// What the I/O thread tells the loop thread.
pub enum Event {
    /// A request head arrived: start the app.
    Request(Arc<Exchange>, Box<RequestHead>),
    /// A valid WebSocket upgrade request arrived: start the app with a websocket scope.
    WebSocket(Arc<Exchange>, Box<RequestHead>),
    /// The exchange changed in a way a pending `receive()` or `send()` may care about.
    Wake(Arc<Exchange>),
    /// A log record from the Rust side, written through Python's `logging` by the loop thread.
    Log(LogLevel, String),
    /// An access line for the `rsgi.access` logger, when Python handlers must write it.
    Access(String),
    /// A response body the I/O side has written (`lend.rs`), to be released with the GIL.
    Release(super::Owned),
}

#[derive(Clone, Copy, Debug)]
pub enum LogLevel {
    Warning = 30,
    Error = 40,
}

pub struct Bridge {
    inbox: Mutex<Vec<Event>>,
    wakeup: Wakeup,
    /// Set when the loop is owed a wake-up that [`Bridge::signal`] has not written yet.
    wake_owed: AtomicBool,
    /// The waker of the running [`Bridge::signal`] task; `None` when no such task runs, and
    /// then a push writes the eventfd itself.
    signal_waker: Mutex<Option<Waker>>,
    outbox: Mutex<Vec<Arc<Exchange>>>,
    io_notify: Notify,
    /// Requests whose exchange has ended on the I/O side (response written, or the client
    /// gone). Counted by `Completion::drop`, read by `Core.requests()`: the gunicorn worker
    /// compares it with `max_requests` from its heartbeat.
    requests: AtomicU64,
}

impl Bridge {
    pub fn new() -> io::Result<Self> {
        Ok(Bridge {
            inbox: Mutex::new(Vec::with_capacity(256)),
            wakeup: Wakeup::new()?,
            wake_owed: AtomicBool::new(false),
            signal_waker: Mutex::new(None),
            outbox: Mutex::new(Vec::with_capacity(256)),
            io_notify: Notify::new(),
            requests: AtomicU64::new(0),
        })
    }

    /// The file descriptor the event loop watches with `add_reader`.
    pub fn loop_fd(&self) -> RawFd {
        self.wakeup.read_fd()
    }

    /// Queues an event for the loop thread (I/O thread side).
    pub fn push(&self, event: Event) {
        let was_empty = {
            let mut q = self.inbox.lock();
            let was_empty = q.is_empty();
            q.push(event);
            was_empty
        };
        if was_empty {
            self.wake_loop();
        }
    }

    fn wake_loop(&self) {
        match &*self.signal_waker.lock() {
            Some(waker) => {
                self.wake_owed.store(true, Ordering::Release);
                waker.wake_by_ref();
            }
            None => self.wakeup.notify(),
        }
    }

    /// The I/O runtime's task that writes the loop's eventfd, once per batch of pushes.
    ///
    /// Woken by the first push of a batch, it is queued behind the tasks that are already
    /// ready, so the requests read in the same turn of the runtime are queued before the loop
    /// hears of them. When the task is dropped (the runtime stops) it hands the job back to
    /// [`Bridge::push`], and writes any wake-up still owed.
    pub async fn signal(self: Arc<Self>) {
        struct Unregister<'a>(&'a Bridge);
        impl Drop for Unregister<'_> {
            fn drop(&mut self) {
                *self.0.signal_waker.lock() = None;
                if self.0.wake_owed.swap(false, Ordering::AcqRel) {
                    self.0.wakeup.notify();
                }
            }
        }
        let _unregister = Unregister(&self);
        loop {
            poll_fn(|cx| {
                if self.wake_owed.swap(false, Ordering::AcqRel) {
                    return Poll::Ready(());
                }
                let mut slot = self.signal_waker.lock();
                if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *slot = Some(cx.waker().clone());
                }
                drop(slot);
                // A push between the first check and the registration woke no one.
                if self.wake_owed.swap(false, Ordering::AcqRel) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            self.wakeup.notify();
        }
    }

    /// Counts one ended request (I/O thread side).
    pub fn request_ended(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests ended so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn log(&self, level: LogLevel, msg: String) {
        self.push(Event::Log(level, msg));
    }

    /// Takes every queued event (loop thread side). `spare` is an empty vector whose
    /// allocation is reused for the next batch.
    pub fn take_events(&self, spare: &mut Vec<Event>) {
        self.wakeup.clear();
        std::mem::swap(&mut *self.inbox.lock(), spare);
    }

    /// Queues an exchange for the I/O side. Returns true when the caller must arrange a
    /// `flush` (the first exchange of a batch).
    pub fn queue_io(&self, ex: &Arc<Exchange>) -> bool {
        let mut q = self.outbox.lock();
        let was_empty = q.is_empty();
        q.push(ex.clone());
        was_empty
    }

    /// Wakes the I/O dispatcher once for everything queued so far (loop thread side).
    pub fn flush(&self) {
        self.io_notify.notify_one();
    }

    /// The I/O thread's dispatcher: wakes each queued exchange's tasks, batch by batch.
    pub async fn dispatch(self: Arc<Self>) {
        let mut batch = Vec::with_capacity(256);
        loop {
            self.io_notify.notified().await;
            std::mem::swap(&mut *self.outbox.lock(), &mut batch);
            for ex in batch.drain(..) {
                ex.wake_io();
            }
        }
    }
}

/// A level-triggered wake-up the event loop can watch: an eventfd on Linux, a pipe elsewhere.
struct Wakeup {
    read: OwnedFd,
    #[cfg(not(target_os = "linux"))]
    write: OwnedFd,
}

impl Wakeup {
    #[cfg(target_os = "linux")]
    fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Wakeup {
            read: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn new() -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid two-element array for pipe() to fill.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in fds {
            // SAFETY: both descriptors were just created by pipe().
            unsafe {
                libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        // SAFETY: fresh descriptors owned by nothing else.
        Ok(Wakeup {
            read: unsafe { OwnedFd::from_raw_fd(fds[0]) },
            write: unsafe { OwnedFd::from_raw_fd(fds[1]) },
        })
    }

    fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    fn write_fd(&self) -> RawFd {
        #[cfg(target_os = "linux")]
        return self.read.as_raw_fd();
        #[cfg(not(target_os = "linux"))]
        return self.write.as_raw_fd();
    }

    fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own. A full eventfd counter
        // or pipe (EAGAIN) still leaves the reader woken, so the result needs no handling.
        unsafe {
            libc::write(self.write_fd(), (&one as *const u64).cast(), 8);
        }
    }

    fn clear(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a live local buffer of the given length from a descriptor we own;
        // EAGAIN (nothing to read) is expected and harmless.
        unsafe {
            libc::read(self.read_fd(), buf.as_mut_ptr().cast(), buf.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending_wakeups(bridge: &Bridge) -> u64 {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer from a descriptor we own.
        let n = unsafe { libc::read(bridge.loop_fd(), buf.as_mut_ptr().cast(), 8) };
        if n == 8 {
            u64::from_ne_bytes(buf)
        } else {
            0
        }
    }

    #[test]
    fn one_wakeup_per_batch() {
        let bridge = Bridge::new().unwrap();
        for _ in 0..3 {
            bridge.log(LogLevel::Warning, "x".into());
        }
        assert_eq!(
            pending_wakeups(&bridge),
            1,
            "only the first push of a batch wakes the loop"
        );
        let mut events = Vec::new();
        bridge.take_events(&mut events);
        assert_eq!(events.len(), 3, "one drain takes the whole batch");
        bridge.log(LogLevel::Error, "y".into());
        bridge.log(LogLevel::Error, "z".into());
        let mut again = Vec::new();
        bridge.take_events(&mut again);
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn signal_writes_one_wakeup_after_the_ready_tasks() {
        let bridge = Arc::new(Bridge::new().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::spawn(bridge.clone().signal());
            tokio::task::yield_now().await;
            // Three requests read in the same turn of the runtime.
            for _ in 0..3 {
                bridge.log(LogLevel::Warning, "x".into());
            }
            assert_eq!(
                pending_wakeups(&bridge),
                0,
                "deferred until this task yields"
            );
            tokio::task::yield_now().await;
            assert_eq!(pending_wakeups(&bridge), 1, "one wake-up for the batch");
        });
        let mut events = Vec::new();
        bridge.take_events(&mut events);
        assert_eq!(events.len(), 3);
        bridge.log(LogLevel::Error, "after".into());
        drop(rt);
        bridge.log(LogLevel::Error, "no runtime".into());
        assert_eq!(pending_wakeups(&bridge), 1, "owed or direct, never lost");
    }

    #[test]
    fn queue_io_asks_for_one_flush_per_batch() {
        let bridge = Bridge::new().unwrap();
        let ex = Arc::new(Exchange::new(true));
        assert!(bridge.queue_io(&ex), "first of a batch");
        assert!(!bridge.queue_io(&ex), "the batch is already due a flush");
    }
}
