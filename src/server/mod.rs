//! `Core`: one worker's server, as Python drives it. It owns the listening sockets and the I/O
//! thread, and hands what the I/O thread sends to the loop side (`asgi::context`).

pub(crate) mod memory;
mod runtime;

use std::cell::{OnceCell, RefCell};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::asgi::context::LoopContext;
use crate::asgi::scope::ScopeTemplate;
use crate::config::CoreConfig;
use crate::handoff::bridge::{Bridge, Event};
use crate::http::settings::H2Settings;
use crate::http::{Access, HttpContext, InFlight, Limits, Timeouts, TrustedProxies, H2};
use crate::log::{AccessLog, Format, Sink, Target};
use crate::net::Listener;
use crate::tls::Tls;
use runtime::IoThread;

#[pyclass(module = "rsgi._rsgi", unsendable)]
pub struct Core {
    config: CoreConfig,
    bridge: Arc<Bridge>,
    listeners: RefCell<Vec<Listener>>,
    addresses: Vec<String>,
    io: RefCell<Option<IoThread>>,
    ctx: OnceCell<Arc<LoopContext>>,
    spare: RefCell<Vec<Event>>,
    /// Loaded when the core is made, so bad TLS files fail before anything is served.
    tls: RefCell<Option<Tls>>,
    /// The `--metrics-bind` listener, until the I/O thread takes it.
    metrics: RefCell<Option<std::net::TcpListener>>,
}

#[pymethods]
impl Core {
    /// Binds the sockets the config names, or adopts `fds` (already listening) instead.
    ///
    /// `serve_metrics`: answer `--metrics-bind` here. A supervised worker passes False: its
    /// master serves the metrics of every worker.
    #[new]
    #[pyo3(signature = (config, fds=None, serve_metrics=true))]
    fn new(config: CoreConfig, fds: Option<Vec<i32>>, serve_metrics: bool) -> PyResult<Self> {
        let tls = match config.tls() {
            Some(settings) => Some(
                Tls::from_config(&settings, config.header_read(), config.versions().alpn())
                    .map_err(PyOSError::new_err)?,
            ),
            None => None,
        };
        let metrics = match (&config.metrics_bind, serve_metrics) {
            (Some(addr), true) => Some(
                crate::net::bind_metrics(addr, config.backlog)
                    .map_err(|e| PyOSError::new_err(format!("--metrics-bind {addr}: {e}")))?,
            ),
            _ => None,
        };
        let listeners = match fds {
            Some(fds) => fds
                .into_iter()
                .map(Listener::from_fd)
                .collect::<Result<Vec<_>, _>>(),
            None => crate::net::bind(&config),
        }
        .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let addresses = listeners
            .iter()
            .map(Listener::describe)
            .map(|a| match (&tls, a.strip_prefix("http://")) {
                (Some(_), Some(rest)) => format!("https://{rest}"),
                _ => a,
            })
            .collect();
        Ok(Core {
            config,
            bridge: Arc::new(Bridge::new()?),
            listeners: RefCell::new(listeners),
            addresses,
            io: RefCell::new(None),
            ctx: OnceCell::new(),
            spare: RefCell::new(Vec::with_capacity(256)),
            tls: RefCell::new(tls),
            metrics: RefCell::new(metrics),
        })
    }

    /// Where the server listens, as `http://host:port` or `unix:path`.
    #[getter]
    fn addresses(&self) -> Vec<String> {
        self.addresses.clone()
    }

