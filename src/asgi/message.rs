//! What both cycles need of the app's messages: reading their fields (dicts in practice, any
//! mapping allowed), response headers and bodies, and the error `send()` raises once the
//! client has gone.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

pyo3::create_exception!(
    rsgi._rsgi,
    ClientDisconnected,
    pyo3::exceptions::PyOSError,
    "The client closed the connection; raised by send() after a disconnect."
);

/// One `bytes` object holding `chunks` (`total` bytes in all) back to back: the request
/// body's single copy. `PyBytes::new_with` would zero the buffer first, a second pass over
/// every byte of an upload.
pub fn bytes_from_chunks<'py>(
    py: Python<'py>,
    total: usize,
    chunks: impl Iterator<Item = Bytes>,
) -> PyResult<Bound<'py, PyBytes>> {
    let len = pyo3::ffi::Py_ssize_t::try_from(total)
        .map_err(|_| PyRuntimeError::new_err("request body piece too large"))?;
    // SAFETY: with a null pointer CPython allocates `len` uninitialised bytes (plus the
    // trailing NUL it sets itself) and returns a new reference, or null with an exception
    // set, which `from_owned_ptr_or_err` turns into the error.
    let object = unsafe {
        let ptr = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len);
        Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyBytes>()
    };
    // SAFETY: the object is new and not yet shared, so writing its buffer is allowed (the
    // C API's documented way to fill a bytes object); `PyBytes_AsString` of a bytes object
    // cannot fail and points at `len` writable bytes.
    let buf = unsafe { pyo3::ffi::PyBytes_AsString(object.as_ptr()).cast::<u8>() };
    let mut at = 0;
    for chunk in chunks {
        let n = chunk.len().min(total - at);
        // SAFETY: `at + n <= total`, so the copy stays inside the buffer; the chunk is a
        // separate Rust allocation, so the two cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), buf.add(at), n) };
        at += n;
    }
    if at < total {
        // Fewer bytes than announced would leave uninitialised memory in a Python object.
        // SAFETY: `at..total` lies inside the buffer.
        unsafe { std::ptr::write_bytes(buf.add(at), 0, total - at) };
    }
    Ok(object)
}

/// What `send()` raises once the client has gone.
pub fn disconnected() -> PyErr {
    ClientDisconnected::new_err("client disconnected")
}

/// A message key, or `None` when absent. Messages are dicts in practice: the dict path
/// avoids raising and catching a KeyError for every optional key left out.
pub fn field<'py>(
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

/// A boolean message key; absent is false.
pub fn flag(message: &Bound<'_, PyAny>, key: &Bound<'_, PyString>) -> PyResult<bool> {
    match field(message, key)? {
        Some(v) => v.is_truthy(),
        None => Ok(false),
    }
}

/// A message's `type`, which every message must have.
pub fn message_type<'py>(message: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    let kind = field(message, intern!(message.py(), "type"))?
        .ok_or_else(|| PyTypeError::new_err("ASGI message has no 'type'"))?;
    Ok(kind.cast_into::<PyString>()?)
}

/// The `status` of the response start message `kind`: 100 to 999, and `allowed`.
pub fn status_field(
    message: &Bound<'_, PyAny>,
    kind: &str,
    allowed: impl Fn(u16) -> bool,
) -> PyResult<u16> {
    let status = field(message, intern!(message.py(), "status"))?
        .ok_or_else(|| PyTypeError::new_err(format!("'{kind}' message has no 'status'")))?;
    status
        .extract()
        .ok()
        .filter(|s| (100..=999).contains(s) && allowed(*s))
        .ok_or_else(|| {
            PyTypeError::new_err(format!("Invalid HTTP status code {status:?} in response."))
        })
}

/// A list of header pairs under `key`; absent or None is no headers.
pub fn headers_field(message: &Bound<'_, PyAny>, key: &Bound<'_, PyString>) -> PyResult<HeaderMap> {
    match field(message, key)? {
        Some(h) if !h.is_none() => response_headers(&h),
        _ => Ok(HeaderMap::new()),
    }
}

/// The `body` of a body message; absent or None is empty.
pub fn body_field(message: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    match field(message, intern!(message.py(), "body"))? {
        Some(b) if !b.is_none() => body_bytes(&b),
        _ => Ok(Bytes::new()),
    }
}

pub fn body_bytes(b: &Bound<'_, PyAny>) -> PyResult<Bytes> {
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

pub fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

pub fn response_headers(headers: &Bound<'_, PyAny>) -> PyResult<HeaderMap> {
    // Room for the I/O side's additions too (`server`, `x-request-id`, `connection`), so
    // that the map never grows on the way out.
    let mut map = HeaderMap::with_capacity(headers.len().unwrap_or(0) + 3);
    // A list, as nearly every app sends, is indexed without an iterator object.
    if let Ok(list) = headers.cast::<PyList>() {
        for item in list.iter() {
            append_header(&mut map, &item)?;
        }
    } else {
        for item in headers.try_iter()? {
            append_header(&mut map, &item?)?;
        }
    }
    Ok(map)
}

/// One `(name, value)` pair of an app's headers.
fn append_header(map: &mut HeaderMap, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let (name, value) = match item.cast::<PyTuple>() {
        Ok(t) if t.len() == 2 => (t.get_item(0)?, t.get_item(1)?),
        _ => (item.get_item(0)?, item.get_item(1)?),
    };
    let name = HeaderName::from_bytes(header_part(&name, "name")?)
        .map_err(|_| PyRuntimeError::new_err(format!("Invalid HTTP header name {name:?}.")))?;
    let value = HeaderValue::from_bytes(header_part(&value, "value")?)
        .map_err(|_| PyRuntimeError::new_err(format!("Invalid HTTP header value {value:?}.")))?;
    map.append(name, value);
    Ok(())
}
