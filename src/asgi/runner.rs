//! `AppRunner`: the coroutine an asyncio Task runs for one request. It drives the app's own
//! coroutine and, when that ends, finishes the exchange (500 or a cut connection if the app
//! misbehaved) and logs what went wrong. Doing this in Rust spares every request a Python
//! wrapper coroutine and its frame.

use pyo3::exceptions::{PyBaseException, PyException, PyStopIteration};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::http::HttpCycle;
use super::message::ClientDisconnected;
use crate::asgi::websocket::WebSocketCycle;

/// The Python object behind `receive`/`send` of a running app: an HTTP request or a WebSocket.
pub enum Cycle {
    Http(Py<HttpCycle>),
    Ws(Py<WebSocketCycle>),
}

impl Cycle {
    pub fn clone_ref(&self, py: Python<'_>) -> Cycle {
        match self {
            Cycle::Http(c) => Cycle::Http(c.clone_ref(py)),
            Cycle::Ws(c) => Cycle::Ws(c.clone_ref(py)),
        }
    }

    pub fn bind<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        match self {
            Cycle::Http(c) => c.bind(py).as_any(),
            Cycle::Ws(c) => c.bind(py).as_any(),
        }
    }

    /// The I/O side reported a change a pending `receive()` or `send()` may care about.
    pub fn on_wake(&self, py: Python<'_>) -> PyResult<()> {
        match self {
            Cycle::Http(c) => c.borrow_mut(py).on_wake(py),
            Cycle::Ws(c) => c.borrow_mut(py).on_wake(py),
        }
    }

    /// The server is shutting down (see `HttpCycle::on_shutdown`). A WebSocket hears of it
    /// from its session on the I/O side.
    pub fn on_shutdown(&self, py: Python<'_>) -> PyResult<()> {
        match self {
            Cycle::Http(c) => c.borrow_mut(py).on_shutdown(py),
            Cycle::Ws(_) => Ok(()),
        }
    }

    /// The app ended (`failed`: it raised); returns what to complain about, if anything.
    pub fn finish(&self, py: Python<'_>, failed: bool) -> Option<&'static str> {
        match self {
            Cycle::Http(c) => c.borrow_mut(py).finish(failed),
            Cycle::Ws(c) => c.borrow_mut(py).finish(failed),
        }
    }
}

#[pyclass(module = "rsgi._rsgi")]
pub struct AppRunner {
    coro: Py<PyAny>,
    cycle: Cycle,
    error_log: Py<PyAny>,
}

impl AppRunner {
    pub fn new(coro: Py<PyAny>, cycle: Cycle, error_log: Py<PyAny>) -> Self {
        AppRunner {
            coro,
            cycle,
            error_log,
        }
    }

    /// The app's coroutine returned.
    fn returned(&self, py: Python<'_>) {
        if let Some(complaint) = self.cycle.finish(py, false) {
            self.log_error(py, complaint, None);
        }
    }

    /// The app's coroutine raised: an Exception is the app's failure, logged and absorbed;
    /// anything else (cancellation, exit) still ends the exchange and goes on up.
    fn raised(&self, py: Python<'_>, err: PyErr) -> PyResult<()> {
        self.cycle.finish(py, true);
        if !err.is_instance_of::<PyException>(py) {
            return Err(err);
        }
        if from_disconnect(err.value(py)) {
            // send() told the app that its client had gone, and the app let that end it (or
            // failed while handling it, say by trying to send an error page): the usual end of
            // an aborted request, not a fault of the app. A traceback per aborted request would
            // flood the log, and formatting it would stall the loop whenever many clients
            // leave at once.
            self.log_debug(py, "ASGI application stopped: the client disconnected");
            return Ok(());
        }
        self.log_error(py, "Exception in ASGI application\n", Some(err));
        Ok(())
    }

    fn log_debug(&self, py: Python<'_>, msg: &str) {
        if let Err(e) = self
            .error_log
            .call_method1(py, intern!(py, "debug"), (msg,))
        {
            e.print(py);
        }
    }

