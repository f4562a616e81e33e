//! The state one HTTP request shares between the I/O thread and the event-loop thread.
//!
//! Invariants:
//! - Only plain Rust data lives here: no Python object is ever stored, so either thread may drop
//!   the last `Arc<Exchange>` without holding the GIL.
//! - The loop thread writes the response side and reads the request side; the I/O thread does
//!   the opposite. Both sides lock the same mutex, which is uncontended in the common case.
//! - Buffered bytes are bounded in both directions: the request pump stops reading at
//!   [`REQUEST_READ_AHEAD`] bytes not yet taken by the app, and `send()` suspends the app once
//!   [`RESPONSE_HIGH_WATER`] bytes wait for the socket.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Waker;

use bytes::Bytes;
use http::HeaderMap;
use parking_lot::{Mutex, MutexGuard};

/// Request body bytes the I/O thread reads ahead of the app.
pub const REQUEST_READ_AHEAD: usize = 256 * 1024;
/// Response body bytes queued for the socket before `send()` suspends the app.
pub const RESPONSE_HIGH_WATER: usize = 512 * 1024;
/// A suspended `send()` resumes once the queue has drained below this.
pub const RESPONSE_LOW_WATER: usize = 64 * 1024;

/// Slot value of an exchange whose app task has finished.
pub const NO_SLOT: usize = usize::MAX;

/// The response head, as the app sent it in `http.response.start`.
pub struct ResponseHead {
    pub status: u16,
    pub headers: HeaderMap,
}

#[derive(Default)]
pub struct Inner {
    // Request body: written by the I/O thread, taken by the app.
    pub req_chunks: VecDeque<Bytes>,
    pub req_buffered: usize,
    pub req_done: bool,
    /// The app asked for the body (drives `100 Continue` and the read-ahead).
    pub req_wanted: bool,
    /// The body failed (malformed, too large, stalled): the status to answer with (0: none);
    /// the app sees a disconnect.
    pub req_failed: u16,

    // Response: written by the app, taken by the I/O thread.
    pub head: Option<ResponseHead>,
    pub resp_chunks: VecDeque<Bytes>,
    pub resp_buffered: usize,
    /// The app sent all of its response (body, file and announced trailers).
    pub resp_done: bool,
    /// `http.response.pathsend`: a file the I/O thread streams after `resp_chunks`.
    pub resp_file: Option<PathBuf>,
    /// `http.response.start` announced trailers: the body's length is not known from it.
    pub trailers_announced: bool,
    /// `http.response.trailers` fields, sent after the body.
    pub resp_trailers: Option<HeaderMap>,
    /// The app failed after the response started: the connection must close without a clean end.
    pub abort: bool,

    /// The client has gone: the app's `send()` raises `ClientDisconnected`.
    pub gone: bool,
    /// hyper wrote the whole response its head framed (a HEAD request, a status without a
    /// body, or all `content-length` bytes) before the app's last message: what the app sends
    /// from now on is dropped, and its `send()` still succeeds.
    pub delivered: bool,
    /// The server ended an endless response (an event stream at shutdown): the body ends
    /// cleanly after what is queued, and the app sees a disconnect.
    pub ended: bool,
    /// The loop thread has a pending future that an I/O-side change may resolve.
    pub loop_waiting: bool,
    /// Already queued for a wake-up of the I/O side.
    pub io_queued: bool,
    /// The service future or the response body waiting for the app; for an accepted
    /// WebSocket, its session.
    pub io_waker: Option<Waker>,
    /// The request body pump waiting for the app to want more.
    pub pump_waker: Option<Waker>,

    /// A WebSocket's messages, both ways (unused by plain HTTP requests).
    pub ws: crate::ws::Queues,
}

pub struct Exchange {
    inner: Mutex<Inner>,
    /// Index of the app's cycle object on the loop thread; written and read there only.
    slot: AtomicUsize,
}

impl Exchange {
    pub fn new(req_done: bool) -> Self {
        let inner = Inner {
            req_done,
            ..Inner::default()
        };
        Exchange {
            inner: Mutex::new(inner),
            slot: AtomicUsize::new(NO_SLOT),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    pub fn slot(&self) -> usize {
        self.slot.load(Ordering::Relaxed)
    }

    pub fn set_slot(&self, slot: usize) {
        self.slot.store(slot, Ordering::Relaxed)
    }

    /// Wakes the I/O-side tasks of this exchange. Called on the I/O thread by the dispatcher.
    pub fn wake_io(&self) {
        let (a, b) = {
            let mut st = self.lock();
            st.io_queued = false;
            (st.io_waker.take(), st.pump_waker.take())
        };
        if let Some(w) = a {
            w.wake();
        }
        if let Some(w) = b {
            w.wake();
        }
    }
}

impl Inner {
    /// Queues response body bytes for the I/O side; an empty chunk queues nothing.
    pub fn push_body(&mut self, chunk: Bytes) {
        if !chunk.is_empty() && !self.delivered {
            self.resp_buffered += chunk.len();
            self.resp_chunks.push_back(chunk);
        }
    }

    /// A whole response at once: the head and all of the body.
    pub fn respond(&mut self, status: u16, headers: HeaderMap, body: Bytes) {
        self.head = Some(ResponseHead { status, headers });
        self.push_body(body);
        self.resp_done = true;
    }

    /// The app can no longer reach the client: its `send()` raises `ClientDisconnected` and
    /// `receive()` returns `http.disconnect`.
    pub fn cut_off(&self) -> bool {
        self.gone || self.ended
    }
}
