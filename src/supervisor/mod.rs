//! `rsgi -w N`: the pre-fork master, as Python drives it (`rsgi._rsgi.Supervisor`).
//!
//! The master binds the sockets, forks the workers and watches them; it starts no thread and
//! no tokio runtime, so every fork copies a single-threaded process. Each worker calls back
//! into Python (`rsgi.supervisors.prefork.worker_main`), which runs the ordinary one-process server on
//! the inherited sockets and never returns. The master's rules are `policy.rs`, a pure state
//! machine; `master.rs` is the loop that feeds it and performs what it decides. What a worker
//! tells the master is `protocol.rs`, exported to Python.

mod master;
mod metrics;
mod notify;
mod policy;
pub mod protocol;
mod signals;
mod sockets;
mod state;
mod usage;

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::unistd::{fork, ForkResult, Pid};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::config::CoreConfig;
use master::{Hooks, Master};
use policy::{Level, Settings};
use signals::SignalPipe;
use sockets::Sockets;
use state::{Inherited, STATE_VAR};

#[pyclass(module = "rsgi._rsgi", unsendable)]
pub struct Supervisor {
    master: RefCell<Option<Master>>,
}

#[pymethods]
impl Supervisor {
    /// Binds the sockets `config` names, or serves on `fds` (listening sockets Python bound
    /// for several `--bind` addresses), or takes over those of the master image this process
    /// replaced, after a HUP with `--preload`.
    #[new]
    #[pyo3(signature = (config, fds=None))]
    fn new(config: &Bound<'_, PyAny>, fds: Option<Vec<RawFd>>) -> PyResult<Self> {
        let core: CoreConfig = config.extract()?;
        let workers: usize = config.getattr("workers")?.extract()?;
        let reload_by_exec = config.getattr("preload")?.extract::<bool>()?
            && config
                .getattr("app")?
                .is_instance_of::<pyo3::types::PyString>();
        let settings = Settings {
            workers,
            reload_by_exec,
            pid_file: config.getattr("pid")?.extract()?,
            limit: config.getattr("limit_max_requests")?.extract()?,
            jitter: config.getattr("limit_max_requests_jitter")?.extract()?,
            timeout: duration(config.getattr("timeout_worker")?.extract()?)?,
            max_rss: config.getattr("limit_max_rss")?.extract()?,
            graceful: duration(config.getattr("timeout_graceful_shutdown")?.extract()?)?
                .unwrap_or_default(),
            shutdown_delay: duration(config.getattr("shutdown_delay")?.extract()?)?
                .unwrap_or_default(),
        };
        let reuse_port: bool = config.getattr("reuse_port")?.extract()?;
        let inherited = take_inherited().map_err(PyValueError::new_err)?;
        let mut notes = Vec::new();
        let sockets = match &inherited {
            Some(state) => Sockets::adopt(
                &state.listeners,
                state.reserve,
                state.uds.clone(),
                core.backlog,
            ),
            None if fds.is_some() => {
                Sockets::adopt(fds.as_deref().unwrap_or_default(), None, None, core.backlog)
            }
            None => Sockets::open(&core, reuse_port).map(|(sockets, warning)| {
                notes.extend(warning.map(|w| (Level::Warning, w)));
                sockets
            }),
        }
        .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let metrics_bind: Option<String> = config.getattr("metrics_bind")?.extract()?;
        let metrics = match &metrics_bind {
            Some(addr) => Some(
                metrics::MetricsPort::bind(addr, core.backlog)
                    .map_err(|e| PyOSError::new_err(format!("--metrics-bind {addr}: {e}")))?,
            ),
            None => None,
        };
        let master = Master::new(settings, sockets, inherited, notes, metrics)
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(Supervisor {
            master: RefCell::new(Some(master)),
        })
    }

    /// Where the server listens, as `http://host:port` or `unix:path`.
    #[getter]
    fn addresses(&self) -> Vec<String> {
        self.master
            .borrow()
            .as_ref()
            .map_or_else(Vec::new, |m| m.addresses().to_vec())
    }

    /// Workers left running by the master image this process replaced.
    #[getter]
    fn adopted(&self) -> usize {
        self.master
            .borrow()
            .as_ref()
            .map_or(0, Master::adopted_workers)
    }

