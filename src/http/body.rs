//! The response body hyper writes: either bytes known up front, or a stream of what the app
//! sends, read from the exchange as hyper is ready for it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::activity::Activity;
use super::context::HttpContext;
use super::file::FileStream;
use crate::handoff::bridge::Event;
use crate::handoff::exchange::{Exchange, Next};
use crate::log::access::RequestFacts;
use crate::log::{Record, X_REQUEST_ID};

/// The app failed after the response started: hyper must close the connection rather than end
/// the body cleanly, so the client never mistakes a cut response for a complete one.
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response aborted by the application")
    }
}

impl std::error::Error for Aborted {}

/// Tracks the end of one exchange on the I/O side. Dropped by hyper when the response is
/// written or the connection is lost; in the second case the app learns of the disconnect.
///
/// It also holds the request's place under `--limit-concurrency` until then.
pub struct Completion {
    ex: Arc<Exchange>,
    ctx: Arc<HttpContext>,
    activity: Arc<Activity>,
    finished: bool,
    /// The `http.response.pathsend` file being streamed.
    file: Option<FileStream>,
    /// For the access log, when it is on.
    tracked: Option<Box<Tracked>>,
    request_id: Option<HeaderValue>,
    started: Instant,
    status: u16,
    bytes: u64,
    /// The request is a HEAD: the response has no body on the wire.
    head_request: bool,
    /// Body bytes the response head framed, when it framed a length: hyper ends the response
    /// once it wrote them, whether or not the app has sent its last message.
    wire_len: Option<u64>,
    /// Close the connection after this response unless it switches protocols.
    pub close_unless_switching: bool,
}

/// What the access line of this request needs beyond the request head.
struct Tracked {
    facts: RequestFacts,
    response_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Completion {
    /// Made right after the request was admitted (`InFlight::admit`).
    pub fn new(
        ex: Arc<Exchange>,
        ctx: Arc<HttpContext>,
        activity: Arc<Activity>,
        head_request: bool,
    ) -> Self {
        Completion {
            ex,
            ctx,
            activity,
            finished: false,
            file: None,
            tracked: None,
            request_id: None,
            started: Instant::now(),
            status: 0,
            bytes: 0,
            head_request,
            wire_len: None,
            close_unless_switching: false,
        }
    }

    /// Records this request in the access log when it completes.
    pub fn track(&mut self, facts: RequestFacts, request_id: Option<HeaderValue>) {
        self.request_id = request_id;
        self.tracked = Some(Box::new(Tracked {
            facts,
            response_headers: Vec::new(),
        }));
    }

    pub fn echo_request_id(&mut self, id: HeaderValue) {
        self.request_id = Some(id);
    }

    /// The response head is about to go out.
    pub fn responding(&mut self, status: u16, headers: &mut HeaderMap) {
        if self.close_unless_switching && status != 101 {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(id) = self.request_id.take() {
            headers.entry(X_REQUEST_ID).or_insert(id);
        }
        self.status = status;
        self.wire_len = if self.head_request || matches!(status, 100..=199 | 204 | 304) {
            Some(0)
        } else {
            headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        };
        if let (Some(t), Some(access)) = (&mut self.tracked, &self.ctx.access) {
            t.response_headers = access.log.capture_response(headers);
        }
    }

    fn log_access(&mut self) {
        let (Some(t), Some(access)) = (self.tracked.take(), &self.ctx.access) else {
            return;
        };
        let record = Record {
            status: self.status,
            bytes: self.bytes,
            duration: self.started.elapsed(),
            response_headers: t.response_headers,
            request: t.facts,
        };
        let mut line = String::with_capacity(128);
        access.log.format(&record, &mut line);
        access.sink.line(line);
    }
}

impl Completion {
    /// The exchange became a WebSocket (101 sent): its session reports the end from now on.
    pub fn upgraded(mut self) {
        self.finished = true;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.ctx.in_flight.done();
        self.activity.request_done();
        self.ctx.bridge.request_ended();
        if self.status != 0 {
            self.ctx
                .metrics
                .request_done(self.status, self.started.elapsed(), self.bytes);
        }
        let notify = !self.finished && {
            let mut st = self.ex.lock();
            // Complete, or else delivered (the app's late messages, such as the closing empty
            // body Starlette's middleware sends after the bytes, are not a disconnect, and the
            // work after them must run) or gone.
            !st.io_done(self.delivered()) && st.take_loop_waiting()
        };
        if self.status != 0 {
            // The head went out: the client saw a response, complete or cut.
            self.log_access();
        }
        if notify {
            self.ctx.bridge.push(Event::Wake(self.ex.clone()));
        }
    }
}

impl Completion {
    /// hyper has written every body byte the response head framed.
    fn delivered(&self) -> bool {
        self.status != 0 && self.wire_len.is_some_and(|len| self.bytes >= len)
    }
}

pub enum ResponseBody {
    /// A body hyper can write at once (error pages).
    Full(Option<Bytes>),
    /// What the app sends, as it sends it.
    Stream(Completion),
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody::Full(Some(bytes))
    }

    pub fn new(completion: Completion) -> Self {
        ResponseBody::Stream(completion)
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream(c) => poll_stream(c, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Stream(c) => c.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream(c) => stream_size_hint(c),
        }
    }
}

/// When the app already sent its whole body, hyper can frame it with `content-length`.
fn stream_size_hint(c: &Completion) -> SizeHint {
    match c.ex.lock().known_length() {
        Some(len) if c.file.is_none() => SizeHint::with_exact(len),
        _ => SizeHint::default(),
    }
}

fn poll_stream(
    c: &mut Completion,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
    if c.finished {
        return Poll::Ready(None);
    }
    if let Some(file) = &mut c.file {
        match file.poll_chunk(cx, c.activity.files()) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                c.bytes += chunk.len() as u64;
                if file.is_done() {
                    // The last chunk: say so, so that hyper ends the body in the same write.
                    c.file = None;
                    c.finished = c.ex.lock().nothing_after_file();
                }
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::error!(
                    "http.response.pathsend: cannot send {}: {e}; closing the connection",
                    file.path().display()
                );
                c.file = None;
                return Poll::Ready(Some(Err(Aborted)));
            }
            Poll::Ready(None) => c.file = None,
        }
    }
    let mut wake_loop = false;
    let next = {
        let mut st = c.ex.lock();
        let next = st.next_body(&mut wake_loop);
        if let Next::Wait = next {
            st.set_io_waker(cx.waker());
        }
        next
    };
    if wake_loop {
        c.ctx.bridge.push(Event::Wake(c.ex.clone()));
    }
    match next {
        Next::Chunk { data, last } => {
            c.bytes += data.len() as u64;
            c.finished = last;
            Poll::Ready(Some(Ok(Frame::data(data))))
        }
        Next::File(path) => {
            // The app's queued chunks are out: the file is the rest of the body.
            let sendfile = c.activity.files().is_some();
            c.file = Some(FileStream::open(path, sendfile));
            poll_stream(c, cx)
        }
        Next::End(trailers) => {
            c.finished = true;
            Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
        }
        Next::Aborted => Poll::Ready(Some(Err(Aborted))),
        Next::Wait => Poll::Pending,
    }
}
