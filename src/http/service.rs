//! The hyper service: turns each request into an [`Exchange`], hands its head to the loop
//! thread, and waits for the app's response head. Requests refused by a limit never reach
//! the app.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, EXPECT, RETRY_AFTER,
    SEC_WEBSOCKET_VERSION,
};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use parking_lot::Mutex;

use super::activity::Activity;
use super::body::{Completion, ResponseBody};
use super::context::HttpContext;
use super::limits::Refusal;
use super::{ConnInfo, Endpoint, RequestHead};
use crate::handoff::bridge::Event;
use crate::handoff::exchange::{Body, BodyFailure, Exchange, HeadState, ResponseHead};
use crate::log::X_REQUEST_ID;
use crate::ws::handshake::{self, Check};
use crate::ws::session::Start;

#[derive(Clone)]
pub struct AsgiService {
    pub ctx: Arc<HttpContext>,
    pub conn: Arc<ConnInfo>,
    pub activity: Arc<Activity>,
    /// Set when the app accepted a WebSocket: the connection driver runs its session once
    /// hyper has sent the 101 and handed the connection back.
    pub upgrade: Arc<Mutex<Option<Start>>>,
}

impl hyper::service::Service<Request<Incoming>> for AsgiService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        self.handle(req)
    }
}

/// The response to one request. Everything up to handing the head to the loop thread happens
/// in [`AsgiService::handle`], so the common case is a small future that only waits for the
/// app's response head: hyper keeps it in place, with no allocation per request.
pub enum Answer {
    /// Answered without the app (refused, or the health path).
    Ready(Option<Response<ResponseBody>>),
    /// Waiting for the app's `http.response.start`.
    Head(AwaitHead),
    /// A WebSocket handshake, rare enough to be boxed.
    WebSocket(Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>),
}

impl Future for Answer {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Ready(resp) => {
                Poll::Ready(Ok(resp.take().expect("Answer polled after completion")))
            }
            Answer::Head(wait) => wait.poll(cx).map(Ok),
            Answer::WebSocket(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

/// Waits for the app's response head, then turns it into hyper's response.
pub struct AwaitHead {
    ex: Arc<Exchange>,
    /// Taken when the head arrives.
    rest: Option<(AsgiService, Completion)>,
}

impl AwaitHead {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Response<ResponseBody>> {
        let state = self.ex.lock().take_head(cx.waker());
        let answer = match state {
            HeadState::Pending => return Poll::Pending,
            HeadState::Head(head) => Ok(head),
            // The pump logged why.
            HeadState::Refused(failure) => Err(failure),
        };
        let (service, completion) = self.rest.take().expect("AwaitHead polled after completion");
        Poll::Ready(match answer {
            Ok(head) => service.respond(head, completion),
            Err(failure) => reject(failure.status()),
        })
    }
}

impl AsgiService {
    pub(super) fn handle(&self, req: Request<Incoming>) -> Answer {
        if let Some(violation) = self.activity.next_request() {
            return Answer::Ready(Some(self.refuse(violation)));
        }
        let (parts, mut body) = req.into_parts();
        // Ambiguous framing (Transfer-Encoding, Content-Length, Host) never gets this far:
        // the framing check refuses it on the byte stream, ahead of hyper.
        if let Some(refusal) = self.ctx.limits.check_head(&parts) {
            return Answer::Ready(Some(self.refuse(refusal)));
        }
        if let Some(resp) = self.health(&parts) {
            return Answer::Ready(Some(resp));
        }
        if !self.ctx.in_flight.admit(self.ctx.limits.concurrency) {
            let mut resp = self.refuse(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "concurrency limit reached",
            ));
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return Answer::Ready(Some(resp));
        }
        let expect_continue = parts
            .headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));