    /// Starts the I/O thread. Returns the file descriptor the loop must watch with
    /// `add_reader(fd, core.drain)`.
    /// Starts the I/O thread. Returns the file descriptor the loop must watch with
    /// `add_reader(fd, core.drain)`.
    ///
    /// `access_log` is where access lines go: `None` (off), a file descriptor or a path (written
    /// by the I/O thread, each line after `access_prefix`), or a callable such as a logger's
    /// `info` (called on the loop thread, for logging configurations that need Python).
    #[pyo3(signature = (event_loop, app, error_log, access_log, state, access_prefix=String::new()))]
    fn start(
        slf: &Bound<'_, Self>,
        event_loop: Bound<'_, PyAny>,
        app: Bound<'_, PyAny>,
        error_log: Bound<'_, PyAny>,
        access_log: Option<Bound<'_, PyAny>>,
        state: Option<Bound<'_, PyDict>>,
        access_prefix: String,
    ) -> PyResult<i32> {
        let py = slf.py();
        let this = slf.borrow();
        let listeners = std::mem::take(&mut *this.listeners.borrow_mut());
        if listeners.is_empty() {
            return Err(PyRuntimeError::new_err("the server was already started"));
        }
        let (access, access_callable) = match access_log {
            None => (None, None),
            Some(target) => {
                let log = AccessLog::new(access_format(&this.config)?).with_reasons(reasons(py)?);
                let (sink, callable) = if let Ok(fd) = target.extract::<i32>() {
                    (Sink::write(Target::Fd(fd), access_prefix)?, None)
                } else if let Ok(path) = target.extract::<String>() {
                    (Sink::write(Target::Path(path), access_prefix)?, None)
                } else {
                    (Sink::Python(this.bridge.clone()), Some(target.unbind()))
                };
                (Some(Access { log, sink }), callable)
            }
        };
        let ctx = LoopContext::new(
            this.bridge.clone(),
            &event_loop,
            slf.getattr(intern!(py, "flush"))?,
            app,
            error_log,
            access_callable,
            ScopeTemplate::new(py, this.config.root_path.clone(), state.map(Bound::unbind))?,
        )?;
        let _ = this.ctx.set(Arc::new(ctx));
        crate::log::events::route_to(this.bridge.clone());
        let http = Arc::new(http_context(
            &this.config,
            this.bridge.clone(),
            access,
            this.tls.borrow_mut().take(),
        )?);
        let metrics = this.metrics.borrow_mut().take();
        let io = IoThread::start(http, listeners, metrics, this.config.threads)
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        *this.io.borrow_mut() = Some(io);
        Ok(this.bridge.loop_fd())
    }

    /// Handles every event the I/O thread queued since the last call.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        let Some(ctx) = self.ctx.get() else {
            return Ok(());
        };
        let mut events = std::mem::take(&mut *self.spare.borrow_mut());
        self.bridge.take_events(&mut events);
        for event in events.drain(..) {
            ctx.handle(py, event);
        }
        *self.spare.borrow_mut() = events;
        Ok(())
    }

    /// Wakes the I/O thread for every response queued during this loop turn.
    fn flush(&self) {
        if let Some(ctx) = self.ctx.get() {
            ctx.flushed();
        }
        self.bridge.flush();
    }

    /// Turns the `--health-path` answer to 503 while the server goes on serving, so that load
    /// balancers stop sending requests before it stops accepting. `shutdown` implies it.
    fn set_draining(&self) {
        if let Some(io) = self.io.borrow().as_ref() {
            io.set_draining();
        }
    }

    /// Stops accepting and lets every connection finish its in-flight request, then close.
    /// Returns once nothing more can be accepted, so that `connections()` counts every
    /// connection left to wait for.
    fn shutdown(&self, py: Python<'_>) {
        if let Some(io) = self.io.borrow().as_ref() {
            py.detach(|| io.shutdown());
        }
        if let Some(ctx) = self.ctx.get() {
            ctx.shutdown(py);
        }
    }

    /// Reopens the access log file, for USR1 after log rotation.
    fn reopen_logs(&self) -> PyResult<()> {
        if let Some(io) = self.io.borrow().as_ref() {
            io.reopen_logs()
                .map_err(|e| PyOSError::new_err(e.to_string()))?;
        }
        Ok(())
    }

    /// Open connections.
    fn connections(&self) -> usize {
        self.io.borrow().as_ref().map_or(0, IoThread::connections)
    }

    /// Requests ended on the I/O side since the server started (a response written, or the
    /// client gone first). One relaxed atomic load: cheap enough for a heartbeat to poll.
    fn requests(&self) -> u64 {
        self.bridge.requests()
    }

    /// Requests whose app is still running.
    fn running(&self) -> usize {
        self.ctx.get().map_or(0, |c| c.running())
    }

    /// Stops the I/O thread at once, dropping what is left, and waits for it.
    fn close(&self, py: Python<'_>) {
        let io = self.io.borrow_mut().take();
        if let Some(io) = io {
            py.detach(|| io.stop());
        }
        if let Some(ctx) = self.ctx.get() {
            ctx.wake_all(py);
        }
        let _ = self.drain(py);
    }
}

