//! `HttpCycle`: the object behind the `receive` and `send` callables of one HTTP request.
//! It lives on the loop thread only, and talks to the I/O side through its [`Exchange`].

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use super::exchange::{Exchange, ResponseHead, NO_SLOT, RESPONSE_HIGH_WATER, RESPONSE_LOW_WATER};
use crate::server::LoopContext;

pyo3::create_exception!(
    rsgi._rsgi,
    ClientDisconnected,
    pyo3::exceptions::PyOSError,
    "The client closed the connection; raised by send() after a disconnect."
);

#[derive(PartialEq, Eq, Clone, Copy)]
enum Response {
    NotStarted,
    Started,
    Complete,
}

#[pyclass(module = "rsgi._rsgi", unsendable)]
pub struct HttpCycle {
    ex: Arc<Exchange>,
    ctx: std::rc::Rc<LoopContext>,
    response: Response,
    /// The last `http.request` message (`more_body` false) was delivered.
    request_complete: bool,
    recv_waiter: Option<Py<PyAny>>,
    drain_waiter: Option<Py<PyAny>>,
}

impl HttpCycle {
    pub fn new(ex: Arc<Exchange>, ctx: std::rc::Rc<LoopContext>) -> Self {
        HttpCycle {
            ex,
            ctx,
            response: Response::NotStarted,
            request_complete: false,
            recv_waiter: None,
            drain_waiter: None,
        }
    }

    /// Wakes the I/O side for this exchange, batched with every other send of this loop turn.
    fn notify_io(&self, st: &mut super::exchange::Inner) {
        if !st.io_queued {
            st.io_queued = true;
            self.ctx.queue_io(&self.ex);
        }
    }

    /// The next `receive()` message if one is ready; otherwise arms a wake-up and returns None.
    fn try_receive<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let mut st = self.ex.lock();
        if self.request_complete {
            if st.gone || self.response == Response::Complete {
                return Ok(Some(disconnect(py)?));
            }
            st.loop_waiting = true;
            return Ok(None);
        }
        if !st.req_chunks.is_empty() {
            let total = st.req_buffered;
            let body = PyBytes::new_with(py, total, |buf| {
                let mut at = 0;
                for chunk in st.req_chunks.drain(..) {
                    buf[at..at + chunk.len()].copy_from_slice(&chunk);
                    at += chunk.len();
                }
                Ok(())
            })?;
            st.req_buffered = 0;
            let more = !st.req_done;
            self.request_complete = !more;
            if st.pump_waker.is_some() {
                self.notify_io(&mut st);
            }
            return Ok(Some(http_request(py, body.into_any(), more)?));
        }
        if st.gone {
            return Ok(Some(disconnect(py)?));
        }
        if st.req_done {
            self.request_complete = true;
            return Ok(Some(http_request(
                py,
                PyBytes::new(py, b"").into_any(),
                false,
            )?));
        }
        if !st.req_wanted {
            st.req_wanted = true;
            self.notify_io(&mut st);
        }
        st.loop_waiting = true;
        Ok(None)
    }

    /// Called by the loop thread when the I/O side reported a change.
    pub fn on_wake(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(fut) = self.recv_waiter.take() {
            match self.try_receive(py)? {
                Some(msg) => resolve(py, &fut, msg.into_any())?,
                None => self.recv_waiter = Some(fut),
            }
        }
        if let Some(fut) = self.drain_waiter.take() {
            let mut st = self.ex.lock();
            if st.gone {
                drop(st);
                reject(py, &fut, ClientDisconnected::new_err("client disconnected"))?;
            } else if st.resp_buffered < RESPONSE_LOW_WATER {
                drop(st);
                resolve(py, &fut, py.None().into_bound(py))?;
            } else {
                st.loop_waiting = true;
                self.drain_waiter = Some(fut);
            }
        }
        Ok(())
    }

    fn start(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.response != Response::NotStarted {
            return Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'http.response.start' sent, after response already started.",
            ));
        }
        let status = field(message, intern!(py, "status"))?
            .ok_or_else(|| PyTypeError::new_err("'http.response.start' message has no 'status'"))?;
        let status: u16 = status
            .extract()
            .ok()
            .filter(|s| (100..=999).contains(s))
            .ok_or_else(|| {
                PyTypeError::new_err(format!("Invalid HTTP status code {status:?} in response."))
            })?;
        let headers = match field(message, intern!(py, "headers"))? {
            Some(h) if !h.is_none() => response_headers(&h)?,
            _ => HeaderMap::new(),
        };
        let mut st = self.ex.lock();
        if st.gone {
            return Err(ClientDisconnected::new_err("client disconnected"));
        }
        st.head = Some(ResponseHead { status, headers });
        self.response = Response::Started;
        self.notify_io(&mut st);
        Ok(())
    }

    /// Queues a body chunk; returns a future when the app must wait for the socket to drain.
    fn body(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        match self.response {
            Response::NotStarted => {
                return Err(PyRuntimeError::new_err(
                    "Expected ASGI message 'http.response.start', but got 'http.response.body'.",
                ))
            }
            Response::Complete => {
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.body' sent, after response already completed.",
                ))
            }
            Response::Started => {}
        }
        let chunk = match field(message, intern!(py, "body"))? {
            Some(b) if !b.is_none() => body_bytes(&b)?,
            _ => Bytes::new(),
        };
        let more = match field(message, intern!(py, "more_body"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        let mut st = self.ex.lock();
        if st.gone {
            return Err(ClientDisconnected::new_err("client disconnected"));
        }
        if !chunk.is_empty() {
            st.resp_buffered += chunk.len();
            st.resp_chunks.push_back(chunk);
        }
        if !more {
            st.resp_done = true;
            self.response = Response::Complete;
        }
        self.notify_io(&mut st);
        if st.resp_buffered > RESPONSE_HIGH_WATER {
            st.loop_waiting = true;
            drop(st);
            let fut = self.ctx.create_future(py)?;
            self.drain_waiter = Some(fut.clone_ref(py));
            return Ok(Some(fut));
        }
        drop(st);
        if !more {
            // A pending receive() learns that the exchange is over.
            self.on_wake(py)?;
        }
        Ok(None)
    }

    /// Answers 500 when nothing was sent yet, or cuts the connection when a response started.
    fn fail(&mut self) {
        let mut st = self.ex.lock();
        match self.response {
            Response::NotStarted => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                st.head = Some(ResponseHead {
                    status: 500,
                    headers,
                });
                let body = Bytes::from_static(b"Internal Server Error");
                st.resp_buffered += body.len();
                st.resp_chunks.push_back(body);
                st.resp_done = true;
                self.response = Response::Complete;
                drop(st);
                st = self.ex.lock();
            }
            Response::Started => st.abort = true,
            Response::Complete => return,
        }
        self.notify_io(&mut st);
    }
}