        let mut parts = parts;
        let upgrade = parts.headers.contains_key(http::header::UPGRADE);
        let request_id = self.ctx.request_id.then(|| request_id(&mut parts.headers));
        let forwarded = self
            .ctx
            .proxies
            .as_ref()
            .and_then(|p| p.resolve(&self.conn.client, &parts.headers));
        let ex = Arc::new(Exchange::new(body.is_end_stream()));
        self.activity.request_started();
        let mut completion = Completion::new(
            ex.clone(),
            self.ctx.clone(),
            self.activity.clone(),
            parts.method == Method::HEAD,
        );
        // While draining, each response closes its connection: clients and proxies holding
        // keep-alive connections open new ones, which a load balancer sends elsewhere.
        completion.close_unless_switching =
            upgrade || parts.method == Method::CONNECT || self.ctx.draining.load(Ordering::Relaxed);
        if let Some(access) = &self.ctx.access {
            let client = forwarded
                .as_ref()
                .and_then(|f| f.client.as_ref())
                .unwrap_or(&self.conn.client);
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let facts = access.log.capture(
                client.describe(),
                client_host(client),
                &parts.method,
                target,
                parts.version,
                &parts.headers,
            );
            completion.track(facts, request_id.clone());
        } else if let Some(id) = request_id {
            completion.echo_request_id(id);
        }
        if upgrade && self.ctx.ws.enabled && handshake::is_upgrade(&parts.headers) {
            let this = self.clone();
            return Answer::WebSocket(Box::pin(this.websocket(parts, ex, completion, forwarded)));
        }
        if !body.is_end_stream() {
            let mut taken = 0;
            // Reading would send `100 Continue`: with it, wait until the app asks for the body.
            if !expect_continue {
                ex.lock().body_wanted_now();
                taken = take_ready_body(&ex, &mut body, self.ctx.limits.body);
                if let Body::Failed(failure) = ex.lock().body() {
                    return Answer::Ready(Some(self.refuse(body_refusal(failure))));
                }
            }
            if ex.lock().body() == Body::Streaming {
                tokio::spawn(pump(
                    ex.clone(),
                    body,
                    self.ctx.clone(),
                    self.conn.clone(),
                    taken,
                ));
            }
        }

        let head = RequestHead::new(parts, self.conn.clone(), forwarded);
        self.ctx.bridge.push(Event::Request(ex.clone(), head));
        Answer::Head(AwaitHead {
            ex,
            rest: Some((self.clone(), completion)),
        })
    }

    /// A WebSocket upgrade request: checked here, then handed to the app, which accepts it
    /// (101, and the connection becomes a WebSocket session) or denies it (any HTTP response,
    /// after which the connection closes).
    async fn websocket(
        self,
        mut parts: http::request::Parts,
        ex: Arc<Exchange>,
        mut completion: Completion,
        forwarded: Option<super::proxy::Forwarded>,
    ) -> Response<ResponseBody> {
        let ws = self.ctx.ws;
        let upgrade = match handshake::check(
            &parts.method,
            parts.version,
            &parts.headers,
            ws.per_message_deflate,
        ) {
            Check::Upgrade(u) => u,
            Check::Reject(status) => {
                let mut resp = self.refuse(Refusal(status, "invalid WebSocket handshake"));
                if status == StatusCode::UPGRADE_REQUIRED {
                    resp.headers_mut()
                        .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
                }
                return resp;
            }
            Check::NotUpgrade => return reject(StatusCode::BAD_REQUEST),
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return reject(StatusCode::BAD_REQUEST);
        };
        ex.lock().ws.max_queue = ws.max_queue;
        let head = RequestHead::new(parts, self.conn.clone(), forwarded);
        self.ctx.bridge.push(Event::WebSocket(ex.clone(), head));
        let head = poll_fn(|cx| {
            match ex.lock().take_head(cx.waker()) {
                HeadState::Head(head) => Poll::Ready(head),
                // A WebSocket handshake has no body to fail.
                HeadState::Pending | HeadState::Refused(_) => Poll::Pending,
            }
        })
        .await;
        if head.status != 101 {
            return self.respond(head, completion);
        }
        let mut headers = HeaderMap::new();
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, upgrade.accept);
        if let Some(params) = &upgrade.deflate {
            if let Ok(v) = HeaderValue::from_str(&params.response_header()) {
                headers.insert(http::header::SEC_WEBSOCKET_EXTENSIONS, v);
            }
        }
        for (name, value) in &head.headers {
            headers.append(name.clone(), value.clone());
        }
        add_default_headers(&self.ctx.default_headers, &mut headers);
        completion.responding(101, &mut headers);
        completion.upgraded();
        *self.upgrade.lock() = Some(Start {
            ex,
            on_upgrade,
            deflate: upgrade.deflate,
        });
        let mut resp = Response::new(ResponseBody::Full(None));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *resp.headers_mut() = headers;
        resp
    }

    fn respond(&self, head: ResponseHead, mut completion: Completion) -> Response<ResponseBody> {
        let mut headers = head.headers;
        add_default_headers(&self.ctx.default_headers, &mut headers);
        completion.responding(head.status, &mut headers);
        let mut resp = Response::new(ResponseBody::new(completion));
        *resp.status_mut() =
            StatusCode::from_u16(head.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *resp.headers_mut() = headers;
        resp
    }

    /// The answer to a request for `--health-path`, made here without the app: 200 `ok`
    /// while the server serves, 503 once it is draining. Not a request of the app: it is not
    /// counted against `--limit-concurrency`, not logged, and gets no request id.
    fn health(&self, parts: &Parts) -> Option<Response<ResponseBody>> {
        let path = self.ctx.health_path.as_deref()?;
        if parts.uri.path() != path {
            return None;
        }
        // Keeps the connection's keep-alive timer right, as for any request.
        self.activity.request_started();
        self.activity.request_done();
        let (status, text) = if parts.method != Method::GET && parts.method != Method::HEAD {
            (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        } else if self.ctx.draining.load(Ordering::Relaxed) {
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        } else {
            (StatusCode::OK, "ok\n")
        };
        let mut resp = Response::new(ResponseBody::full(Bytes::from_static(text.as_bytes())));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        if may_switch(parts) {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        add_default_headers(&self.ctx.default_headers, headers);
        Some(resp)
    }

    pub(super) fn refuse(&self, refusal: Refusal) -> Response<ResponseBody> {
        self.ctx.log_refusal(refusal, &self.conn.client);
        reject(refusal.0)
    }
}

/// An upgrade or CONNECT request: the framing check holds back what follows it (the
/// protocol it may switch to), so unless it switches, its response closes the connection
/// (`AsgiService::handle` tests the same with the `upgrade` it already has).
fn may_switch(parts: &Parts) -> bool {
    parts.headers.contains_key(http::header::UPGRADE) || parts.method == Method::CONNECT
}

/// Adds each default header (`server`, `--header`) whose name the response does not set.
fn add_default_headers(defaults: &HeaderMap, headers: &mut HeaderMap) {
    for (name, value) in defaults {
        if let http::header::Entry::Vacant(slot) = headers.entry(name) {
            slot.insert(value.clone());
        }
    }
}

/// The request's `x-request-id`: the client's when it sent one, otherwise a new one added to
/// the headers the app sees.
fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    headers
        .entry(X_REQUEST_ID)
        .or_insert_with(crate::log::new_request_id)
        .clone()
}

fn client_host(client: &Endpoint) -> String {
    match client {
        Endpoint::Tcp(host, _) => host.to_string(),
        _ => "-".into(),
    }
}

fn body_refusal(failure: BodyFailure) -> Refusal {
    Refusal(failure.status(), failure.reason())
}

/// Moves the body bytes hyper already holds into the exchange, so that a small request body
/// reaches the app with its head and `receive()` need not wait. Returns the bytes taken.
///
/// It never waits: a frame that is not there yet is left to the pump, whose own polls
/// replace the no-op waker registered here.
fn take_ready_body(ex: &Exchange, body: &mut Incoming, limit: Option<u64>) -> u64 {
    let mut cx = Context::from_waker(Waker::noop());
    let mut taken = 0;
    loop {
        let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(&mut cx) else {
            return taken;
        };
        let mut st = ex.lock();
        match frame {
            None => {
                st.request_body_complete();
                return taken;
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    taken += data.len() as u64;
                    if limit.is_some_and(|l| taken > l) {
                        st.fail_body(BodyFailure::TooLarge);
                        return taken;
                    }
                    st.push_request_body(data);
                }
                if st.request_buffer_full() {
                    return taken;
                }
            }
            Some(Err(_)) => {
                st.fail_body(BodyFailure::Malformed);
                return taken;
            }
        }
    }
}