fn http_context(
    config: &CoreConfig,
    bridge: Arc<Bridge>,
    access: Option<Access>,
    tls: Option<Tls>,
) -> PyResult<HttpContext> {
    let mut default_headers = HeaderMap::new();
    if config.server_header {
        default_headers.insert(http::header::SERVER, HeaderValue::from_static("rsgi"));
    }
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| PyValueError::new_err(format!("invalid header value {value:?}")))?;
        default_headers.append(name, value);
    }
    let timeouts = Timeouts {
        keep_alive: config.keep_alive(),
        header_read: config.header_read(),
        write: config.write(),
    };
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        // The connection driver enforces the head-read timeout with its own timer.
        .header_read_timeout(None)
        // Fields beyond the limit, and heads beyond 64 KiB whatever the limits, get 431.
        .max_headers(config.limit_request_fields)
        .max_buf_size(crate::http::framing::MAX_HEAD)
        .auto_date_header(config.date_header)
        // Not `pipeline_flush`: it lifts hyper's bound on buffered response bytes, and with it
        // the backpressure on the app.
        .keep_alive(!timeouts.keep_alive.is_zero());
    let h2 = H2::new(&H2Settings {
        versions: config.versions(),
        max_concurrent_streams: config.h2_max_concurrent_streams,
        max_fields: config.limit_request_fields,
        max_header_list: config.h2_header_list(),
        date_header: config.date_header,
    });
    let metrics = crate::metrics::current();
    let limits = Limits {
        request_line: config.limit_request_line,
        field_size: config.limit_request_field_size,
        body: config.limit_request_body,
        concurrency: config.limit_concurrency,
        body_read: config.body_read(),
    };
    let proxies = match config.proxy_headers {
        true => Some(
            TrustedProxies::parse(&config.forwarded_allow_ips).map_err(PyValueError::new_err)?,
        ),
        false => None,
    };
    Ok(HttpContext {
        access,
        request_id: config.request_id,
        bridge,
        default_headers,
        http1,
        h2,
        timeouts,
        limits,
        in_flight: InFlight::new(&metrics.in_flight),
        metrics,
        proxies,
        health_path: config.health_path.clone(),
        draining: AtomicBool::new(false),
        ws: config.ws(),
        tls,
    })
}

/// Python's reason phrase of every status it names, for the access line (as uvicorn's).
fn reasons(py: Python<'_>) -> PyResult<Vec<(u16, String)>> {
    let statuses = py.import("http")?.getattr(intern!(py, "HTTPStatus"))?;
    statuses
        .try_iter()?
        .map(|member| {
            let member = member?;
            Ok((
                member.getattr(intern!(py, "value"))?.extract()?,
                member.getattr(intern!(py, "phrase"))?.extract()?,
            ))
        })
        .collect()
}

fn access_format(config: &CoreConfig) -> PyResult<Format> {
    if config.log_format == "json" {
        return Ok(Format::Json);
    }
    match &config.access_log_format {
        Some(text) => Format::parse_atoms(text).map_err(PyValueError::new_err),
        None => Ok(Format::Default),
    }
}