    /// Runs the master until it stops; returns the exit code. In each forked worker,
    /// `worker_main(fds, channel_fd, max_requests, serial)` is called and must not return.
    /// `server_hook(name, *numbers)` calls the master's server hooks (pre_fork, ...).
    #[pyo3(signature = (worker_main, logger, environ=None, server_hook=None))]
    fn run(
        &self,
        py: Python<'_>,
        worker_main: Py<PyAny>,
        logger: Py<PyAny>,
        environ: Option<Py<PyAny>>,
        server_hook: Option<Py<PyAny>>,
    ) -> PyResult<i32> {
        let mut master = self.take()?;
        let hooks = Hooks {
            worker_main: Some(worker_main),
            logger,
            environ,
            server_hook,
        };
        master.run(py, &hooks)
    }

    /// Gives up without serving: stops the workers adopted from a previous image, if any,
    /// removes the files this master made, and returns `code`.
    #[pyo3(signature = (logger, code))]
    fn close(&self, py: Python<'_>, logger: Py<PyAny>, code: i32) -> PyResult<i32> {
        let mut master = self.take()?;
        let hooks = Hooks {
            worker_main: None,
            logger,
            environ: None,
            server_hook: None,
        };
        master.abandon(py, &hooks, code)
    }
}

impl Supervisor {
    fn take(&self) -> PyResult<Master> {
        self.master
            .borrow_mut()
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the supervisor has already run"))
    }
}

fn duration(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| {
            Duration::try_from_secs_f64(s.max(0.0))
                .map_err(|e| PyValueError::new_err(format!("bad duration {s}: {e}")))
        })
        .transpose()
}

/// The state a previous master image left in the environment for this process, if any.
fn take_inherited() -> Result<Option<Inherited>, String> {
    let Ok(text) = std::env::var(STATE_VAR) else {
        return Ok(None);
    };
    // Single-threaded: nothing else reads the environment now.
    std::env::remove_var(STATE_VAR);
    let state = Inherited::decode(&text)?;
    Ok((state.pid == std::process::id()).then_some(state))
}

/// A pipe whose ends are close-on-exec and non-blocking.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe()?;
    for fd in [&read, &write] {
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    }
    Ok((read, write))
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: the caller owns `fd` for the duration of the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// What a new worker is given.
struct WorkerArgs {
    fds: Vec<RawFd>,
    channel: RawFd,
    max_requests: Option<u64>,
    serial: u64,
}

/// Forks a worker. In the child, `worker_main` runs and the process exits; only the parent
/// returns, with the child's pid. `private` are the master's descriptors the child closes.
fn fork_worker(
    py: Python<'_>,
    worker_main: &Py<PyAny>,
    args: WorkerArgs,
    private: &[RawFd],
    signals: Option<&SignalPipe>,
    counters: Option<&'static crate::metrics::Metrics>,
) -> io::Result<Pid> {
    // SAFETY: called with the GIL held, as Python's own os.fork() does; it takes the
    // interpreter's locks so that the child gets them in a consistent state.
    unsafe { pyo3::ffi::PyOS_BeforeFork() };
    // SAFETY: the master has no other thread (it starts none), so the child's copy of every
    // lock is consistent; the child only runs Python (re-initialised below) and exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: in the child, with the GIL held, right after fork(), as documented.
            unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
            if let Some(signals) = signals {
                signals.restore_in_child();
            }
            for &fd in private {
                // SAFETY: these descriptors belong to the master; the child never uses them.
                unsafe { libc::close(fd) };
            }
            if let Some(counters) = counters {
                crate::metrics::use_slot(counters);
            }
            let code = match worker_main
                .call1(py, (args.fds, args.channel, args.max_requests, args.serial))
            {
                Ok(value) => value.extract::<i32>(py).unwrap_or(1),
                Err(e) => {
                    e.print(py);
                    1
                }
            };
            // SAFETY: ends the worker without unwinding into the master's stack frames.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            // SAFETY: in the parent, with the GIL held, right after fork().
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
            Ok(child)
        }
        Err(e) => {
            // SAFETY: as above; the fork failed, so this process is the parent.
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
            Err(e.into())
        }
    }
}
