//! The lifecycle of one request: the state it shares between the I/O thread and the event-loop
//! thread, and the only transitions that state may take. Every change to a request's state is a
//! method of [`State`] here; the rest of the crate reads and drives it through them.
//!
//! Three things move independently:
//! - the request body ([`Body`]), read by the I/O side: streaming, complete, or failed (too
//!   large, stalled, malformed);
//! - the response ([`Reply`]), written by the app: pending (no head), streaming (head given,
//!   body flowing), complete (the app's last message), or aborted (the app failed after the
//!   head);
//! - the client ([`Client`]), as far as the app is concerned: connected; delivered (hyper wrote
//!   the whole response its head framed, so what the app sends after is dropped, and its sends
//!   still succeed); ended (the server ended an endless response at shutdown); or gone.
//!
//! Invariants:
//! - Only plain Rust data lives here: no Python object is ever stored, so either thread may drop
//!   the last `Arc<Exchange>` without holding the GIL.
//! - Buffered bytes are bounded in both directions: the request pump stops reading at
//!   [`REQUEST_READ_AHEAD`] bytes not yet taken by the app, and `send()` suspends the app once
//!   [`RESPONSE_HIGH_WATER`] bytes wait for the socket.
//! - A side that leaves a future or a task waiting registers for the other side's next change
//!   first, under the lock: the loop side with [`State::wait_for_io`], the I/O side with its
//!   waker. The other side takes that registration when it changes something
//!   ([`State::take_loop_waiting`], [`Exchange::wake_io`]).

use std::collections::vec_deque::Drain;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Waker;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use parking_lot::{Mutex, MutexGuard};

/// Request body bytes the I/O thread reads ahead of the app.
pub const REQUEST_READ_AHEAD: usize = 256 * 1024;
/// The most one `receive()` takes of them (or one chunk, if larger): each becomes one `bytes`,
/// and under glibc's 128 KiB mmap threshold Python's allocator reuses that memory instead of
/// faulting fresh pages in for each (1 MiB uploads: 37-41 page faults per request, against
/// 57-78 with the whole read-ahead in one object).
pub const RECEIVE_PIECE: usize = 64 * 1024;
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

/// Why a request body failed. The app sees a disconnect; the client gets the status when no
/// response has started, and a cut connection otherwise.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BodyFailure {
    /// Over `--limit-request-body`.
    TooLarge,
    /// No body bytes for `--timeout-request-body`.
    Stalled,
    /// Malformed framing, or a body cut short.
    Malformed,
}

impl BodyFailure {
    pub fn status(self) -> StatusCode {
        match self {
            BodyFailure::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyFailure::Stalled => StatusCode::REQUEST_TIMEOUT,
            BodyFailure::Malformed => StatusCode::BAD_REQUEST,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            BodyFailure::TooLarge => "request body too large",
            BodyFailure::Stalled => "request body stalled",
            BodyFailure::Malformed => "malformed request body",
        }
    }
}

/// The request body, as the I/O side reads it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Body {
    Streaming,
    Complete,
    Failed(BodyFailure),
}

/// The response, as the app writes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reply {
    /// No head yet.
    Pending,
    /// The head was given; body bytes may follow.
    Streaming,
    /// The app sent all of its response (body, file and announced trailers).
    Complete,
    /// The app failed after the head: the connection must close without a clean end, so the
    /// client never mistakes a cut response for a complete one.
    Aborted,
}

/// The client, as far as the app is concerned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Client {
    Connected,
    /// hyper wrote every byte the response head framed (a HEAD request, a status without a
    /// body, or all `content-length` bytes) before the app's last message: what the app sends
    /// from now on is dropped, and its `send()` still succeeds.
    Delivered,
    /// The server ended an endless response (an event stream at shutdown): the body ends
    /// cleanly after what is queued, and the app sees a disconnect.
    Ended,
    /// The client left, or its request body failed.
    Gone,
}

