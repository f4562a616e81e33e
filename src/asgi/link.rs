//! What `HttpCycle` and `WebSocketCycle` share: the loop thread's end of an exchange, and the
//! waiting and waking of the app's `receive()` and `send()`.
//!
//! A cycle says what differs through [`Protocol`] (which message is ready, what a suspended
//! `send()` waits for); [`receive`] and [`on_wake`] do the rest the same way for both.
//!
//! Invariants:
//! - Whoever leaves a future pending sets `loop_waiting` under the exchange's lock first, so
//!   that the I/O side wakes this loop (and [`on_wake`] runs) on its next change.
//! - One `receive()` and one `send()` future at most are kept: an app awaits each call before
//!   it makes the next, and a second one would replace the first.

use std::sync::Arc;

use parking_lot::MutexGuard;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::context::LoopContext;
use super::message::disconnected;
use crate::handoff::exchange::{Exchange, State, NO_SLOT, RESPONSE_LOW_WATER};

/// The loop thread's end of one exchange: the exchange, the loop it runs on, and the futures
/// the app waits on.
pub(crate) struct Link {
    pub ex: Arc<Exchange>,
    pub ctx: Arc<LoopContext>,
    /// A `receive()` that found no message ready.
    recv_waiter: Option<Py<PyAny>>,
    /// A `send()` that queued past the high-water mark, waiting for the queue to drain.
    drain_waiter: Option<Py<PyAny>>,
}

impl Link {
    pub fn new(ex: Arc<Exchange>, ctx: Arc<LoopContext>) -> Self {
        Link {
            ex,
            ctx,
            recv_waiter: None,
            drain_waiter: None,
        }
    }

    /// Wakes the I/O side for this exchange, batched with every other send of this loop turn.
    pub fn notify_io(&self, st: &mut State) {
        if st.queue_for_io() {
            self.ctx.queue_io(&self.ex);
        }
    }

    /// The exchange, locked, while the client is still there; `ClientDisconnected` after.
    pub fn lock_open(&self) -> PyResult<MutexGuard<'_, State>> {
        let st = self.ex.lock();
        if st.cut_off() {
            return Err(disconnected());
        }
        Ok(st)
    }

    /// The future a `send()` returns to wait for the queue to drain; the caller has called
    /// `wait_for_io`.
    pub fn wait_drain(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let fut = self.ctx.create_future(py)?;
        self.drain_waiter = Some(fut.clone_ref(py));
        Ok(fut)
    }

    /// The app has ended: nothing is left to wake, and its slot goes back to the loop.
    pub fn release(&mut self) {
        self.recv_waiter = None;
        self.drain_waiter = None;
        let slot = self.ex.slot();
        if slot != NO_SLOT {
            self.ex.set_slot(NO_SLOT);
            self.ctx.release(slot);
        }
    }
}

/// What the HTTP and WebSocket cycles differ in, for [`receive`] and [`on_wake`].
pub(crate) trait Protocol {
    fn link(&self) -> &Link;
    fn link_mut(&mut self) -> &mut Link;
    /// The next `receive()` message if one is ready; otherwise sets `loop_waiting` and
    /// returns None.
    fn try_receive<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>>;
    /// With the exchange locked: the queued bytes a suspended `send()` waits to see drain,
    /// or None when it cannot go on (the client has gone).
    fn unsent(&self, st: &State) -> Option<usize>;
}

/// `receive()`: the message at once when one is ready, else a future [`on_wake`] resolves.
pub(crate) fn receive<P: Protocol>(cycle: &mut P, py: Python<'_>) -> PyResult<Py<PyAny>> {
    if let Some(msg) = cycle.try_receive(py)? {
        return cycle.link().ctx.ready_with(py, msg.into_any());
    }
    let link = cycle.link_mut();
    let fut = link.ctx.create_future(py)?;
    link.recv_waiter = Some(fut.clone_ref(py));
    Ok(fut)
}

/// Called by the loop thread when the I/O side reported a change: settles the pending
/// `receive()` and `send()` that it lets go on, and leaves the others waiting.
pub(crate) fn on_wake<P: Protocol>(cycle: &mut P, py: Python<'_>) -> PyResult<()> {
    if let Some(fut) = cycle.link_mut().recv_waiter.take() {
        match cycle.try_receive(py)? {
            Some(msg) => resolve(py, &fut, msg.into_any())?,
            None => cycle.link_mut().recv_waiter = Some(fut),
        }
    }
    if let Some(fut) = cycle.link_mut().drain_waiter.take() {
        let mut st = cycle.link().ex.lock();
        match cycle.unsent(&st) {
            None => {
                drop(st);
                reject(py, &fut, disconnected())?;
            }
            Some(queued) if queued < RESPONSE_LOW_WATER => {
                drop(st);
                resolve(py, &fut, py.None().into_bound(py))?;
            }
            Some(_) => {
                st.wait_for_io();
                drop(st);
                cycle.link_mut().drain_waiter = Some(fut);
            }
        }
    }
    Ok(())
}

fn resolve(py: Python<'_>, fut: &Py<PyAny>, value: Bound<'_, PyAny>) -> PyResult<()> {
    let fut = fut.bind(py);
    if !fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        fut.call_method1(intern!(py, "set_result"), (value,))?;
    }
    Ok(())
}

fn reject(py: Python<'_>, fut: &Py<PyAny>, err: PyErr) -> PyResult<()> {
    let fut = fut.bind(py);
    if !fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        fut.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
    }
    Ok(())
}
