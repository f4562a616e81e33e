//! Large response bodies lent to the I/O thread without a copy.
//!
//! A Python `bytes` object is immutable, and its buffer stays where it is for as long as a
//! reference to the object is held. So the I/O thread may write straight from that buffer,
//! without the GIL, while a [`Lent`] owns a reference. The reference itself is only moved on
//! the I/O thread, never touched: when hyper is done with the bytes, the reference goes back to
//! the loop thread in the event queue (`Event::Release`), which releases it with the GIL held.

use std::sync::Arc;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::handoff::bridge::{Bridge, Event};
use crate::handoff::Owned;

/// Bodies at least this large are lent; smaller ones are copied, which costs less than the
/// hand-back (an event, and a reference count on the loop thread).
pub const LEND_MIN: usize = 8 * 1024;

/// A `bytes` object's buffer, owned by the I/O side until its last `Bytes` clone is dropped.
struct Lent {
    ptr: *const u8,
    len: usize,
    /// Taken when the bytes go back to the loop thread.
    obj: Option<Owned>,
    bridge: Arc<Bridge>,
}

// SAFETY: `ptr` points into the immutable buffer of the `bytes` object that `obj` keeps alive,
// so reading it from any thread is sound; `obj` is only moved, into `Event::Release`.
unsafe impl Send for Lent {}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the `Send` impl: the buffer lives, unchanged, as long as `obj`, which is
        // only taken in `drop`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take() {
            self.bridge.push(Event::Release(obj));
        }
    }
}

/// The bytes of `body` for the I/O side: lent when large, copied otherwise.
pub fn bytes_of(body: &Bound<'_, PyBytes>, bridge: &Arc<Bridge>) -> Bytes {
    let data = body.as_bytes();
    if data.len() < LEND_MIN {
        return Bytes::copy_from_slice(data);
    }
    Bytes::from_owner(Lent {
        ptr: data.as_ptr(),
        len: data.len(),
        obj: Some(Owned::new(body.clone().unbind().into_any())),
        bridge: bridge.clone(),
    })
}