/// What the response body asks of the exchange next ([`State::next_body`]).
pub enum Next {
    /// Body bytes; `last` when nothing follows them.
    Chunk {
        data: Bytes,
        last: bool,
    },
    /// The queued bytes are out: the `http.response.pathsend` file is the rest of the body.
    File(PathBuf),
    /// The body is complete, with these trailers if any.
    End(Option<HeaderMap>),
    Aborted,
    /// Nothing yet: the caller registers its waker.
    Wait,
}

/// What the service waiting for the response head finds ([`State::take_head`]).
pub enum HeadState {
    Head(ResponseHead),
    /// The request body failed before any head: answer with its status.
    Refused(BodyFailure),
    Pending,
}

pub struct State {
    // Request body: written by the I/O thread, taken by the app.
    req_chunks: VecDeque<Bytes>,
    req_buffered: usize,
    body: Body,
    /// The app asked for the body (drives `100 Continue` and the read-ahead).
    body_wanted: bool,

    // Response: written by the app, taken by the I/O thread.
    head: Option<ResponseHead>,
    reply: Reply,
    resp_chunks: VecDeque<Bytes>,
    resp_buffered: usize,
    /// `http.response.pathsend`: a file the I/O thread streams after `resp_chunks`.
    resp_file: Option<PathBuf>,
    /// `http.response.start` announced trailers: the body's length is not known from it.
    trailers_announced: bool,
    /// `http.response.trailers` fields, sent after the body.
    resp_trailers: Option<HeaderMap>,

    client: Client,

    /// The loop thread has a pending future that an I/O-side change may resolve.
    loop_waiting: bool,
    /// Already queued for a wake-up of the I/O side.
    io_queued: bool,
    /// The service future or the response body waiting for the app; for an accepted
    /// WebSocket, its session.
    io_waker: Option<Waker>,
    /// The request body pump waiting for the app to want more.
    pump_waker: Option<Waker>,

    /// A WebSocket's messages, both ways (unused by plain HTTP requests).
    pub ws: crate::handoff::ws::Queues,
}

pub struct Exchange {
    inner: Mutex<State>,
    /// Index of the app's cycle object on the loop thread; written and read there only.
    slot: AtomicUsize,
}