/// Reads the request body while the app wants it, never more than [`REQUEST_READ_AHEAD`] bytes
/// ahead of what the app has taken, and fails it when it breaks a limit.
async fn pump(
    ex: Arc<Exchange>,
    mut body: Incoming,
    ctx: Arc<HttpContext>,
    conn: Arc<ConnInfo>,
    mut total: u64,
) {
    loop {
        let go = poll_fn(|cx| match ex.lock().pump_may_read(cx.waker()) {
            None => Poll::Ready(false),
            Some(true) => Poll::Ready(true),
            Some(false) => Poll::Pending,
        })
        .await;
        if !go {
            return;
        }
        let read = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let (done, failed) = match tokio::time::timeout(ctx.limits.body_read, read).await {
            Err(_) => (true, Some(BodyFailure::Stalled)),
            Ok(None) => (true, None),
            // A malformed or cut body: the app must see a disconnect, never a short body.
            Ok(Some(Err(_))) => (true, Some(BodyFailure::Malformed)),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    total += data.len() as u64;
                    if ctx.limits.body.is_some_and(|l| total > l) {
                        (true, Some(BodyFailure::TooLarge))
                    } else {
                        ex.lock().push_request_body(data);
                        (false, None)
                    }
                }
                Err(_) => (false, None),
            },
        };
        let mut st = ex.lock();
        match failed {
            Some(failure) => st.fail_body(failure),
            None if done => st.request_body_complete(),
            None => {}
        }
        let notify = st.take_loop_waiting();
        // The service may wait for a head that a failed body replaces with its refusal.
        let head_waiter = if done { st.take_io_waker() } else { None };
        drop(st);
        if let Some(failure) = failed {
            ctx.log_refusal(body_refusal(failure), &conn.client);
        }
        if notify {
            ctx.bridge.push(Event::Wake(ex.clone()));
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
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