    fn log_error(&self, py: Python<'_>, msg: &str, err: Option<PyErr>) {
        let result = (|| -> PyResult<()> {
            let kwargs = PyDict::new(py);
            if let Some(err) = err {
                kwargs.set_item(intern!(py, "exc_info"), err.into_value(py))?;
            }
            self.error_log
                .call_method(py, intern!(py, "error"), (msg,), Some(&kwargs))?;
            Ok(())
        })();
        if let Err(e) = result {
            e.print(py);
        }
    }
}

impl AppRunner {
    /// One step of the app's coroutine: `Ok(Some(_))` when it yielded, `Ok(None)` when it
    /// returned or raised an Exception (both already handled), `Err` for anything to re-raise.
    fn step(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        let mut out: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: both pointers are live, GIL-held references for the duration of the call;
        // `out` receives a new (owned) reference on NEXT and RETURN, and stays null on ERROR.
        let status = unsafe { ffi::PyIter_Send(self.coro.as_ptr(), value.as_ptr(), &mut out) };
        match status {
            ffi::PySendResult::PYGEN_NEXT => {
                // SAFETY: on NEXT, `out` is a new non-null reference that we now own.
                Ok(Some(unsafe { Bound::from_owned_ptr(py, out) }.unbind()))
            }
            ffi::PySendResult::PYGEN_RETURN => {
                // SAFETY: on RETURN, `out` is a new reference (the return value) that we own;
                // taking it drops it.
                drop(unsafe { Bound::from_owned_ptr(py, out) });
                self.returned(py);
                Ok(None)
            }
            _ => {
                let err = PyErr::take(py).unwrap_or_else(|| {
                    pyo3::exceptions::PySystemError::new_err(
                        "coroutine failed without an exception",
                    )
                });
                self.raised(py, err).map(|()| None)
            }
        }
    }
}

/// Whether `exc` is [`ClientDisconnected`], an exception group holding nothing else (as task
/// groups wrap what their tasks raise), or an exception raised while handling one of those.
fn from_disconnect(exc: &Bound<'_, PyBaseException>) -> bool {
    // Chains are short; the bound only guards against a cycle of contexts.
    let mut at = Some(exc.clone());
    for _ in 0..16 {
        let Some(e) = at else { return false };
        if only_disconnects(&e) {
            return true;
        }
        at = e
            .getattr(intern!(e.py(), "__context__"))
            .ok()
            .and_then(|c| c.cast_into().ok());
    }
    false
}

/// Whether `exc` is [`ClientDisconnected`], or an exception group holding nothing else.
fn only_disconnects(exc: &Bound<'_, PyBaseException>) -> bool {
    if exc.is_instance_of::<ClientDisconnected>() {
        return true;
    }
    let Ok(members) = exc.getattr(intern!(exc.py(), "exceptions")) else {
        return false;
    };
    let Ok(members) = members.cast_into::<PyTuple>() else {
        return false;
    };
    !members.is_empty()
        && members.iter().all(|m| {
            m.cast_into::<PyBaseException>()
                .is_ok_and(|m| only_disconnects(&m))
        })
}

#[pymethods]
impl AppRunner {
    fn send(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(py, &value)?
            .ok_or_else(|| PyStopIteration::new_err(()))
    }

    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        &self,
        py: Python<'_>,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let coro = self.coro.bind(py);
        let result = match (val, tb) {
            (None, None) => coro.call_method1(intern!(py, "throw"), (typ,)),
            (val, tb) => coro.call_method1(intern!(py, "throw"), (typ, val, tb)),
        };
        match result {
            Ok(yielded) => Ok(yielded.unbind()),
            Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
                self.returned(py);
                Err(PyStopIteration::new_err(()))
            }
            Err(e) => {
                self.raised(py, e)?;
                Err(PyStopIteration::new_err(()))
            }
        }
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.coro.call_method0(py, intern!(py, "close"))?;
        Ok(())
    }

    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// What the Task calls for each step: an end is a null return without an exception,
    /// which spares every request a StopIteration object.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.step(py, &py.None().into_bound(py))
    }
}