impl Exchange {
    /// `body_complete`: the request has no body (or hyper already knows it is empty).
    pub fn new(body_complete: bool) -> Self {
        let state = State {
            req_chunks: VecDeque::new(),
            req_buffered: 0,
            body: if body_complete {
                Body::Complete
            } else {
                Body::Streaming
            },
            body_wanted: false,
            head: None,
            reply: Reply::Pending,
            resp_chunks: VecDeque::new(),
            resp_buffered: 0,
            resp_file: None,
            trailers_announced: false,
            resp_trailers: None,
            client: Client::Connected,
            loop_waiting: false,
            io_queued: false,
            io_waker: None,
            pump_waker: None,
            ws: crate::handoff::ws::Queues::default(),
        };
        Exchange {
            inner: Mutex::new(state),
            slot: AtomicUsize::new(NO_SLOT),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
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

/// Both sides: the client and the wake-ups.
impl State {
    pub fn client(&self) -> Client {
        self.client
    }

    /// The app can no longer reach the client: its `send()` raises `ClientDisconnected` and
    /// `receive()` returns `http.disconnect`.
    pub fn cut_off(&self) -> bool {
        matches!(self.client, Client::Gone | Client::Ended)
    }

    /// The client has gone (I/O side), or the app must behave as if it had: a failed body,
    /// a WebSocket over. What the app still had queued will never be written.
    pub fn client_gone(&mut self) {
        self.client = Client::Gone;
    }

    /// Loop side: a future is left pending; the next I/O-side change must wake the loop.
    pub fn wait_for_io(&mut self) {
        self.loop_waiting = true;
    }

    /// I/O side, after a change: whether the loop must be woken for it (once per wait).
    pub fn take_loop_waiting(&mut self) -> bool {
        std::mem::take(&mut self.loop_waiting)
    }

    /// Loop side: whether the I/O side still has to be told of this exchange in this batch.
    pub fn queue_for_io(&mut self) -> bool {
        !std::mem::replace(&mut self.io_queued, true)
    }

    /// I/O side: the task waiting for the app (the service, for a refused body's answer).
    pub fn take_io_waker(&mut self) -> Option<Waker> {
        self.io_waker.take()
    }

    /// I/O side: the task to wake on the loop side's next change.
    pub fn set_io_waker(&mut self, waker: &Waker) {
        if !self.io_waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.io_waker = Some(waker.clone());
        }
    }
}

/// The request body: the I/O side fills it, the app drains it.
impl State {
    pub fn body(&self) -> Body {
        self.body
    }

    /// Whether the pump may read more now; if not, it waits with `waker` for the app.
    /// `None` when it must stop (the client is gone).
    pub fn pump_may_read(&mut self, waker: &Waker) -> Option<bool> {
        if self.client == Client::Gone {
            return None;
        }
        if self.body_wanted && self.req_buffered < REQUEST_READ_AHEAD {
            return Some(true);
        }
        self.pump_waker = Some(waker.clone());
        Some(false)
    }

    /// Whether the read-ahead is full.
    pub fn request_buffer_full(&self) -> bool {
        self.req_buffered >= REQUEST_READ_AHEAD
    }

    pub fn push_request_body(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.req_buffered += data.len();
            self.req_chunks.push_back(data);
        }
    }

    /// The last body byte was read.
    pub fn request_body_complete(&mut self) {
        if self.body == Body::Streaming {
            self.body = Body::Complete;
        }
    }

    /// The body broke a limit or its framing: the app sees a disconnect, and a response under
    /// way is cut (it cannot carry the status any more).
    pub fn fail_body(&mut self, failure: BodyFailure) {
        self.body = Body::Failed(failure);
        self.client = Client::Gone;
        if self.reply == Reply::Streaming {
            self.reply = Reply::Aborted;
        }
    }

    /// Loop side: the app asked for the body. Returns true the first time, when the I/O side
    /// must be told (to send `100 Continue` and start reading).
    pub fn want_body(&mut self) -> bool {
        !std::mem::replace(&mut self.body_wanted, true)
    }

    /// I/O side: the body may be read without waiting for the app to ask.
    pub fn body_wanted_now(&mut self) {
        self.body_wanted = true;
    }

    /// Loop side: how many body bytes the next `receive()` takes (whole chunks, up to
    /// [`RECEIVE_PIECE`] unless the first is larger), and whether more may come after them;
    /// `None` when there is nothing to take.
    pub fn request_body_ready(&self) -> Option<(usize, bool)> {
        let mut piece = 0;
        for chunk in &self.req_chunks {
            if piece > 0 && piece + chunk.len() > RECEIVE_PIECE {
                // A failed body is never complete: the app gets what came, then a disconnect.
                return Some((piece, true));
            }
            piece += chunk.len();
        }
        (piece > 0).then_some((piece, self.body != Body::Complete))
    }

    /// Loop side: takes the chunks that make up the `piece` bytes
    /// [`State::request_body_ready`] counted.
    pub fn drain_request_body(&mut self, piece: usize) -> Drain<'_, Bytes> {
        let mut taken = 0;
        let count = self
            .req_chunks
            .iter()
            .take_while(|chunk| {
                let take = taken < piece;
                taken += chunk.len();
                take
            })
            .count();
        self.req_buffered -= piece;
        self.req_chunks.drain(..count)
    }

    /// Whether the pump waits for the app and should be woken now: it reads again once the
    /// app has taken half the read-ahead, so one wake-up carries several pieces.
    pub fn pump_wants_waking(&self) -> bool {
        self.pump_waker.is_some() && self.req_buffered <= REQUEST_READ_AHEAD / 2
    }
}

/// The response: the app writes it, the I/O side takes it.
impl State {
    pub fn reply(&self) -> Reply {
        self.reply
    }

    /// `http.response.start` (or a WebSocket's 101, or a denial's start).
    pub fn start_reply(&mut self, head: ResponseHead, trailers: bool) {
        self.head = Some(head);
        self.trailers_announced = trailers;
        self.reply = Reply::Streaming;
    }

