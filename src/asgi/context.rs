//! `LoopContext`: the loop thread's side of one server. It starts each request's app in an
//! asyncio Task, keeps the running cycles, handles what the I/O thread hands over, and batches
//! what goes back to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::awaitable::Ready;
use super::http::HttpCycle;
use super::runner::{AppRunner, Cycle};
use super::scope::{self, ScopeTemplate};
use super::websocket::WebSocketCycle;
use crate::handoff::bridge::{Bridge, Event, LogLevel};
use crate::handoff::exchange::Exchange;
use crate::handoff::head::RequestHead;

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
    pub fn new(
        bridge: Arc<Bridge>,
        event_loop: &Bound<'_, PyAny>,
        flush: Bound<'_, PyAny>,
        app: Bound<'_, PyAny>,
        error_log: Bound<'_, PyAny>,
        access_log: Option<Py<PyAny>>,
        template: ScopeTemplate,
    ) -> PyResult<Self> {
        let py = event_loop.py();
        let (new_task, task_kwargs) = task_maker(event_loop)?;
        Ok(LoopContext {
            bridge,
            call_soon: event_loop.getattr(intern!(py, "call_soon"))?.unbind(),
            event_loop: event_loop.clone().unbind(),
            flush: flush.unbind(),
            flush_pending: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            ready: Py::new(py, Ready::new(None))?,
            app: app.unbind(),
            new_task,
            task_kwargs,
            error_log: error_log.unbind(),
            access_log,
            template,
            slots: Mutex::new(Slab::default()),
        })
    }

    /// One event from the I/O thread.
    pub fn handle(self: &Arc<Self>, py: Python<'_>, event: Event) {
        match event {
            Event::Request(ex, head) => start_request(py, self, ex, &head),
            Event::WebSocket(ex, head) => start_websocket(py, self, ex, &head),
            Event::Wake(ex) => wake(py, self, &ex),
            Event::Log(level, msg) => self.log(py, level, &msg),
            Event::Access(line) => self.log_access(&line),
            Event::Release(body) => body.release(py),
        }
    }

    /// The batch of this loop turn went to the I/O thread.
    pub fn flushed(&self) {
        self.flush_pending.store(false, Ordering::Relaxed);
    }

    /// The server stops accepting: every running cycle hears of it (event streams end).
    pub fn shutdown(&self, py: Python<'_>) {
        self.stopping.store(true, Ordering::Relaxed);
        let running = self.slots.lock().all(py);
        for cycle in running {
            if let Err(e) = cycle.on_shutdown(py) {
                e.print(py);
            }
        }
    }

    /// Requests whose app is still running.
    pub fn running(&self) -> usize {
        self.slots.lock().entries.iter().flatten().count()
    }

    /// Wakes every app still waiting, after the I/O thread stopped, so that its task ends.
    pub fn wake_all(&self, py: Python<'_>) {
        let cycles = self.slots.lock().drain();
        for c in cycles {
            if let Err(e) = c.on_wake(py) {
                e.print(py);
            }
        }
    }

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

    /// The bytes of a response body, lent to the I/O side when large.
    pub fn body(&self, body: &Bound<'_, PyAny>) -> PyResult<bytes::Bytes> {
        match body.cast::<pyo3::types::PyBytes>() {
            Ok(b) => Ok(crate::asgi::lend::bytes_of(b, &self.bridge)),
            Err(_) => super::message::body_bytes(body),
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
