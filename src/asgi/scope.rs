//! Builds the ASGI HTTP scope from a request head, on the loop thread.

use http::{Method, Version};
use percent_encoding::percent_decode;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::http::{Endpoint, RequestHead};

/// Per-server values every scope shares.
pub struct ScopeTemplate {
    pub root_path: String,
    /// The lifespan state; each scope gets a shallow copy.
    pub state: Option<Py<PyDict>>,
}

pub fn build<'py>(
    py: Python<'py>,
    head: &RequestHead,
    tpl: &ScopeTemplate,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
    scope.set_item(intern!(py, "asgi"), asgi_version(py)?)?;
    scope.set_item(intern!(py, "http_version"), http_version(py, head.version))?;
    scope.set_item(intern!(py, "method"), method(py, &head.method))?;
    let forwarded = head.forwarded.as_ref();
    let scheme = forwarded.and_then(|f| f.scheme).unwrap_or("http");
    scope.set_item(intern!(py, "scheme"), scheme_str(py, scheme))?;
    set_common(py, &scope, head, tpl)?;
    Ok(scope)
}

/// The scope of a WebSocket (ASGI websocket spec 2.5).
pub fn build_websocket<'py>(
    py: Python<'py>,
    head: &RequestHead,
    tpl: &ScopeTemplate,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
    scope.set_item(intern!(py, "asgi"), asgi_version(py)?)?;
    scope.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
    let secure = head
        .forwarded
        .as_ref()
        .and_then(|f| f.scheme)
        .is_some_and(|s| s == "https" || s == "wss");
    let scheme = if secure {
        intern!(py, "wss")
    } else {
        intern!(py, "ws")
    };
    scope.set_item(intern!(py, "scheme"), scheme)?;
    set_common(py, &scope, head, tpl)?;
    scope.set_item(intern!(py, "subprotocols"), subprotocols(py, head)?)?;
    let extensions = PyDict::new(py);
    extensions.set_item(intern!(py, "websocket.http.response"), PyDict::new(py))?;
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok(scope)
}

/// `Sec-WebSocket-Protocol`: comma-separated tokens, possibly over several header lines.
fn subprotocols<'py>(py: Python<'py>, head: &RequestHead) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for value in head.headers.get_all(http::header::SEC_WEBSOCKET_PROTOCOL) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if !token.is_empty() {
                list.append(PyString::new(py, &String::from_utf8_lossy(token)))?;
            }
        }
    }
    Ok(list)
}

/// Everything the HTTP and WebSocket scopes share.
fn set_common(
    py: Python<'_>,
    scope: &Bound<'_, PyDict>,
    head: &RequestHead,
    tpl: &ScopeTemplate,
) -> PyResult<()> {
    let forwarded = head.forwarded.as_ref();
    let raw_path = head.uri.path().as_bytes();
    let decoded = percent_decode(raw_path).decode_utf8_lossy();
    if tpl.root_path.is_empty() {
        scope.set_item(intern!(py, "path"), PyString::new(py, &decoded))?;
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw_path))?;
        scope.set_item(intern!(py, "root_path"), intern!(py, ""))?;
    } else {
        // As uvicorn does: `path` and `raw_path` include the root path, which frameworks strip.
        let root = &tpl.root_path;
        scope.set_item(
            intern!(py, "path"),
            PyString::new(py, &format!("{root}{decoded}")),
        )?;
        let mut raw = Vec::with_capacity(root.len() + raw_path.len());
        raw.extend_from_slice(root.as_bytes());
        raw.extend_from_slice(raw_path);
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, &raw))?;
        scope.set_item(intern!(py, "root_path"), PyString::new(py, root))?;
    }
    let query = head.uri.query().unwrap_or("").as_bytes();
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, query))?;
    scope.set_item(intern!(py, "headers"), headers(py, head)?)?;
    let client = forwarded
        .and_then(|f| f.client.as_ref())
        .unwrap_or(&head.conn.client);
    scope.set_item(intern!(py, "client"), endpoint(py, client)?)?;
    scope.set_item(intern!(py, "server"), endpoint(py, &head.conn.server)?)?;
    if let Some(state) = &tpl.state {
        scope.set_item(intern!(py, "state"), state.bind(py).copy()?)?;
    }
    Ok(())
}

fn asgi_version(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
    d.set_item(intern!(py, "spec_version"), intern!(py, "2.5"))?;
    Ok(d)
}

fn scheme_str<'py>(py: Python<'py>, scheme: &str) -> &'py Bound<'py, PyString> {
    if scheme == "https" {
        intern!(py, "https")
    } else {
        intern!(py, "http")
    }
}

fn http_version(py: Python<'_>, v: Version) -> &Bound<'_, PyString> {
    if v == Version::HTTP_10 {
        intern!(py, "1.0")
    } else {
        intern!(py, "1.1")
    }
}

fn method<'py>(py: Python<'py>, m: &Method) -> Bound<'py, PyString> {
    match *m {
        Method::GET => intern!(py, "GET").clone(),
        Method::POST => intern!(py, "POST").clone(),
        Method::PUT => intern!(py, "PUT").clone(),
        Method::DELETE => intern!(py, "DELETE").clone(),
        Method::HEAD => intern!(py, "HEAD").clone(),
        Method::PATCH => intern!(py, "PATCH").clone(),
        Method::OPTIONS => intern!(py, "OPTIONS").clone(),
        _ => PyString::new(py, m.as_str()),
    }
}

fn headers<'py>(py: Python<'py>, head: &RequestHead) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (name, value) in &head.headers {
        let pair = PyTuple::new(
            py,
            [
                PyBytes::new(py, name.as_str().as_bytes()),
                PyBytes::new(py, value.as_bytes()),
            ],
        )?;
        list.append(pair)?;
    }
    Ok(list)
}

fn endpoint<'py>(py: Python<'py>, e: &Endpoint) -> PyResult<Bound<'py, PyAny>> {
    Ok(match e {
        Endpoint::Tcp(host, port) => (&**host, *port).into_pyobject(py)?.into_any(),
        Endpoint::Unix(path) => (path.as_str(), py.None()).into_pyobject(py)?.into_any(),
        Endpoint::Unknown => py.None().into_bound(py),
    })
}
