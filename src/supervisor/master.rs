//! The master loop: the effects of the master's rules (`policy.rs`). It is single-threaded and
//! synchronous: one `poll` on the signal pipe and the workers' status pipes, with the GIL
//! released while it waits. What it sees (a signal, a status byte, a child's exit, a wake-up)
//! becomes an [`Event`] for the [`Policy`]; what the policy answers (fork, signal, log,
//! notify, re-exec, exit) is done here, and nothing else is decided here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use pyo3::prelude::*;
use pyo3::types::PyAnyMethods;

use super::metrics::MetricsPort;
use super::notify::{monotonic_usec, Notifier};
use super::policy::{
    Action, Event, Exit, HandedWorker, Handover, Hook, Level, Notice, Policy, Settings,
};
use super::protocol::Message;
use super::signals::SignalPipe;
use super::sockets::Sockets;
use super::state::{Inherited, InheritedWorker, STATE_VAR};
use super::usage;

/// The longest the master sleeps between two looks at its workers.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// How often the workers' memory is sampled (`--limit-max-rss`).
const RSS_EVERY: Duration = Duration::from_secs(1);

/// The Python side the master calls into.
pub struct Hooks {
    /// `worker_main(fds, channel_fd, max_requests, serial)`, run in each forked worker.
    pub worker_main: Option<Py<PyAny>>,
    /// A `logging.Logger`.
    pub logger: Py<PyAny>,
    /// The environment a re-executed master gets (a mapping); `os.environ` when `None`.
    pub environ: Option<Py<PyAny>>,
    /// `server_hook(name, *numbers)`, which calls the server hook `name` if it is set.
    pub server_hook: Option<Py<PyAny>>,
}

/// What the loop holds for a worker process; its state is the policy's.
struct Child {
    pid: Pid,
    /// Read end of the worker's status pipe; `None` once it reached end of file.
    channel: Option<OwnedFd>,
    /// Its slot of the shared metrics (`--metrics-bind`).
    slot: Option<usize>,
}

pub struct Master {
    policy: Policy,
    sockets: Sockets,
    notify: Option<Notifier>,
    signals: Option<SignalPipe>,
    children: Vec<Child>,
    notes: Vec<(Level, String)>,
    /// The pid file this master wrote, to remove at exit.
    pid_file: Option<PathBuf>,
    /// Set by [`Action::Exit`].
    exit_code: Option<i32>,
    /// `--metrics-bind`: the endpoint and the workers' shared counters.
    metrics: Option<MetricsPort>,
    /// When the workers' memory is next sampled (`--limit-max-rss`).
    next_rss: Instant,
}

impl Master {
    pub fn new(
        settings: Settings,
        sockets: Sockets,
        inherited: Option<Inherited>,
        notes: Vec<(Level, String)>,
        metrics: Option<MetricsPort>,
    ) -> io::Result<Self> {
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        let (handover, children) = match inherited {
            Some(state) => adopt(state),
            None => (None, Vec::new()),
        };
        Ok(Master {
            policy: Policy::new(settings, seed, handover, Instant::now()),
            sockets,
            notify: Notifier::from_env()?,
            signals: None,
            children,
            notes,
            pid_file: None,
            exit_code: None,
            metrics,
            next_rss: Instant::now(),
        })
    }

    pub fn addresses(&self) -> &[String] {
        self.sockets.addresses()
    }

    pub fn adopted_workers(&self) -> usize {
        self.children.len()
    }

    /// Serves until stopped; returns the exit code.
    pub fn run(&mut self, py: Python<'_>, hooks: &Hooks) -> PyResult<i32> {
        self.signals = Some(SignalPipe::install()?);
        for (level, note) in std::mem::take(&mut self.notes) {
            self.log(py, hooks, level, &note);
        }
        let start = Event::Start {
            pid: std::process::id(),
            addresses: self.sockets.addresses().to_vec(),
        };
        if let Err(e) = self.feed(py, hooks, start) {
            self.finish();
            return Err(e.into());
        }
        self.serve(py, hooks)
    }

