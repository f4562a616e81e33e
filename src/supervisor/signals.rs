//! The master's signals, through a self-pipe: the handler only writes the signal number into a
//! non-blocking pipe, and the master loop reads it when `poll` wakes up. Workers get the
//! previous dispositions back right after the fork.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{
    sigaction, sigprocmask, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};

/// Every signal the master handles.
pub const HANDLED: [Signal; 9] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCHLD,
];

/// Write end of the self-pipe, for the handler; -1 while no `SignalPipe` is installed.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signum: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let saved = Errno::last_raw();
    let byte = signum as u8;
    // SAFETY: write(2) is async-signal-safe; `byte` outlives the call. A full pipe drops the
    // byte, which is fine: the master only needs to know that the signal came at all.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    Errno::set_raw(saved);
}

pub struct SignalPipe {
    read: OwnedFd,
    write: OwnedFd,
    previous: Vec<(Signal, SigAction)>,
}

impl SignalPipe {
    /// Creates the pipe and installs the handlers.
    pub fn install() -> io::Result<Self> {
        let (read, write) = super::pipe()?;
        PIPE_WRITE.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = handler();
        let mut previous = Vec::with_capacity(HANDLED.len());
        for signal in HANDLED {
            // SAFETY: `on_signal` is async-signal-safe (one write(2), errno preserved).
            match unsafe { sigaction(signal, &action) } {
                Ok(old) => previous.push((signal, old)),
                Err(e) => {
                    restore(&previous);
                    PIPE_WRITE.store(-1, Ordering::Relaxed);
                    return Err(e.into());
                }
            }
        }
        // A re-executed master inherits them blocked (see `block_for_exec`): the ones that
        // arrived meanwhile are delivered now.
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&handled_set()), None);
        Ok(SignalPipe {
            read,
            write,
            previous,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.read.as_fd()
    }

    /// The pipe's descriptors, which a worker must close.
    pub fn raw_fds(&self) -> [RawFd; 2] {
        [self.read.as_raw_fd(), self.write.as_raw_fd()]
    }

    /// Signals received since the last call, oldest first (SIGCHLD at most once).
    pub fn take(&self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        let mut found = Vec::new();
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for &b in &buf[..n] {
                        if let Ok(signal) = Signal::try_from(b as i32) {
                            // Every other signal counts: two TERMs escalate, two TTINs add two.
                            if signal != Signal::SIGCHLD || !found.contains(&signal) {
                                found.push(signal);
                            }
                        }
                    }
                }
            }
        }
        found
    }

    /// Before `execve`: block the master's signals. The mask and pending signals survive
    /// `execve`, so a signal sent while the new image starts waits for its handlers instead
    /// of meeting a default action (which would end the process for most of them).
    pub fn block_for_exec(&self) {
        let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None);
    }

    /// After a failed `execve`.
    pub fn unblock(&self) {
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&handled_set()), None);
    }

    /// In a freshly forked worker: puts back the dispositions the process had before, except
    /// that the control signals are ignored until the worker's event loop handles them: the
    /// terminal's Ctrl-C and Ctrl-\ reach the workers too, and they are the master's to act on.
    /// Not TERM and USR2, the master's graceful stops: until then they end the worker.
    pub fn restore_in_child(&self) {
        PIPE_WRITE.store(-1, Ordering::Relaxed);
        restore(&self.previous);
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        for signal in HANDLED {
            if !matches!(signal, Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGCHLD) {
                // SAFETY: SIG_IGN involves no handler code.
                let _ = unsafe { sigaction(signal, &ignore) };
            }
        }
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        restore(&self.previous);
        PIPE_WRITE.store(-1, Ordering::Relaxed);
    }
}

fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HANDLED {
        set.add(signal);
    }
    set
}

fn handler() -> SigAction {
    SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    )
}

fn restore(previous: &[(Signal, SigAction)]) {
    for (signal, old) in previous {
        // SAFETY: re-installs what `sigaction` returned for this signal earlier.
        let _ = unsafe { sigaction(*signal, old) };
    }
}
