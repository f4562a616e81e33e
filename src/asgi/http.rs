//! `HttpCycle`: the object behind the `receive` and `send` callables of one HTTP request.
//! It lives on the loop thread only, and talks to the I/O side through its [`Exchange`].

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::context::LoopContext;
use super::link::{self, Link, Protocol};
use super::message::{
    bytes_from_chunks, disconnected, field, flag, headers_field, message_type, status_field,
    type_name,
};
use crate::handoff::exchange::{Body, Exchange, ResponseHead, State, RESPONSE_HIGH_WATER};

const UNDECLARED_TRAILERS: &str =
    "Response announces trailers but has no 'Trailer' header naming them: they will not be sent.";

#[derive(PartialEq, Eq, Clone, Copy)]
enum Response {
    NotStarted,
    Started,
    /// The body is complete; the announced `http.response.trailers` are still to come.
    Trailers,
    Complete,
}

#[pyclass(module = "rsgi._rsgi")]
pub struct HttpCycle {
    link: Link,
    response: Response,
    /// `http.response.start` announced trailers.
    trailers: bool,
    /// The response is an event stream (`text/event-stream`): endless by design, so a
    /// shutdown ends it rather than wait for it (clients reconnect elsewhere).
    endless: bool,
    /// The request is a HEAD: the body the app sends is not written.
    head_request: bool,
    /// Body bytes the app still owes its `content-length` (None: no length to keep).
    owed: Option<u64>,
    /// The last `http.request` message (`more_body` false) was delivered.
    request_complete: bool,
}

impl HttpCycle {
    pub fn new(ex: Arc<Exchange>, ctx: Arc<LoopContext>, head_request: bool) -> Self {
        HttpCycle {
            link: Link::new(ex, ctx),
            response: Response::NotStarted,
            trailers: false,
            endless: false,
            head_request,
            owed: None,
            request_complete: false,
        }
    }

    /// Called by the loop thread when the I/O side reported a change.
    pub fn on_wake(&mut self, py: Python<'_>) -> PyResult<()> {
        link::on_wake(self, py)
    }

    fn start(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.response != Response::NotStarted {
            return Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'http.response.start' sent, after response already started.",
            ));
        }
        let status = status_field(message, "http.response.start", |_| true)?;
        let headers = headers_field(message, intern!(py, "headers"))?;
        let trailers = flag(message, intern!(py, "trailers"))?;
        if trailers && !headers.contains_key(http::header::TRAILER) {
            // hyper writes only the trailer fields that the `Trailer` header names.
            self.link.ctx.error_log.call_method1(
                py,
                intern!(py, "warning"),
                (UNDECLARED_TRAILERS,),
            )?;
        }
        self.endless = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if !self.head_request && !matches!(status, 100..=199 | 204 | 304) {
            self.owed = headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
        }
        let mut st = self.link.lock_open()?;
        self.trailers = trailers;
        st.start_reply(ResponseHead { status, headers }, trailers);
        self.response = Response::Started;
        if self.endless && self.link.ctx.stopping() {
            st.end_stream();
        }
        self.link.notify_io(&mut st);
        Ok(())
    }

    /// The server is shutting down: an event stream ends now, after what the app queued, and
    /// its app sees a disconnect. Any other response goes on (up to the graceful timeout).
    pub fn on_shutdown(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.endless || self.response != Response::Started {
            return Ok(());
        }
        let mut st = self.link.ex.lock();
        st.end_stream();
        self.link.notify_io(&mut st);
        drop(st);
        self.on_wake(py)
    }

    /// Queues a body chunk; returns a future when the app must wait for the socket to drain.
    fn body(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        self.expect_body("http.response.body")?;
        let chunk = match field(message, intern!(py, "body"))? {
            Some(b) if !b.is_none() => self.link.ctx.body(&b)?,
            _ => Bytes::new(),
        };
        let more = flag(message, intern!(py, "more_body"))?;
        self.keep_length(chunk.len(), more)?;
        let mut st = self.link.lock_open()?;
        st.push_body(chunk);
        if !more {
            self.response = body_complete(self.trailers, &mut st);
        }
        self.link.notify_io(&mut st);
        // The last message never waits: the app has nothing more to hold back.
        if more && st.unsent() > RESPONSE_HIGH_WATER {
            st.wait_for_io();
            drop(st);
            return self.link.wait_drain(py).map(Some);
        }
        drop(st);
        if !more {
            // A pending receive() learns that the exchange is over.
            self.on_wake(py)?;
        }
        Ok(None)
    }

    /// The body must match the `content-length` the app declared, as under uvicorn: a
    /// mismatch is the app's error, never a response silently cut or padded by the framing.
    fn keep_length(&mut self, len: usize, more: bool) -> PyResult<()> {
        let Some(owed) = self.owed.as_mut() else {
            return Ok(());
        };
        let len = len as u64;
        if len > *owed {
            return Err(PyRuntimeError::new_err(
                "Response content longer than Content-Length",
            ));
        }
        *owed -= len;
        if !more && *owed != 0 {
            return Err(PyRuntimeError::new_err(
                "Response content shorter than Content-Length",
            ));
        }
        Ok(())
    }

    /// `http.response.pathsend`: the I/O thread streams the file at `path` as the rest of the
    /// body. A file that cannot be read then closes the connection (the head is already out).
    fn pathsend(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        self.expect_body("http.response.pathsend")?;
        let path = field(message, intern!(py, "path"))?.ok_or_else(|| {
            PyTypeError::new_err("'http.response.pathsend' message has no 'path'")
        })?;
        let path: PathBuf = path.extract().map_err(|_| {
            PyTypeError::new_err(format!("'path' must be a string, got {}", type_name(&path)))
        })?;
        let mut st = self.link.lock_open()?;
        st.send_file(path);
        self.response = body_complete(self.trailers, &mut st);
        self.link.notify_io(&mut st);
        drop(st);
        self.on_wake(py)
    }

    /// `http.response.trailers`: fields sent after the body, when the start announced them.
    fn trailers(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.response {
            Response::Trailers => {}
            Response::Started if self.trailers => {
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.trailers' sent, before the response body completed.",
                ))
            }
            Response::Complete => {
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.trailers' sent, after response already completed.",
                ))
            }
            _ => {
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.trailers' sent, without 'trailers' set in 'http.response.start'.",
                ))
            }
        }
        let fields = headers_field(message, intern!(py, "headers"))?;
        let more = flag(message, intern!(py, "more_trailers"))?;
        let mut st = self.link.lock_open()?;
        st.add_trailers(&fields);
        if more {
            return Ok(());
        }
        st.complete_reply();
        self.response = Response::Complete;
        self.link.notify_io(&mut st);
        drop(st);
        self.on_wake(py)
    }

    /// The body (or file) may be sent: the response started and its body is not complete.
    fn expect_body(&self, kind: &str) -> PyResult<()> {
        match self.response {
            Response::Started => Ok(()),
            Response::NotStarted => Err(PyRuntimeError::new_err(format!(
                "Expected ASGI message 'http.response.start', but got '{kind}'."
            ))),
            Response::Trailers | Response::Complete => Err(PyRuntimeError::new_err(format!(
                "Unexpected ASGI message '{kind}' sent, after response already completed."
            ))),
        }
    }

    /// Answers 500 when nothing was sent yet, or cuts the connection when a response started.
    fn fail(&mut self) {
        let mut st = self.link.ex.lock();
        match self.response {
            Response::NotStarted => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                st.respond(500, headers, Bytes::from_static(b"Internal Server Error"));
                self.response = Response::Complete;
            }
            Response::Started | Response::Trailers => st.abort_reply(),
            Response::Complete => return,
        }
        self.link.notify_io(&mut st);
    }
}