    /// Stops the adopted workers (a re-executed master that cannot load the app) and cleans up.
    pub fn abandon(&mut self, py: Python<'_>, hooks: &Hooks, code: i32) -> PyResult<i32> {
        self.signals = Some(SignalPipe::install()?);
        self.feed(py, hooks, Event::Abandon { code })?;
        self.serve(py, hooks)
    }

    fn serve(&mut self, py: Python<'_>, hooks: &Hooks) -> PyResult<i32> {
        let code = self.main_loop(py, hooks);
        self.finish();
        code
    }

    fn main_loop(&mut self, py: Python<'_>, hooks: &Hooks) -> PyResult<i32> {
        loop {
            let signals = self
                .signals
                .as_ref()
                .map_or_else(Vec::new, SignalPipe::take);
            for signal in signals {
                self.feed(py, hooks, Event::Signal(signal))?;
            }
            for (pid, message) in self.read_channels() {
                self.feed(py, hooks, Event::Message { pid, message })?;
            }
            if let Some(metrics) = &mut self.metrics {
                metrics.step(self.policy.serving());
            }
            for (pid, status) in self.reap() {
                self.feed(py, hooks, Event::Exited { pid, status })?;
            }
            for (pid, bytes) in self.sample_rss() {
                self.feed(py, hooks, Event::Rss { pid, bytes })?;
            }
            self.feed(py, hooks, Event::Tick)?;
            if let Some(code) = self.exit_code {
                return Ok(code);
            }
            self.wait(py);
        }
    }

    fn finish(&mut self) {
        self.sockets.close();
        self.sockets.remove_files();
        self.remove_pid_file();
        self.signals = None;
    }

    /// Hands `event` to the policy and does what it answers. The outcome of a fork or of a
    /// failed re-exec goes back to the policy at once, before anything else happens (its
    /// answers to it nest at most as deep as there are workers to fork). Fails only when the
    /// pid file cannot be written.
    fn feed(&mut self, py: Python<'_>, hooks: &Hooks, event: Event) -> io::Result<()> {
        for action in self.policy.handle(event, Instant::now()) {
            if let Some(outcome) = self.perform(py, hooks, action)? {
                self.feed(py, hooks, outcome)?;
            }
        }
        Ok(())
    }

    fn perform(
        &mut self,
        py: Python<'_>,
        hooks: &Hooks,
        action: Action,
    ) -> io::Result<Option<Event>> {
        match action {
            Action::Log(level, message) => self.log(py, hooks, level, &message),
            Action::Hook(hook) => call_hook(py, hooks, hook),
            Action::WritePidFile(path) => self.write_pid_file(&path)?,
            Action::Notify(notice) => self.notify(&notice),
            Action::Fork {
                serial,
                max_requests,
            } => return Ok(Some(self.spawn(py, hooks, serial, max_requests))),
            Action::Kill { pid, signal } => {
                let _ = kill(pid, signal);
            }
            Action::Inspect { pid } => {
                let stopped = usage::read(pid).is_some_and(|u| u.stopped);
                return Ok(Some(Event::Inspected { pid, stopped }));
            }
            Action::CloseSockets => self.sockets.close(),
            Action::ReopenLogs => reopen_logs(py),
            Action::RecordExit(reason) => {
                if let Some(metrics) = &mut self.metrics {
                    metrics.exited(reason.as_str());
                }
            }
            Action::ReExec(handover) => {
                let error = self.reexec(py, hooks, handover);
                return Ok(Some(Event::ReExecFailed { error }));
            }
            Action::Exit(code) => self.exit_code = Some(code),
        }
        Ok(None)
    }

    // -- waiting ---------------------------------------------------------------------

