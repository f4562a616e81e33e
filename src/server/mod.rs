//! `Core`: one worker's server, as Python drives it. It owns the listening sockets, the I/O
//! thread, and the loop-thread side of the bridge.

pub(crate) mod memory;
mod runtime;

use std::cell::{OnceCell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::asgi::awaitable::Ready;
use crate::asgi::bridge::{Bridge, Event, LogLevel};
use crate::asgi::cycle::HttpCycle;
use crate::asgi::exchange::Exchange;
use crate::asgi::runner::{AppRunner, Cycle};
use crate::asgi::scope::{self, ScopeTemplate};
use crate::config::CoreConfig;
use crate::http::Access;
use crate::http::{HttpContext, InFlight, Limits, RequestHead, Timeouts, TrustedProxies};
use crate::log::{AccessLog, Format, Sink, Target};
use crate::net::Listener;
use crate::tls::Tls;
use crate::ws::cycle::WebSocketCycle;
use runtime::IoThread;

/// Loop-thread state shared by the `Core` and every `HttpCycle`.
///
/// It is used on the loop thread only, but it is `Send + Sync` (atomics and an uncontended
/// mutex rather than cells) because the cycles that hold it are Python objects, and Python
/// may drop them on any thread: the garbage collector runs wherever it is triggered, and
/// frameworks run sync views in threads (Django).
pub struct LoopContext {
    bridge: Arc<Bridge>,
    event_loop: Py<PyAny>,
    call_soon: Py<PyAny>,
    flush: Py<PyAny>,
    flush_pending: AtomicBool,
    /// The server is shutting down: event streams that start now end at once.
    stopping: AtomicBool,
    ready: Py<Ready>,
    app: Py<PyAny>,
    /// Makes the asyncio Task that runs one request: `asyncio.Task` with `task_kwargs`, or the
    /// loop's own `create_task` when the app installed a task factory.
    new_task: Py<PyAny>,
    task_kwargs: Option<Py<PyDict>>,
    pub error_log: Py<PyAny>,
    access_log: Option<Py<PyAny>>,
    template: ScopeTemplate,
    /// The cycles whose app is running, indexed by `Exchange::slot`.
    slots: Mutex<Slab>,
}

impl LoopContext {
    /// Queues an exchange for the I/O side and arranges one flush per loop turn.
    pub fn queue_io(&self, ex: &Arc<Exchange>) {
        if self.bridge.queue_io(ex) && !self.flush_pending.swap(true, Ordering::Relaxed) {
            Python::attach(|py| {
                if let Err(e) = self.call_soon.call1(py, (self.flush.clone_ref(py),)) {
                    // Without the flush the I/O side would never hear of this response.
                    e.print(py);
                    self.flush_pending.store(false, Ordering::Relaxed);
                    self.bridge.flush();
                }
            });
        }
    }

    pub fn ready(&self, py: Python<'_>) -> Py<PyAny> {
        self.ready.clone_ref(py).into_any()
    }

    pub fn ready_with(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, Ready::new(Some(value.unbind())))?.into_any())
    }

    pub fn create_future(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.event_loop
            .call_method0(py, intern!(py, "create_future"))
    }

    pub fn log_access(&self, line: &str) {
        if let Some(log) = &self.access_log {
            Python::attach(|py| {
                if let Err(e) = log.call1(py, (line,)) {
                    e.print(py);
                }
            });
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn release(&self, slot: usize) {
        // Dropped after the lock is let go: dropping a Python object may run Python code.
        let cycle = self.slots.lock().remove(slot);
        drop(cycle);
    }

    fn log(&self, py: Python<'_>, level: LogLevel, msg: &str) {
        if let Err(e) = self
            .error_log
            .call_method1(py, intern!(py, "log"), (level as i32, msg))
        {
            e.print(py);
        }
    }
}

/// A free-list slab: O(1) insert and remove, indices stay stable.
#[derive(Default)]
struct Slab {
    entries: Vec<Option<Cycle>>,
    free: Vec<usize>,
}

impl Slab {
    fn insert(&mut self, v: Cycle) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some(v);
                i
            }
            None => {
                self.entries.push(Some(v));
                self.entries.len() - 1
            }
        }
    }

    fn get(&self, py: Python<'_>, i: usize) -> Option<Cycle> {
        self.entries.get(i)?.as_ref().map(|c| c.clone_ref(py))
    }

    fn remove(&mut self, i: usize) -> Option<Cycle> {
        let taken = self.entries.get_mut(i)?.take();
        if taken.is_some() {
            self.free.push(i);
        }
        taken
    }

    fn all(&self, py: Python<'_>) -> Vec<Cycle> {
        self.entries
            .iter()
            .flatten()
            .map(|c| c.clone_ref(py))
            .collect()
    }

    fn drain(&mut self) -> Vec<Cycle> {
        self.free.clear();
        self.entries.drain(..).flatten().collect()
    }
}

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
                Tls::from_config(&settings, config.header_read()).map_err(PyOSError::new_err)?,
            ),
            None => None,
        };
        let metrics = match (&config.metrics_bind, serve_metrics) {
            (Some(addr), true) => Some(
                bind_metrics(addr, config.backlog)
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
                let log = AccessLog::new(access_format(&this.config)?);
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
        let (new_task, task_kwargs) = task_maker(&event_loop)?;
        let ctx = LoopContext {
            bridge: this.bridge.clone(),
            call_soon: event_loop.getattr(intern!(py, "call_soon"))?.unbind(),
            event_loop: event_loop.unbind(),
            flush: slf.getattr(intern!(py, "flush"))?.unbind(),
            flush_pending: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            ready: Py::new(py, Ready::new(None))?,
            app: app.unbind(),
            new_task,
            task_kwargs,
            error_log: error_log.unbind(),
            access_log: access_callable,
            template: ScopeTemplate::new(
                py,
                this.config.root_path.clone(),
                state.map(Bound::unbind),
            )?,
            slots: Mutex::new(Slab::default()),
        };
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
            match event {
                Event::Request(ex, head) => start_request(py, ctx, ex, &head),
                Event::WebSocket(ex, head) => start_websocket(py, ctx, ex, &head),
                Event::Wake(ex) => wake(py, ctx, &ex),
                Event::Log(level, msg) => ctx.log(py, level, &msg),
                Event::Access(line) => ctx.log_access(&line),
            }
        }
        *self.spare.borrow_mut() = events;
        Ok(())
    }

    /// Wakes the I/O thread for every response queued during this loop turn.
    fn flush(&self) {
        if let Some(ctx) = self.ctx.get() {
            ctx.flush_pending.store(false, Ordering::Relaxed);
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
            ctx.stopping.store(true, Ordering::Relaxed);
            let running = ctx.slots.lock().all(py);
            for cycle in running {
                if let Err(e) = cycle.on_shutdown(py) {
                    e.print(py);
                }
            }
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
        self.ctx
            .get()
            .map_or(0, |c| c.slots.lock().entries.iter().flatten().count())
    }

    /// Stops the I/O thread at once, dropping what is left, and waits for it.
    fn close(&self, py: Python<'_>) {
        let io = self.io.borrow_mut().take();
        if let Some(io) = io {
            py.detach(|| io.stop());
        }
        // Wake every app still waiting so that its task can end.
        if let Some(ctx) = self.ctx.get() {
            let cycles = ctx.slots.lock().drain();
            for c in cycles {
                if let Err(e) = c.on_wake(py) {
                    e.print(py);
                }
            }
        }
        let _ = self.drain(py);
    }
}