impl Protocol for HttpCycle {
    fn link(&self) -> &Link {
        &self.link
    }

    fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }

    fn try_receive<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let mut st = self.link.ex.lock();
        if self.request_complete {
            if st.cut_off() || self.response == Response::Complete {
                return Ok(Some(disconnect(py)?));
            }
            st.wait_for_io();
            return Ok(None);
        }
        if let Some((total, more)) = st.request_body_ready() {
            let body = bytes_from_chunks(py, total, st.drain_request_body(total))?;
            self.request_complete = !more;
            if st.pump_wants_waking() {
                self.link.notify_io(&mut st);
            }
            return Ok(Some(http_request(py, body.into_any(), more)?));
        }
        if st.cut_off() {
            return Ok(Some(disconnect(py)?));
        }
        if st.body() == Body::Complete {
            self.request_complete = true;
            return Ok(Some(http_request(
                py,
                PyBytes::new(py, b"").into_any(),
                false,
            )?));
        }
        if st.want_body() {
            self.link.notify_io(&mut st);
        }
        st.wait_for_io();
        Ok(None)
    }

    fn unsent(&self, st: &State) -> Option<usize> {
        (!st.cut_off()).then_some(st.unsent())
    }
}

#[pymethods]
impl HttpCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        link::receive(self, py)
    }

    fn send(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match self.dispatch(py, message) {
            // Once the client has gone, every send() says so, whatever the message: an app
            // that answers a disconnect with an error page must learn of the disconnect, not
            // of a protocol error.
            Err(_) if self.link.ex.lock().cut_off() => Err(disconnected()),
            result => result,
        }
    }
}

impl HttpCycle {
    /// Called once the app's coroutine has ended; `failed` when it raised.
    pub fn finish(&mut self, failed: bool) -> Option<&'static str> {
        let complaint = match (self.response, failed) {
            (Response::NotStarted, false) => {
                Some("ASGI callable returned without starting response.")
            }
            (Response::Started | Response::Trailers, false) => {
                Some("ASGI callable returned without completing response.")
            }
            _ => None,
        }
        // An app whose client has gone has nobody left to answer.
        .filter(|_| !self.link.ex.lock().cut_off());
        self.fail();
        self.link.release();
        complaint
    }

    fn dispatch(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let kind = message_type(message)?;
        match kind.to_str()? {
            "http.response.body" => {
                if let Some(fut) = self.body(py, message)? {
                    return Ok(fut);
                }
            }
            "http.response.start" => self.start(py, message)?,
            "http.response.pathsend" => self.pathsend(py, message)?,
            "http.response.trailers" => self.trailers(py, message)?,
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{other}' sent."
                )))
            }
        }
        Ok(self.link.ctx.ready(py))
    }
}

/// The last body message or the file was sent: the response is complete unless trailers were
/// announced. Returns the response's new state.
fn body_complete(trailers: bool, st: &mut State) -> Response {
    if trailers {
        Response::Trailers
    } else {
        st.complete_reply();
        Response::Complete
    }
}

fn http_request<'py>(
    py: Python<'py>,
    body: Bound<'py, PyAny>,
    more: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
    d.set_item(intern!(py, "body"), body)?;
    d.set_item(intern!(py, "more_body"), more)?;
    Ok(d)
}

fn disconnect(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(d)
}