    fn wait(&self, py: Python<'_>) {
        let now = Instant::now();
        let until = [
            Some(now + MAX_WAIT),
            self.policy.next_deadline(now),
            self.policy.wants_rss().then_some(self.next_rss),
            self.metrics.as_ref().and_then(MetricsPort::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now);
        let timeout = until.saturating_duration_since(now);
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.children.len() + 1);
        if let Some(signals) = &self.signals {
            fds.push(pollfd(signals.fd().as_raw_fd(), libc::POLLIN));
        }
        fds.extend(
            self.children
                .iter()
                .filter_map(|c| c.channel.as_ref())
                .map(|c| pollfd(c.as_raw_fd(), libc::POLLIN)),
        );
        if let Some(metrics) = &self.metrics {
            fds.extend(
                metrics
                    .poll_fds()
                    .into_iter()
                    .map(|(fd, ev)| pollfd(fd, ev)),
            );
        }
        // Round up, so that a deadline is past when poll returns.
        let millis = (timeout.as_micros().div_ceil(1000)).min(i32::MAX as u128) as libc::c_int;
        py.detach(move || {
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        });
    }

    // -- workers ---------------------------------------------------------------------

    /// Each worker's distinct messages since the last call, in the order they came.
    fn read_channels(&mut self) -> Vec<(Pid, Message)> {
        let mut seen = Vec::new();
        for child in &mut self.children {
            for byte in drain(&mut child.channel) {
                let Some(message) = Message::from_byte(byte) else {
                    continue;
                };
                if !seen.contains(&(child.pid, message)) {
                    seen.push((child.pid, message));
                }
            }
        }
        seen
    }

    /// Each worker's resident memory, once every [`RSS_EVERY`] when the policy wants it.
    fn sample_rss(&mut self) -> Vec<(Pid, u64)> {
        let now = Instant::now();
        if !self.policy.wants_rss() || now < self.next_rss {
            return Vec::new();
        }
        self.next_rss = now + RSS_EVERY;
        let sampled = self.children.iter().filter_map(|c| {
            let rss = usage::read(c.pid)?.rss;
            Some((c.pid, rss))
        });
        sampled.collect()
    }

    /// The workers that exited, each with how.
    fn reap(&mut self) -> Vec<(Pid, Exit)> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.children.len() {
            let status = match waitpid(self.children[i].pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => Exit::Signal(signal),
                Err(Errno::ECHILD) => Exit::Unknown,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let child = self.children.remove(i);
            if let (Some(metrics), Some(slot)) = (&mut self.metrics, child.slot) {
                metrics.release(slot);
            }
            gone.push((child.pid, status));
        }
        gone
    }

    fn spawn(&mut self, py: Python<'_>, hooks: &Hooks, serial: u64, limit: Option<u64>) -> Event {
        match self.try_spawn(py, hooks, serial, limit) {
            Ok(pid) => Event::Forked { serial, pid },
            Err(e) => Event::ForkFailed {
                error: e.to_string(),
            },
        }
    }

    fn try_spawn(
        &mut self,
        py: Python<'_>,
        hooks: &Hooks,
        serial: u64,
        limit: Option<u64>,
    ) -> io::Result<Pid> {
        let Some(worker_main) = &hooks.worker_main else {
            return Err(io::Error::other("no worker entry point"));
        };
        let (read, write) = super::pipe()?;
        let (fds, own_socket) = self.sockets.for_worker()?;
        let mut private = self.private_fds();
        private.push(read.as_raw_fd());
        let slot = self.metrics.as_mut().and_then(MetricsPort::take_slot);
        let args = super::WorkerArgs {
            fds,
            channel: write.as_raw_fd(),
            max_requests: limit,
            serial,
        };
        let counters = slot.map(|(_, counters)| counters);
        let forked = super::fork_worker(
            py,
            worker_main,
            args,
            &private,
            self.signals.as_ref(),
            counters,
        );
        let slot = slot.map(|(i, _)| i);
        let pid = match forked {
            Ok(pid) => pid,
            Err(e) => {
                if let (Some(metrics), Some(i)) = (&mut self.metrics, slot) {
                    metrics.release(i);
                }
                return Err(e);
            }
        };
        drop(write);
        drop(own_socket);
        self.children.push(Child {
            pid,
            channel: Some(read),
            slot,
        });
        Ok(pid)
    }