pub(crate) fn bind_metrics(addr: &str, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().ok()?,
            ))
        })
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "expected HOST:PORT")
        })?;
    match Listener::bind_tcp(host, port, backlog)? {
        Listener::Tcp(l) => Ok(l),
        Listener::Unix(_) => unreachable!("bind_tcp makes TCP listeners"),
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

fn start_request(py: Python<'_>, ctx: &Arc<LoopContext>, ex: Arc<Exchange>, head: &RequestHead) {
    if let Err(e) = try_start_request(py, ctx, ex, head) {
        ctx.log(
            py,
            LogLevel::Error,
            &format!("Could not start the ASGI application: {e}"),
        );
    }
}

fn try_start_request(
    py: Python<'_>,
    ctx: &Arc<LoopContext>,
    ex: Arc<Exchange>,
    head: &RequestHead,
) -> PyResult<()> {
    let scope = scope::build(py, head, &ctx.template)?;
    let head_request = head.method == http::Method::HEAD;
    let cycle = Py::new(py, HttpCycle::new(ex.clone(), ctx.clone(), head_request))?;
    start_app(py, ctx, &ex, scope, Cycle::Http(cycle))
}

fn start_websocket(py: Python<'_>, ctx: &Arc<LoopContext>, ex: Arc<Exchange>, head: &RequestHead) {
    let started = scope::build_websocket(py, head, &ctx.template).and_then(|scope| {
        let cycle = Py::new(py, WebSocketCycle::new(ex.clone(), ctx.clone()))?;
        start_app(py, ctx, &ex, scope, Cycle::Ws(cycle))
    });
    if let Err(e) = started {
        ctx.log(
            py,
            LogLevel::Error,
            &format!("Could not start the ASGI application: {e}"),
        );
    }
}

/// Registers the cycle for wake-ups and starts the app in an asyncio Task.
fn start_app(
    py: Python<'_>,
    ctx: &Arc<LoopContext>,
    ex: &Exchange,
    scope: Bound<'_, PyDict>,
    cycle: Cycle,
) -> PyResult<()> {
    let slot = ctx.slots.lock().insert(cycle.clone_ref(py));
    ex.set_slot(slot);
    let bound = cycle.bind(py);
    let receive = bound.getattr(intern!(py, "receive"))?;
    let send = bound.getattr(intern!(py, "send"))?;
    let started = ctx.app.call1(py, (scope, receive, send)).and_then(|coro| {
        let runner = AppRunner::new(coro, cycle.clone_ref(py), ctx.error_log.clone_ref(py));
        let kwargs = ctx.task_kwargs.as_ref().map(|k| k.bind(py));
        ctx.new_task.bind(py).call((runner,), kwargs)
    });
    if let Err(e) = started {
        // Still answer the client: finish() sends a 500.
        cycle.finish(py, true);
        return Err(e);
    }
    Ok(())
}

/// How to make a request's Task. `asyncio.Task` directly is the fast path; the explicit name
/// spares CPython from formatting a "Task-N" name for every request. An app's own task
/// factory is honoured, and then used as it is.
fn task_maker(event_loop: &Bound<'_, PyAny>) -> PyResult<(Py<PyAny>, Option<Py<PyDict>>)> {
    let py = event_loop.py();
    if !event_loop
        .call_method0(intern!(py, "get_task_factory"))?
        .is_none()
    {
        return Ok((
            event_loop.getattr(intern!(py, "create_task"))?.unbind(),
            None,
        ));
    }
    let task = py.import("asyncio")?.getattr(intern!(py, "Task"))?;
    let kwargs = PyDict::new(py);
    // `loop` is needed with `eager_start`: CPython 3.12.1 asks the argument, not the Task's
    // own loop, whether it is running.
    kwargs.set_item(intern!(py, "loop"), event_loop)?;
    kwargs.set_item(intern!(py, "name"), intern!(py, "rsgi-request"))?;
    if py.version_info() >= (3, 12) {
        // The app's first step runs at once, as the Task's own (current_task() is set): an
        // app that answers without waiting for anything never goes through the loop's queue.
        kwargs.set_item(intern!(py, "eager_start"), true)?;
    }
    Ok((task.unbind(), Some(kwargs.unbind())))
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

fn wake(py: Python<'_>, ctx: &LoopContext, ex: &Exchange) {
    let cycle = ctx.slots.lock().get(py, ex.slot());
    if let Some(cycle) = cycle {
        if let Err(e) = cycle.on_wake(py) {
            ctx.log(
                py,
                LogLevel::Error,
                &format!("Error while waking the ASGI application: {e}"),
            );
        }
    }
}