    /// Queues response body bytes for the I/O side; an empty chunk, or any chunk once the
    /// response was delivered, queues nothing.
    pub fn push_body(&mut self, chunk: Bytes) {
        if !chunk.is_empty() && self.client != Client::Delivered {
            self.resp_buffered += chunk.len();
            self.resp_chunks.push_back(chunk);
        }
    }

    /// `http.response.pathsend`: the file at `path` is the rest of the body.
    pub fn send_file(&mut self, path: PathBuf) {
        self.resp_file = Some(path);
    }

    /// `http.response.trailers` fields, sent after the body.
    pub fn add_trailers(&mut self, fields: &HeaderMap) {
        if fields.is_empty() {
            return;
        }
        let all = self.resp_trailers.get_or_insert_with(HeaderMap::new);
        for (name, value) in fields {
            all.append(name.clone(), value.clone());
        }
    }

    /// The app sent its last message.
    pub fn complete_reply(&mut self) {
        if self.reply != Reply::Aborted {
            self.reply = Reply::Complete;
        }
    }

    /// A whole response at once: the head and all of the body.
    pub fn respond(&mut self, status: u16, headers: HeaderMap, body: Bytes) {
        self.start_reply(ResponseHead { status, headers }, false);
        self.push_body(body);
        self.reply = Reply::Complete;
    }

    /// The app failed after the head. An event stream the server ended is not cut: it ends
    /// cleanly with what the app had queued.
    pub fn abort_reply(&mut self) {
        if self.client != Client::Ended && self.reply != Reply::Complete {
            self.reply = Reply::Aborted;
        }
    }

    /// Ends an event stream from the server's side (shutdown): the body ends after what is
    /// queued, and the app is cut off from the client.
    pub fn end_stream(&mut self) {
        if self.client == Client::Connected {
            self.client = Client::Ended;
            self.reply = Reply::Complete;
        }
    }

    /// Response bytes queued and not yet taken by the I/O side.
    pub fn unsent(&self) -> usize {
        self.resp_buffered
    }

    /// I/O side: the head, once the app sent it; or the body's failure.
    pub fn take_head(&mut self, waker: &Waker) -> HeadState {
        if let Body::Failed(failure) = self.body {
            return HeadState::Refused(failure);
        }
        match self.head.take() {
            Some(head) => HeadState::Head(head),
            None => {
                self.io_waker = Some(waker.clone());
                HeadState::Pending
            }
        }
    }

    /// I/O side: the whole body's length, when the app already sent all of it and the head
    /// can frame it with `content-length`.
    pub fn known_length(&self) -> Option<u64> {
        let known =
            self.reply == Reply::Complete && self.resp_file.is_none() && !self.trailers_announced;
        known.then_some(self.resp_buffered as u64)
    }

    /// I/O side: whether the body is over once a file in progress is done (nothing queued
    /// after it and no trailers to send).
    pub fn nothing_after_file(&self) -> bool {
        self.reply == Reply::Complete && self.resp_trailers.is_none()
    }

    /// I/O side: the next part of the response body. A chunk taken below the low-water mark
    /// wakes a `send()` waiting for the queue to drain (`wake_loop`).
    pub fn next_body(&mut self, wake_loop: &mut bool) -> Next {
        if let Some(data) = self.resp_chunks.pop_front() {
            self.resp_buffered -= data.len();
            let last = self.reply == Reply::Complete
                && self.resp_chunks.is_empty()
                && self.resp_file.is_none()
                && self.resp_trailers.is_none();
            if self.loop_waiting && self.resp_buffered < RESPONSE_LOW_WATER {
                self.loop_waiting = false;
                *wake_loop = true;
            }
            return Next::Chunk { data, last };
        }
        if let Some(path) = self.resp_file.take() {
            return Next::File(path);
        }
        match self.reply {
            Reply::Aborted => Next::Aborted,
            Reply::Complete => Next::End(self.resp_trailers.take()),
            Reply::Pending | Reply::Streaming => Next::Wait,
        }
    }