    /// The master's descriptors, which a forked worker closes.
    fn private_fds(&self) -> Vec<RawFd> {
        let mut private: Vec<RawFd> = self
            .children
            .iter()
            .filter_map(|c| c.channel.as_ref().map(|c| c.as_raw_fd()))
            .collect();
        private.extend(self.sockets.master_only_fds());
        if let Some(signals) = &self.signals {
            private.extend(signals.raw_fds());
        }
        if let Some(notify) = &self.notify {
            private.push(notify.raw_fd());
        }
        if let Some(metrics) = &self.metrics {
            private.extend(metrics.raw_fds());
        }
        private
    }

    // -- re-exec ---------------------------------------------------------------------

    /// Replaces this process's image with a fresh one of the same command, handing over the
    /// sockets and workers. Returns only on failure, with the reason.
    fn reexec(&mut self, py: Python<'_>, hooks: &Hooks, handover: Handover) -> String {
        match self.try_reexec(py, hooks, handover) {
            Ok(never) => match never {},
            Err(e) => {
                self.sockets.take_back();
                for c in self.children.iter().filter_map(|c| c.channel.as_ref()) {
                    let _ = super::set_cloexec(c.as_raw_fd(), true);
                }
                if let Some(signals) = &self.signals {
                    signals.unblock();
                }
                e.to_string()
            }
        }
    }

    fn try_reexec(
        &mut self,
        py: Python<'_>,
        hooks: &Hooks,
        handover: Handover,
    ) -> PyResult<std::convert::Infallible> {
        let sys = py.import("sys")?;
        let executable: String = sys.getattr("executable")?.extract()?;
        let argv: Vec<String> = sys.getattr("orig_argv")?.extract()?;
        let mut env = environment(py, hooks)?;
        let (listeners, reserve, uds) = self.sockets.hand_over()?;
        let mut workers = Vec::new();
        for w in handover.workers {
            let channel = self.channel_of(w.pid);
            if let Some(fd) = channel {
                super::set_cloexec(fd, false)?;
            }
            workers.push(InheritedWorker {
                pid: w.pid.as_raw(),
                channel,
                serial: w.serial,
                stopping: w.stopping,
            });
        }
        let state = Inherited {
            pid: std::process::id(),
            target: handover.target,
            next_serial: handover.next_serial,
            listeners,
            reserve,
            uds,
            workers,
        };
        env.retain(|(k, _)| k != STATE_VAR);
        env.push((STATE_VAR.to_string(), state.encode()));
        let cstr = |s: String| CString::new(s).map_err(|e| io::Error::other(e.to_string()));
        let path = cstr(executable)?;
        let args = argv.into_iter().map(cstr).collect::<io::Result<Vec<_>>>()?;
        let envp = env
            .into_iter()
            .map(|(k, v)| cstr(format!("{k}={v}")))
            .collect::<io::Result<Vec<_>>>()?;
        for stream in ["stdout", "stderr"] {
            let _ = sys.getattr(stream).and_then(|s| s.call_method0("flush"));
        }
        if let Some(signals) = &self.signals {
            signals.block_for_exec();
        }
        let err = nix::unistd::execve(&path, &args, &envp).unwrap_err();
        Err(io::Error::from(err).into())
    }

    fn channel_of(&self, pid: Pid) -> Option<RawFd> {
        let child = self.children.iter().find(|c| c.pid == pid)?;
        child.channel.as_ref().map(AsRawFd::as_raw_fd)
    }

    // -- files, systemd and logging --------------------------------------------------

