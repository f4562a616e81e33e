//! What the I/O thread and the event-loop thread hand each other, and nothing else: the
//! request's lifecycle ([`exchange`]), the batched queues between the threads ([`bridge`]),
//! the request head as plain data ([`head`]) and a WebSocket's messages ([`ws`]).
//!
//! Both sides depend on this module and it depends on neither: `http` and `ws` (the I/O side)
//! and `asgi` (the loop side) meet here.

pub mod bridge;
pub mod exchange;
pub mod head;
pub mod ws;

use std::ptr::NonNull;

use pyo3::prelude::*;
use pyo3::{ffi, Py, PyAny};

/// A strong reference to a Python object that only the loop thread releases, with
/// [`Owned::release`]. Dropped anywhere else it is leaked rather than released without the
/// GIL; that only happens to events still queued when the process ends.
pub struct Owned(NonNull<ffi::PyObject>);

// SAFETY: the pointer is a strong reference that this type never dereferences; it is only
// turned back into a `Py` by `release`, which holds the GIL.
unsafe impl Send for Owned {}

impl Owned {
    pub fn new(obj: Py<PyAny>) -> Self {
        // SAFETY: `into_ptr` gives a non-null strong reference, now owned by this value.
        Owned(unsafe { NonNull::new_unchecked(obj.into_ptr()) })
    }

    pub fn release(self, py: Python<'_>) {
        // SAFETY: the pointer is the strong reference `new` took over; the GIL is held.
        drop(unsafe { Bound::<PyAny>::from_owned_ptr(py, self.0.as_ptr()) });
    }
}