    /// I/O side: hyper is done with the response, written or not. `delivered`: hyper wrote
    /// every byte the head framed. Returns whether the response was complete; otherwise the
    /// client is delivered (the app's late messages are dropped) or gone.
    pub fn io_done(&mut self, delivered: bool) -> bool {
        // hyper does not poll a body it knows to be empty (content-length: 0): the response
        // was complete all the same.
        if self.reply == Reply::Complete && self.resp_chunks.is_empty() {
            return true;
        }
        if delivered && self.reply != Reply::Aborted {
            self.client = Client::Delivered;
            self.resp_chunks.clear();
            self.resp_buffered = 0;
            self.resp_file = None;
        } else {
            self.client = Client::Gone;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16) -> ResponseHead {
        ResponseHead {
            status,
            headers: HeaderMap::new(),
        }
    }

    fn chunk(st: &mut State) -> Option<(Bytes, bool)> {
        let mut wake = false;
        match st.next_body(&mut wake) {
            Next::Chunk { data, last } => Some((data, last)),
            _ => None,
        }
    }

    #[test]
    fn a_whole_response_is_known_in_length_and_ends() {
        let ex = Exchange::new(true);
        let mut st = ex.lock();
        st.respond(200, HeaderMap::new(), Bytes::from_static(b"hello"));
        assert_eq!(st.known_length(), Some(5));
        assert!(matches!(st.take_head(Waker::noop()), HeadState::Head(h) if h.status == 200));
        assert_eq!(chunk(&mut st), Some((Bytes::from_static(b"hello"), true)));
        assert!(matches!(st.next_body(&mut false), Next::End(None)));
        assert!(st.io_done(false));
        assert_eq!(st.client(), Client::Connected);
    }

    #[test]
    fn a_streamed_response_waits_then_ends() {
        let ex = Exchange::new(true);
        let mut st = ex.lock();
        st.start_reply(head(200), false);
        assert_eq!(st.known_length(), None);
        assert!(matches!(st.next_body(&mut false), Next::Wait));
        st.push_body(Bytes::from_static(b"a"));
        assert_eq!(chunk(&mut st), Some((Bytes::from_static(b"a"), false)));
        st.complete_reply();
        assert!(matches!(st.next_body(&mut false), Next::End(None)));
    }

    #[test]
    fn a_drained_queue_wakes_a_waiting_send_once() {
        let ex = Exchange::new(true);
        let mut st = ex.lock();
        st.start_reply(head(200), false);
        st.push_body(Bytes::from(vec![0; RESPONSE_HIGH_WATER + 1]));
        st.wait_for_io();
        let mut wake = false;
        st.next_body(&mut wake);
        assert!(wake);
        assert!(!st.take_loop_waiting());
    }

    #[test]
    fn hyper_done_before_the_last_message_is_delivered_not_gone() {
        let ex = Exchange::new(true);
        let mut st = ex.lock();
        st.start_reply(head(200), false);
        st.push_body(Bytes::from_static(b"hello"));
        chunk(&mut st);
        assert!(!st.io_done(true));
        assert_eq!(st.client(), Client::Delivered);
        assert!(!st.cut_off());
        // The closing message is accepted and its bytes dropped.
        st.push_body(Bytes::from_static(b"more"));
        assert_eq!(st.unsent(), 0);
        st.complete_reply();
        assert_eq!(st.reply(), Reply::Complete);
    }

    #[test]
    fn hyper_done_early_without_delivering_is_a_disconnect() {
        let ex = Exchange::new(true);
        let mut st = ex.lock();
        st.start_reply(head(200), false);
        assert!(!st.io_done(false));
        assert!(st.cut_off());
    }

    #[test]
    fn an_aborted_reply_is_never_delivered() {
        let ex = Exchange::new(true);
        let mut st = ex.lock();
        st.start_reply(head(200), false);
        st.abort_reply();
        assert!(matches!(st.next_body(&mut false), Next::Aborted));
        assert!(!st.io_done(true));
        assert_eq!(st.client(), Client::Gone);
    }

    #[test]
    fn a_failed_body_refuses_before_the_head_and_cuts_after_it() {
        let ex = Exchange::new(false);
        let mut st = ex.lock();
        st.fail_body(BodyFailure::TooLarge);
        assert!(st.cut_off());
        assert!(matches!(
            st.take_head(Waker::noop()),
            HeadState::Refused(BodyFailure::TooLarge)
        ));
        assert_eq!(
            BodyFailure::TooLarge.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );

        let ex = Exchange::new(false);
        let mut st = ex.lock();
        st.start_reply(head(200), false);
        st.fail_body(BodyFailure::Malformed);
        assert_eq!(st.reply(), Reply::Aborted);
    }

    #[test]
    fn an_ended_stream_closes_cleanly_even_when_its_app_fails() {
        let ex = Exchange::new(true);
        let mut st = ex.lock();
        st.start_reply(head(200), false);
        st.push_body(Bytes::from_static(b"data: 1\n\n"));
        st.end_stream();
        assert!(st.cut_off());
        st.abort_reply();
        assert_eq!(
            chunk(&mut st),
            Some((Bytes::from_static(b"data: 1\n\n"), true))
        );
        assert!(matches!(st.next_body(&mut false), Next::End(None)));
        assert!(st.io_done(false));
    }

    #[test]
    fn the_request_body_is_read_ahead_only_as_far_as_allowed() {
        let ex = Exchange::new(false);
        let mut st = ex.lock();
        assert_eq!(st.pump_may_read(Waker::noop()), Some(false));
        assert!(st.want_body());
        assert!(!st.want_body());
        assert_eq!(st.pump_may_read(Waker::noop()), Some(true));
        st.push_request_body(Bytes::from(vec![0; REQUEST_READ_AHEAD]));
        assert!(st.request_buffer_full());
        assert_eq!(st.pump_may_read(Waker::noop()), Some(false));
        assert_eq!(st.request_body_ready(), Some((REQUEST_READ_AHEAD, true)));
        assert_eq!(st.drain_request_body(REQUEST_READ_AHEAD).count(), 1);
        assert_eq!(st.request_body_ready(), None);
        st.request_body_complete();
        assert_eq!(st.body(), Body::Complete);
        st.client_gone();
        assert_eq!(st.pump_may_read(Waker::noop()), None);
    }

    #[test]
    fn the_app_takes_the_body_in_pieces_and_wakes_the_pump_at_half() {
        let ex = Exchange::new(false);
        let mut st = ex.lock();
        st.want_body();
        assert_eq!(st.pump_may_read(Waker::noop()), Some(true));
        let k = 1024;
        for len in [40 * k, 40 * k, 100 * k, 80 * k] {
            st.push_request_body(Bytes::from(vec![0; len]));
        }
        assert_eq!(st.pump_may_read(Waker::noop()), Some(false));
        let mut pieces = Vec::new();
        while let Some((piece, more)) = st.request_body_ready() {
            let chunks: Vec<usize> = st.drain_request_body(piece).map(|c| c.len()).collect();
            assert_eq!(chunks.iter().sum::<usize>(), piece);
            pieces.push((piece / k, more, st.pump_wants_waking()));
            if pieces.len() == 3 {
                st.request_body_complete();
            }
        }
        // 40 + 40 > 64: one chunk; a chunk over 64 KiB alone; the pump is woken once half
        // the read-ahead (128 KiB) or less is left.
        assert_eq!(
            pieces,
            [
                (40, true, false),
                (40, true, false),
                (100, true, true),
                (80, false, true)
            ]
        );
    }

    #[test]
    fn a_file_follows_the_queued_bytes_then_trailers() {
        let ex = Exchange::new(true);
        let mut st = ex.lock();
        st.start_reply(head(200), true);
        st.push_body(Bytes::from_static(b"a"));
        st.send_file(PathBuf::from("/f"));
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "1".parse().unwrap());
        st.add_trailers(&trailers);
        st.complete_reply();
        assert_eq!(st.known_length(), None);
        assert_eq!(chunk(&mut st), Some((Bytes::from_static(b"a"), false)));
        assert!(
            matches!(st.next_body(&mut false), Next::File(p) if p == std::path::Path::new("/f"))
        );
        assert!(!st.nothing_after_file());
        assert!(matches!(st.next_body(&mut false), Next::End(Some(t)) if t.len() == 1));
    }
}
