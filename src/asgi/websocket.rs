//! `WebSocketCycle`: the `receive` and `send` callables of one WebSocket, on the loop thread.
//!
//! Before the app accepts, it may deny the connection with a plain HTTP response (`close` gives
//! a 403, the `websocket.http.response` extension any response): those go through the
//! exchange's HTTP response fields and are streamed by the HTTP side like any other response.
//! `websocket.accept` is a 101 head; after it, messages go through the exchange's `ws` queues.

use std::sync::Arc;

use bytes::Bytes;
use http::header::SEC_WEBSOCKET_PROTOCOL;
use http::{HeaderMap, HeaderValue};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use super::context::LoopContext;
use super::message::{
    body_bytes, body_field, disconnected, field, flag, headers_field, message_type, status_field,
};
use crate::asgi::link::{self, Link, Protocol};
use crate::handoff::exchange::{
    Exchange, ResponseHead, State as ExchangeState, RESPONSE_HIGH_WATER,
};
use crate::handoff::ws::{Message, Outgoing};
use crate::ws::close_code;

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum State {
    /// Neither accepted nor denied yet.
    Handshake,
    Accepted,
    /// The app sent `websocket.close` after accepting.
    Closed,
    /// A denial response started (`websocket.http.response.start`); its body follows.
    Denying,
    /// The denial response is complete (or `close` before accepting sent a 403).
    Denied,
}

#[pyclass(module = "rsgi._rsgi")]
pub struct WebSocketCycle {
    link: Link,
    state: State,
    connect_delivered: bool,
}

impl WebSocketCycle {
    pub fn new(ex: Arc<Exchange>, ctx: Arc<LoopContext>) -> Self {
        WebSocketCycle {
            link: Link::new(ex, ctx),
            state: State::Handshake,
            connect_delivered: false,
        }
    }

    /// Called by the loop thread when the I/O side reported a change.
    pub fn on_wake(&mut self, py: Python<'_>) -> PyResult<()> {
        link::on_wake(self, py)
    }

    fn unexpected(&self, kind: &str) -> PyErr {
        let text = match self.state {
            State::Handshake => format!(
                "Expected ASGI message 'websocket.accept', 'websocket.close', or \
                 'websocket.http.response.start' but got '{kind}'."
            ),
            State::Accepted => format!(
                "Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'."
            ),
            State::Denying => {
                format!("Expected ASGI message 'websocket.http.response.body', but got '{kind}'.")
            }
            State::Closed | State::Denied => format!(
                "Unexpected ASGI message '{kind}', after sending 'websocket.close' or \
                 response already completed."
            ),
        };
        PyRuntimeError::new_err(text)
    }

    fn accept(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut headers = headers_field(message, intern!(py, "headers"))?;
        if let Some(sub) = field(message, intern!(py, "subprotocol"))? {
            if !sub.is_none() {
                let sub = sub.cast::<PyString>()?.to_str()?;
                let value = HeaderValue::from_str(sub)
                    .map_err(|_| PyValueError::new_err(format!("Invalid subprotocol {sub:?}.")))?;
                headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
            }
        }
        let mut st = self.link.lock_open()?;
        st.start_reply(
            ResponseHead {
                status: 101,
                headers,
            },
            false,
        );
        self.state = State::Accepted;
        self.link.notify_io(&mut st);
        Ok(())
    }

    fn send_data(
        &mut self,
        py: Python<'_>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let out = match field(message, intern!(py, "bytes"))? {
            Some(b) if !b.is_none() => Outgoing::Binary(body_bytes(&b)?),
            _ => match field(message, intern!(py, "text"))? {
                Some(t) if !t.is_none() => {
                    let s = t.cast::<PyString>().map_err(|_| {
                        PyTypeError::new_err("'text' in 'websocket.send' must be a str")
                    })?;
                    Outgoing::Text(Bytes::copy_from_slice(s.to_str()?.as_bytes()))
                }
                _ => {
                    return Err(PyTypeError::new_err(
                        "Expected 'bytes' or 'text' in 'websocket.send' message.",
                    ))
                }
            },
        };
        let mut st = self.link.ex.lock();
        if st.cut_off() || st.ws.closed.is_some() {
            return Err(disconnected());
        }
        st.ws.out_bytes += out.len();
        st.ws.outgoing.push_back(out);
        self.link.notify_io(&mut st);
        if st.ws.out_bytes > RESPONSE_HIGH_WATER {
            st.wait_for_io();
            drop(st);
            return self.link.wait_drain(py).map(Some);
        }
        Ok(None)
    }

    fn close(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.state == State::Handshake {
            self.deny(403, HeaderMap::new(), Bytes::new());
            return Ok(());
        }
        let code: u16 = match field(message, intern!(py, "code"))? {
            Some(c) if !c.is_none() => c
                .extract()
                .ok()
                .filter(|c| close_code::is_valid(*c))
                .ok_or_else(|| PyValueError::new_err(format!("Invalid close code {c}.")))?,
            _ => close_code::NORMAL,
        };
        let reason = match field(message, intern!(py, "reason"))? {
            Some(r) if !r.is_none() => r.cast::<PyString>()?.to_str()?.to_owned(),
            _ => String::new(),
        };
        let mut st = self.link.ex.lock();
        if st.cut_off() || st.ws.closed.is_some() {
            self.state = State::Closed;
            return Err(disconnected());
        }
        st.ws.outgoing.push_back(Outgoing::Close(code, reason));
        self.state = State::Closed;
        self.link.notify_io(&mut st);
        Ok(())
    }

    /// A complete denial response the server makes (403 for `close`, 500 when the app
    /// fails), typed as uvicorn types it.
    fn deny(&mut self, status: u16, mut headers: HeaderMap, body: Bytes) {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let mut st = self.link.ex.lock();
        st.respond(status, headers, body);
        self.state = State::Denied;
        self.link.notify_io(&mut st);
    }

    fn response_start(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        // 101 would be an accept, which has its own message.
        let status = status_field(message, "websocket.http.response.start", |s| s != 101)?;
        let headers = headers_field(message, intern!(py, "headers"))?;
        let mut st = self.link.lock_open()?;
        st.start_reply(ResponseHead { status, headers }, false);
        self.state = State::Denying;
        self.link.notify_io(&mut st);
        Ok(())
    }

    fn response_body(
        &mut self,
        py: Python<'_>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let chunk = body_field(message)?;
        let more = flag(message, intern!(py, "more_body"))?;
        let mut st = self.link.lock_open()?;
        st.push_body(chunk);
        if !more {
            st.complete_reply();
            self.state = State::Denied;
        }
        self.link.notify_io(&mut st);
        if st.unsent() > RESPONSE_HIGH_WATER {
            st.wait_for_io();
            drop(st);
            return self.link.wait_drain(py).map(Some);
        }
        Ok(None)
    }
}

