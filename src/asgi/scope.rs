//! Builds the ASGI HTTP scope from a request head, on the loop thread.

use parking_lot::Mutex;

use http::header::TE;
use http::{HeaderMap, Method, Version};
use percent_encoding::percent_decode;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::handoff::head::TlsInfo;
use crate::handoff::head::{Endpoint, RequestHead};

/// Per-server values every scope shares.
pub struct ScopeTemplate {
    pub root_path: String,
    /// The lifespan state; each scope gets a shallow copy.
    pub state: Option<Py<PyDict>>,
    /// An HTTP scope with every key in place: copying it and replacing values is cheaper
    /// than growing a new dict key by key.
    http: Py<PyDict>,
    asgi: Py<PyDict>,
    /// `{"http.response.pathsend": {}}`, copied per request. The inner dict only announces
    /// the extension, so every scope may share it.
    extensions: Py<PyDict>,
    /// The `server` tuple last reported. A process listens on few addresses, so a request
    /// nearly always reuses it, and tuples are immutable.
    server: Mutex<Option<(Endpoint, Py<PyAny>)>>,
    /// The client host string last made. Behind a proxy nearly every request comes from the
    /// same address, while the port differs from connection to connection.
    client_host: Mutex<Option<(Box<str>, Py<PyString>)>>,
}

impl ScopeTemplate {
    pub fn new(py: Python<'_>, root_path: String, state: Option<Py<PyDict>>) -> PyResult<Self> {
        let http = PyDict::new(py);
        http.set_item(intern!(py, "type"), intern!(py, "http"))?;
        for key in [
            "asgi",
            "http_version",
            "method",
            "scheme",
            "path",
            "raw_path",
            "root_path",
            "query_string",
            "headers",
            "client",
            "server",
            "extensions",
        ] {
            http.set_item(PyString::intern(py, key), py.None())?;
        }
        if state.is_some() {
            http.set_item(intern!(py, "state"), py.None())?;
        }
        let extensions = PyDict::new(py);
        extensions.set_item(intern!(py, "http.response.pathsend"), PyDict::new(py))?;
        Ok(ScopeTemplate {
            root_path,
            state,
            http: http.unbind(),
            asgi: asgi_version(py)?.unbind(),
            extensions: extensions.unbind(),
            server: Mutex::new(None),
            client_host: Mutex::new(None),
        })
    }

    /// The `server` tuple for `e`.
    fn server<'py>(&self, py: Python<'py>, e: &Endpoint) -> PyResult<Bound<'py, PyAny>> {
        let mut last = self.server.lock();
        if let Some((endpoint, tuple)) = &*last {
            if endpoint == e {
                return Ok(tuple.bind(py).clone());
            }
        }
        let tuple = endpoint(py, e)?;
        *last = Some((e.clone(), tuple.clone().unbind()));
        Ok(tuple)
    }

    /// The `client` tuple for `e`.
    fn client<'py>(&self, py: Python<'py>, e: &Endpoint) -> PyResult<Bound<'py, PyAny>> {
        let Endpoint::Tcp(host, port) = e else {
            return endpoint(py, e);
        };
        let mut last = self.client_host.lock();
        let text = match &*last {
            Some((known, text)) if known == host => text.bind(py).clone(),
            _ => {
                let text = PyString::new(py, host);
                *last = Some((host.clone(), text.clone().unbind()));
                text
            }
        };
        Ok((text, *port).into_pyobject(py)?.into_any())
    }
}

pub fn build<'py>(
    py: Python<'py>,
    head: &RequestHead,
    tpl: &ScopeTemplate,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = tpl.http.bind(py).copy()?;
    scope.set_item(intern!(py, "asgi"), tpl.asgi.bind(py).copy()?)?;
    scope.set_item(intern!(py, "http_version"), http_version(py, head.version))?;
    scope.set_item(intern!(py, "method"), method(py, &head.method))?;
    // A trusted proxy's X-Forwarded-Proto or Forwarded wins over the connection's own scheme.
    let forwarded = head.forwarded.as_ref();
    let own = if head.conn.tls { "https" } else { "http" };
    let scheme = forwarded.and_then(|f| f.scheme).unwrap_or(own);
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
    // As for HTTP: a trusted proxy's scheme wins over the connection's own.
    let secure = match head.forwarded.as_ref().and_then(|f| f.scheme) {
        Some(s) => s == "https" || s == "wss",
        None => head.conn.tls,
    };
    let scheme = if secure {
        intern!(py, "wss")
    } else {
        intern!(py, "ws")
    };
    scope.set_item(intern!(py, "scheme"), scheme)?;
    set_common(py, &scope, head, tpl)?;
    scope.set_item(intern!(py, "subprotocols"), subprotocols(py, head)?)?;
    // The HTTP response extensions do not apply; the denial response one does.
    let extensions = PyDict::new(py);
    extensions.set_item(intern!(py, "websocket.http.response"), PyDict::new(py))?;
    if let Some(info) = &head.conn.tls_info {
        extensions.set_item(intern!(py, "tls"), tls_extension(py, info)?)?;
    }
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
    scope.set_item(intern!(py, "client"), tpl.client(py, client)?)?;
    scope.set_item(intern!(py, "server"), tpl.server(py, &head.conn.server)?)?;
    scope.set_item(intern!(py, "extensions"), extensions(py, head, tpl)?)?;
    if let Some(state) = &tpl.state {
        scope.set_item(intern!(py, "state"), state.bind(py).copy()?)?;
    }
    Ok(())
}

/// `scope["extensions"]`: `http.response.pathsend` always, `http.response.trailers` when the
/// client accepts trailers, `tls` on TLS connections.
fn extensions<'py>(
    py: Python<'py>,
    head: &RequestHead,
    tpl: &ScopeTemplate,
) -> PyResult<Bound<'py, PyDict>> {
    let ext = tpl.extensions.bind(py).copy()?;
    if accepts_trailers(head.version, &head.headers) {
        ext.set_item(intern!(py, "http.response.trailers"), PyDict::new(py))?;
    }
    if let Some(info) = &head.conn.tls_info {
        ext.set_item(intern!(py, "tls"), tls_extension(py, info)?)?;
    }
    Ok(ext)
}

/// Whether hyper will send trailer fields: any HTTP/2 request, or an HTTP/1.1 request whose
/// `TE` lists `trailers` (the same test hyper applies before it writes them).
pub fn accepts_trailers(version: Version, headers: &HeaderMap) -> bool {
    if version == Version::HTTP_2 {
        return true;
    }
    version == Version::HTTP_11
        && headers.get_all(TE).iter().any(|value| {
            value.to_str().is_ok_and(|line| {
                line.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("trailers"))
            })
        })
}

/// The ASGI TLS extension's dictionary.
fn tls_extension<'py>(py: Python<'py>, info: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "server_cert"), &*info.server_cert)?;
    let chain = PyList::new(py, info.client_cert_chain.iter().map(String::as_str))?;
    d.set_item(intern!(py, "client_cert_chain"), chain)?;
    d.set_item(
        intern!(py, "client_cert_name"),
        info.client_cert_name.as_deref(),
    )?;
    // A client certificate that fails verification fails the handshake.
    d.set_item(intern!(py, "client_cert_error"), py.None())?;
    d.set_item(intern!(py, "tls_version"), info.tls_version)?;
    d.set_item(intern!(py, "cipher_suite"), info.cipher_suite)?;
    Ok(d)
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
    match v {
        Version::HTTP_10 => intern!(py, "1.0"),
        Version::HTTP_2 => intern!(py, "2"),
        _ => intern!(py, "1.1"),
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
