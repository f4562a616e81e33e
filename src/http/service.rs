//! The hyper service: turns each request into an [`Exchange`], hands its head to the loop
//! thread, and waits for the app's response head.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, EXPECT};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

use super::body::{Completion, ResponseBody};
use super::conn::Activity;
use super::validate::check_head;
use super::{ConnInfo, RequestHead};
use crate::asgi::bridge::{Bridge, Event};
use crate::asgi::exchange::{Exchange, ResponseHead, REQUEST_READ_AHEAD};

/// What every connection of a server shares.
pub struct HttpContext {
    pub bridge: Arc<Bridge>,
    /// `server` and `--header` defaults, added to responses that do not set them.
    pub default_headers: HeaderMap,
    pub http1: hyper::server::conn::http1::Builder,
    pub timeouts: super::conn::Timeouts,
    /// TLS termination, when `--ssl-certfile` is set.
    pub tls: Option<crate::tls::Tls>,
}

#[derive(Clone)]
pub struct AsgiService {
    pub ctx: Arc<HttpContext>,
    pub conn: Arc<ConnInfo>,
    pub activity: Arc<Activity>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for AsgiService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

impl AsgiService {
    async fn handle(self, req: Request<Incoming>) -> Response<ResponseBody> {
        let (parts, mut body) = req.into_parts();
        if let Some(status) = check_head(parts.version, &parts.headers) {
            return reject(status);
        }
        let expect_continue = parts
            .headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));

        let ex = Arc::new(Exchange::new(body.is_end_stream()));
        self.activity.request_started();
        let completion =
            Completion::new(ex.clone(), self.ctx.bridge.clone(), self.activity.clone());
        if !body.is_end_stream() {
            if expect_continue {
                // Reading would send `100 Continue`; wait until the app asks for the body.
            } else {
                ex.lock().req_wanted = true;
                take_ready_body(&ex, &mut body).await;
                if ex.lock().req_failed {
                    return reject(StatusCode::BAD_REQUEST);
                }
            }
            if !ex.lock().req_done {
                tokio::spawn(pump(ex.clone(), body, self.ctx.bridge.clone()));
            }
        }

        let head = RequestHead {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            conn: self.conn.clone(),
        };
        self.ctx
            .bridge
            .push(Event::Request(ex.clone(), Box::new(head)));

        let head = poll_fn(|cx| {
            let mut st = ex.lock();
            if st.req_failed {
                return Poll::Ready(None);
            }
            match st.head.take() {
                Some(head) => Poll::Ready(Some(head)),
                None => {
                    st.io_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        match head {
            Some(head) => self.respond(head, completion),
            None => reject(StatusCode::BAD_REQUEST),
        }
    }

    fn respond(&self, head: ResponseHead, completion: Completion) -> Response<ResponseBody> {
        let body = ResponseBody::new(completion);
        let mut resp = Response::new(body);
        *resp.status_mut() =
            StatusCode::from_u16(head.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = head.headers;
        for (name, value) in &self.ctx.default_headers {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        *resp.headers_mut() = headers;
        resp
    }
}

/// Moves the body bytes hyper already holds into the exchange, so that a small request body
/// reaches the app with its head and `receive()` need not wait.
async fn take_ready_body(ex: &Exchange, body: &mut Incoming) {
    loop {
        let frame = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(Some(f)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        let mut st = ex.lock();
        match frame {
            None => return,
            Some(None) => {
                st.req_done = true;
                return;
            }
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    push_chunk(&mut st, data);
                }
                if st.req_buffered >= REQUEST_READ_AHEAD {
                    return;
                }
            }
            Some(Some(Err(_))) => {
                st.req_failed = true;
                st.gone = true;
                return;
            }
        }
    }
}

fn push_chunk(st: &mut crate::asgi::exchange::Inner, data: Bytes) {
    if !data.is_empty() {
        st.req_buffered += data.len();
        st.req_chunks.push_back(data);
    }
}

/// Reads the request body while the app wants it, never more than [`REQUEST_READ_AHEAD`] bytes
/// ahead of what the app has taken.
async fn pump(ex: Arc<Exchange>, mut body: Incoming, bridge: Arc<Bridge>) {
    loop {
        let go = poll_fn(|cx| {
            let mut st = ex.lock();
            if st.gone {
                Poll::Ready(false)
            } else if st.req_wanted && st.req_buffered < REQUEST_READ_AHEAD {
                Poll::Ready(true)
            } else {
                st.pump_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if !go {
            return;
        }
        let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let mut st = ex.lock();
        let done = match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    push_chunk(&mut st, data);
                }
                false
            }
            None => {
                st.req_done = true;
                true
            }
            Some(Err(_)) => {
                // A malformed or cut body: the app must see a disconnect, never a short body.
                st.req_failed = true;
                st.gone = true;
                true
            }
        };
        let notify = std::mem::take(&mut st.loop_waiting);
        let head_waiter = if done { st.io_waker.take() } else { None };
        drop(st);
        if notify {
            bridge.push(Event::Wake(ex.clone()));
        }
        if let Some(w) = head_waiter {
            w.wake();
        }
        if done {
            return;
        }
    }
}

/// An error response that closes the connection; the request never reaches the app.
pub fn reject(status: StatusCode) -> Response<ResponseBody> {
    let text = status.canonical_reason().unwrap_or("Error");
    let mut resp = Response::new(ResponseBody::full(Bytes::from(text.to_owned())));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