impl Protocol for WebSocketCycle {
    fn link(&self) -> &Link {
        &self.link
    }

    fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }

    fn try_receive<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        if !self.connect_delivered {
            self.connect_delivered = true;
            let d = PyDict::new(py);
            d.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
            return Ok(Some(d));
        }
        let mut st = self.link.ex.lock();
        if let Some(msg) = st.ws.incoming.pop_front() {
            if st.ws.read_paused && st.ws.incoming.len() <= st.ws.max_queue / 2 {
                st.ws.read_paused = false;
                self.link.notify_io(&mut st);
            }
            drop(st);
            return Ok(Some(receive_message(py, msg)?));
        }
        if let Some(info) = &st.ws.closed {
            let (code, reason) = (info.code, info.reason.clone());
            drop(st);
            return Ok(Some(disconnect(py, code, &reason)?));
        }
        let over = match self.state {
            State::Handshake => st.cut_off(),
            State::Denying | State::Denied => true,
            State::Accepted | State::Closed => false,
        };
        if over {
            drop(st);
            return Ok(Some(disconnect(py, close_code::ABNORMAL, "")?));
        }
        st.wait_for_io();
        Ok(None)
    }

    fn unsent(&self, st: &ExchangeState) -> Option<usize> {
        if st.cut_off() || st.ws.closed.is_some() {
            return None;
        }
        Some(match self.state {
            State::Denying | State::Denied => st.unsent(),
            _ => st.ws.out_bytes,
        })
    }
}

#[pymethods]
impl WebSocketCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        link::receive(self, py)
    }

    fn send(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let kind = message_type(message)?;
        match (kind.to_str()?, self.state) {
            ("websocket.send", State::Accepted) => {
                if let Some(fut) = self.send_data(py, message)? {
                    return Ok(fut);
                }
            }
            ("websocket.accept", State::Handshake) => self.accept(py, message)?,
            ("websocket.close", State::Handshake | State::Accepted) => self.close(py, message)?,
            ("websocket.http.response.start", State::Handshake) => {
                self.response_start(py, message)?
            }
            ("websocket.http.response.body", State::Denying) => {
                if let Some(fut) = self.response_body(py, message)? {
                    return Ok(fut);
                }
            }
            (kind, _) => return Err(self.unexpected(kind)),
        }
        Ok(self.link.ctx.ready(py))
    }

    /// Called once the app's coroutine has ended; `failed` when it raised.
    pub fn finish(&mut self, failed: bool) -> Option<&'static str> {
        let mut complaint = None;
        match self.state {
            State::Handshake => {
                if !failed {
                    complaint = Some("ASGI callable returned without sending handshake.");
                }
                if !self.link.ex.lock().cut_off() {
                    let mut headers = HeaderMap::new();
                    headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    self.deny(500, headers, Bytes::from_static(b"Internal Server Error"));
                }
            }
            State::Accepted => {
                let mut st = self.link.ex.lock();
                if !st.cut_off() && st.ws.closed.is_none() {
                    let code = if failed {
                        close_code::INTERNAL_ERROR
                    } else {
                        close_code::NORMAL
                    };
                    st.ws
                        .outgoing
                        .push_back(Outgoing::Close(code, String::new()));
                    self.link.notify_io(&mut st);
                }
                self.state = State::Closed;
            }
            State::Denying => {
                if !failed {
                    complaint = Some("ASGI callable returned without completing response.");
                }
                let mut st = self.link.ex.lock();
                st.abort_reply();
                self.link.notify_io(&mut st);
            }
            State::Closed | State::Denied => {}
        }
        self.link.release();
        complaint
    }
}

fn receive_message(py: Python<'_>, msg: Message) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
    match msg {
        Message::Text(t) => d.set_item(intern!(py, "text"), PyString::new(py, t.as_str()))?,
        Message::Binary(b) => d.set_item(intern!(py, "bytes"), PyBytes::new(py, &b))?,
    }
    Ok(d)
}

fn disconnect<'py>(py: Python<'py>, code: u16, reason: &str) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
    d.set_item(intern!(py, "code"), code)?;
    d.set_item(intern!(py, "reason"), reason)?;
    Ok(d)
}