    fn write_pid_file(&mut self, path: &Path) -> io::Result<()> {
        let ours = std::process::id();
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(other) = text.trim().parse::<i32>() {
                let alive = other > 0 && kill(Pid::from_raw(other), None).is_ok();
                if alive && other as u32 != ours {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "pid file {} names process {other}, which is running",
                            path.display()
                        ),
                    ));
                }
            }
        }
        let tmp = path.with_extension(format!("tmp{ours}"));
        std::fs::write(&tmp, format!("{ours}\n"))?;
        std::fs::rename(&tmp, path)?;
        self.pid_file = Some(path.to_path_buf());
        Ok(())
    }

    fn remove_pid_file(&mut self) {
        let Some(path) = self.pid_file.take() else {
            return;
        };
        let ours = std::process::id().to_string();
        if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == ours) {
            let _ = std::fs::remove_file(path);
        }
    }

    fn notify(&self, notice: &Notice) {
        let Some(n) = &self.notify else { return };
        let usec;
        let fields: Vec<(&str, &str)> = match notice {
            Notice::Status(status) => vec![("STATUS", status)],
            Notice::Ready(status) => vec![("READY", "1"), ("STATUS", status)],
            Notice::Stopping => vec![("STOPPING", "1"), ("STATUS", "Stopping")],
            Notice::Reloading => {
                usec = monotonic_usec().to_string();
                vec![
                    ("RELOADING", "1"),
                    ("MONOTONIC_USEC", &usec),
                    ("STATUS", "Reloading"),
                ]
            }
        };
        let _ = n.send(&fields);
    }

    fn log(&self, py: Python<'_>, hooks: &Hooks, level: Level, msg: &str) {
        if let Err(e) = hooks.logger.call_method1(py, "log", (level as i32, msg)) {
            e.print(py);
        }
    }
}

/// Splits the state a previous image left into the policy's part and the loop's.
fn adopt(state: Inherited) -> (Option<Handover>, Vec<Child>) {
    let mut workers = Vec::new();
    let mut children = Vec::new();
    for w in state.workers {
        let pid = Pid::from_raw(w.pid);
        let channel = w.channel.map(|fd| {
            // SAFETY: the previous image handed this pipe end over to us alone.
            let channel = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = super::set_cloexec(fd, true);
            channel
        });
        children.push(Child {
            pid,
            channel,
            slot: None,
        });
        workers.push(HandedWorker {
            pid,
            serial: w.serial,
            stopping: w.stopping,
        });
    }
    let handover = Handover {
        target: state.target,
        next_serial: state.next_serial,
        workers,
    };
    (Some(handover), children)
}

/// Reads what is waiting in a status pipe; closes it at end of file.
fn drain(channel: &mut Option<OwnedFd>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let Some(fd) = channel else { return bytes };
    let mut buf = [0u8; 256];
    loop {
        match nix::unistd::read(&*fd, &mut buf) {
            Ok(0) => {
                *channel = None;
                break;
            }
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                if n < buf.len() {
                    break;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    bytes
}

/// A server hook; it logs its own exceptions, so an error here is the callback's.
fn call_hook(py: Python<'_>, hooks: &Hooks, hook: Hook) {
    let Some(server_hook) = &hooks.server_hook else {
        return;
    };
    let called = match hook {
        Hook::PreFork { serial } => server_hook.call1(py, ("pre_fork", serial)),
        Hook::ChildExit { serial, pid } => {
            server_hook.call1(py, ("child_exit", serial, pid.as_raw()))
        }
        Hook::NworkersChanged { new, old } => server_hook.call1(py, ("nworkers_changed", new, old)),
        Hook::OnReload => server_hook.call1(py, ("on_reload",)),
        Hook::PreExec => server_hook.call1(py, ("pre_exec",)),
    };
    if let Err(e) = called {
        e.print(py);
    }
}

/// SIGUSR1: Python's log files (`rsgi.logs.reopen_files`).
fn reopen_logs(py: Python<'_>) {
    if let Err(e) = py
        .import("rsgi.logs")
        .and_then(|m| m.call_method0("reopen_files"))
    {
        e.print(py);
    }
}

/// The environment of the re-executed master.
fn environment(py: Python<'_>, hooks: &Hooks) -> PyResult<Vec<(String, String)>> {
    let environ = match &hooks.environ {
        Some(env) => env.bind(py).clone(),
        None => py.import("os")?.getattr("environ")?,
    };
    environ
        .call_method0("items")?
        .try_iter()?
        .map(|item| item?.extract::<(String, String)>())
        .collect()
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}
