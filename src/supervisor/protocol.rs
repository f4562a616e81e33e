//! What a worker tells its master, defined once: the bytes it writes to its status pipe and
//! the exit code of a failed boot. The worker's side (python/rsgi/supervisors/prefork.py) reads
//! them from the extension module (`_rsgi.READY`, ...), so the two sides cannot drift apart.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Written once the worker's core listens: it serves.
pub const READY: u8 = b'R';
/// Written by the worker's event loop every so often (`--timeout-worker`): it is not hung.
pub const BEAT: u8 = b'.';
/// Written once the worker reached its request limit: it asks for a replacement.
pub const RETIRE: u8 = b'M';
/// Exit status of a worker that could not boot (app import or lifespan startup failed); the
/// master then exits with it too, or abandons the reload that started the worker.
pub const BOOT_FAILURE: i32 = 3;

/// One byte of a worker's status pipe.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Message {
    Ready,
    Beat,
    Retire,
}

impl Message {
    /// `None` for a byte the protocol does not define.
    pub fn from_byte(byte: u8) -> Option<Message> {
        match byte {
            READY => Some(Message::Ready),
            BEAT => Some(Message::Beat),
            RETIRE => Some(Message::Retire),
            _ => None,
        }
    }
}

/// Adds the protocol's constants to the extension module.
pub fn export(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("READY", PyBytes::new(py, &[READY]))?;
    m.add("BEAT", PyBytes::new(py, &[BEAT]))?;
    m.add("RETIRE", PyBytes::new(py, &[RETIRE]))?;
    m.add("BOOT_FAILURE", BOOT_FAILURE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_byte_is_distinct_and_parsed() {
        assert_eq!(Message::from_byte(READY), Some(Message::Ready));
        assert_eq!(Message::from_byte(BEAT), Some(Message::Beat));
        assert_eq!(Message::from_byte(RETIRE), Some(Message::Retire));
        assert_eq!(Message::from_byte(b'x'), None);
    }
}
