//! Where access lines go: a file or standard stream written in batches by the I/O thread, or
//! the `rsgi.access` Python logger through the loop thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::handoff::bridge::{Bridge, Event};

/// Bytes buffered before a write is forced; the periodic flush writes the rest.
const FLUSH_AT: usize = 64 * 1024;

pub enum Target {
    /// An inherited descriptor (1 for stdout), never closed by us.
    Fd(i32),
    /// A file opened for appending, reopened on request (log rotation).
    Path(String),
}

pub struct Writer {
    target: Target,
    file: ManuallyDrop<File>,
    buf: Vec<u8>,
}

impl Writer {
    fn open(target: Target) -> io::Result<Writer> {
        let file = match &target {
            // SAFETY: the descriptor is inherited and stays open for the process's life; the
            // ManuallyDrop wrapper guarantees we never close it.
            Target::Fd(fd) => ManuallyDrop::new(unsafe { File::from_raw_fd(*fd) }),
            Target::Path(path) => {
                ManuallyDrop::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        Ok(Writer {
            target,
            file,
            buf: Vec::with_capacity(FLUSH_AT),
        })
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            // A full disk or closed stream must not take the server down: drop the batch.
            let _ = self.file.write_all(&self.buf);
            self.buf.clear();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.flush();
        if let Target::Path(_) = self.target {
            // SAFETY: we opened this file ourselves and drop it exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.file) };
        }
    }
}

/// The destination of access lines.
pub enum Sink {
    Write {
        writer: Mutex<Writer>,
        prefix: String,
    },
    Python(Arc<Bridge>),
}

impl Sink {
    /// Lines written straight to `target`, each starting with `prefix` (e.g. `INFO:     `).
    pub fn write(target: Target, prefix: String) -> io::Result<Sink> {
        Ok(Sink::Write {
            writer: Mutex::new(Writer::open(target)?),
            prefix,
        })
    }

    pub fn line(&self, line: String) {
        match self {
            Sink::Write { writer, prefix } => {
                let mut w = writer.lock();
                w.buf.extend_from_slice(prefix.as_bytes());
                w.buf.extend_from_slice(line.as_bytes());
                w.buf.push(b'\n');
                if w.buf.len() >= FLUSH_AT {
                    w.flush();
                }
            }
            Sink::Python(bridge) => bridge.push(Event::Access(line)),
        }
    }

    /// Writes what is buffered; called periodically and at shutdown.
    pub fn flush(&self) {
        if let Sink::Write { writer, .. } = self {
            writer.lock().flush();
        }
    }

    /// Reopens a log file after it was moved away (USR1 from logrotate).
    pub fn reopen(&self) -> io::Result<()> {
        if let Sink::Write { writer, .. } = self {
            let mut w = writer.lock();
            w.flush();
            if let Target::Path(path) = &w.target {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                let old = std::mem::replace(&mut w.file, ManuallyDrop::new(file));
                drop(ManuallyDrop::into_inner(old));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_batched_and_reopened() {
        let dir = std::env::temp_dir().join(format!("rsgi-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let sink = Sink::write(Target::Path(path.display().to_string()), "> ".into()).unwrap();
        sink.line("one".into());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "",
            "buffered until a flush"
        );
        sink.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "> one\n");
        let moved = dir.join("access.log.1");
        std::fs::rename(&path, &moved).unwrap();
        sink.reopen().unwrap();
        sink.line("two".into());
        sink.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "> two\n");
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "> one\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
