//! The response body hyper writes: either bytes known up front, or a stream of what the app
//! sends, read from the exchange as hyper is ready for it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::conn::Activity;
use super::service::HttpContext;
use crate::asgi::bridge::Event;
use crate::asgi::exchange::{Exchange, RESPONSE_LOW_WATER};

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
}

impl Completion {
    /// Made right after the request was admitted (`InFlight::admit`).
    pub fn new(ex: Arc<Exchange>, ctx: Arc<HttpContext>, activity: Arc<Activity>) -> Self {
        Completion {
            ex,
            ctx,
            activity,
            finished: false,
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.ctx.in_flight.done();
        self.activity.request_done();
        if self.finished {
            return;
        }
        let notify = {
            let mut st = self.ex.lock();
            st.gone = true;
            std::mem::take(&mut st.loop_waiting)
        };
        if notify {
            self.ctx.bridge.push(Event::Wake(self.ex.clone()));
        }
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
    let st = c.ex.lock();
    if st.resp_done {
        SizeHint::with_exact(st.resp_buffered as u64)
    } else {
        SizeHint::default()
    }
}

fn poll_stream(
    c: &mut Completion,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
    if c.finished {
        return Poll::Ready(None);
    }
    let mut st = c.ex.lock();
    if let Some(chunk) = st.resp_chunks.pop_front() {
        st.resp_buffered -= chunk.len();
        if st.resp_done && st.resp_chunks.is_empty() {
            c.finished = true;
        }
        let notify = st.loop_waiting && st.resp_buffered < RESPONSE_LOW_WATER;
        if notify {
            st.loop_waiting = false;
        }
        drop(st);
        if notify {
            c.ctx.bridge.push(Event::Wake(c.ex.clone()));
        }
        return Poll::Ready(Some(Ok(Frame::data(chunk))));
    }
    if st.abort {
        return Poll::Ready(Some(Err(Aborted)));
    }
    if st.resp_done {
        c.finished = true;
        return Poll::Ready(None);
    }
    st.io_waker = Some(cx.waker().clone());
    Poll::Pending
}