#[pymethods]
impl HttpCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(msg) = self.try_receive(py)? {
            return self.ctx.ready_with(py, msg.into_any());
        }
        let fut = self.ctx.create_future(py)?;
        self.recv_waiter = Some(fut.clone_ref(py));
        Ok(fut)
    }

    fn send(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let kind = field(message, intern!(py, "type"))?
            .ok_or_else(|| PyTypeError::new_err("ASGI message has no 'type'"))?;
        let kind = kind.cast::<PyString>()?.to_str()?;
        match kind {
            "http.response.body" => {
                if let Some(fut) = self.body(py, message)? {
                    return Ok(fut);
                }
            }
            "http.response.start" => self.start(py, message)?,
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{other}' sent."
                )))
            }
        }
        Ok(self.ctx.ready(py))
    }

    /// Called once the app's coroutine has ended; `failed` when it raised.
    pub fn finish(&mut self, failed: bool) -> Option<&'static str> {
        let complaint = match (self.response, failed) {
            (Response::NotStarted, false) => {
                Some("ASGI callable returned without starting response.")
            }
            (Response::Started, false) => {
                Some("ASGI callable returned without completing response.")
            }
            _ => None,
        };
        self.fail();
        self.recv_waiter = None;
        self.drain_waiter = None;
        let slot = self.ex.slot();
        if slot != NO_SLOT {
            self.ex.set_slot(NO_SLOT);
            self.ctx.release(slot);
        }
        complaint
    }
}

/// A message key, or `None` when absent. Messages are dicts in practice: the dict path
/// avoids raising and catching a KeyError for every optional key left out.
pub(crate) fn field<'py>(
    message: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match message.cast::<PyDict>() {
        Ok(d) => d.get_item(key),
        Err(_) => match message.get_item(key) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(message.py()) => Ok(None),
            Err(e) => Err(e),
        },
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

pub(crate) fn resolve(py: Python<'_>, fut: &Py<PyAny>, value: Bound<'_, PyAny>) -> PyResult<()> {
    let fut = fut.bind(py);
    if !fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        fut.call_method1(intern!(py, "set_result"), (value,))?;
    }
    Ok(())
}

pub(crate) fn reject(py: Python<'_>, fut: &Py<PyAny>, err: PyErr) -> PyResult<()> {
    let fut = fut.bind(py);
    if !fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        fut.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
    }
    Ok(())
}

pub(crate) fn body_bytes(b: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(bytes) = b.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(bytes.as_bytes()));
    }
    if let Ok(array) = b.cast::<pyo3::types::PyByteArray>() {
        return Ok(Bytes::from(array.to_vec()));
    }
    // Other buffers (memoryview): let Python copy them into bytes.
    let copied =
        b.py().get_type::<PyBytes>().call1((b,)).map_err(|_| {
            PyTypeError::new_err(format!("'body' must be bytes, got {}", type_name(b)))
        })?;
    Ok(Bytes::copy_from_slice(copied.cast::<PyBytes>()?.as_bytes()))
}

fn header_part<'a>(item: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a [u8]> {
    item.cast::<PyBytes>().map(|b| b.as_bytes()).map_err(|_| {
        PyTypeError::new_err(format!(
            "response header {what} must be bytes, got {}",
            type_name(item)
        ))
    })
}

fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

pub(crate) fn response_headers(headers: &Bound<'_, PyAny>) -> PyResult<HeaderMap> {
    let mut map = HeaderMap::new();
    for item in headers.try_iter()? {
        let item = item?;
        let (name, value) = match item.cast::<PyTuple>() {
            Ok(t) if t.len() == 2 => (t.get_item(0)?, t.get_item(1)?),
            _ => (item.get_item(0)?, item.get_item(1)?),
        };
        let name = HeaderName::from_bytes(header_part(&name, "name")?)
            .map_err(|_| PyRuntimeError::new_err(format!("Invalid HTTP header name {name:?}.")))?;
        let value = HeaderValue::from_bytes(header_part(&value, "value")?).map_err(|_| {
            PyRuntimeError::new_err(format!("Invalid HTTP header value {value:?}."))
        })?;
        map.append(name, value);
    }
    Ok(map)
}
