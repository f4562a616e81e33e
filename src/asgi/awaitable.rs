//! Awaitables that complete without suspending: `await send(...)` and `await receive()` for
//! data that is already here cost no asyncio Future.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

/// Resolves at once to `value` (or `None`). One shared instance serves every `send()`.
#[pyclass(module = "rsgi._rsgi", frozen)]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    pub fn new(value: Option<Py<PyAny>>) -> Self {
        Ready { value }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.value {
            None => Ok(None),
            // StopIteration's first argument is the result of the `await`.
            Some(v) => Err(PyStopIteration::new_err((v.clone_ref(py),))),
        }
    }
}
