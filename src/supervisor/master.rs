//! The master loop: keeps `target` workers serving, replaces the ones that die, retire or
//! hang, and acts on signals. It is single-threaded and synchronous: one `poll` on the signal
//! pipe and the workers' status pipes, with the GIL released while it waits.
//!
//! A worker's life: forked (booting) -> ready (its status pipe said `R`) -> possibly retiring
//! (a reload or its request limit asked for a replacement; it keeps serving until the
//! replacements are ready) -> stopping (a signal was sent; SIGKILL follows at a deadline).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use pyo3::prelude::*;
use pyo3::types::PyAnyMethods;

use super::metrics::MetricsPort;
use super::notify::{monotonic_usec, Notifier};
use super::signals::SignalPipe;
use super::sockets::Sockets;
use super::state::{request_limit, Inherited, InheritedWorker, Rng, STATE_VAR};

/// Exit status of a worker that could not boot (app import or lifespan startup failed); the
/// master then exits with it too.
pub const BOOT_FAILURE: i32 = 3;
/// After `--timeout-graceful-shutdown`, how long a stopping worker has for its lifespan
/// shutdown before SIGKILL.
const LIFESPAN_GRACE: Duration = Duration::from_secs(5);
/// How long a worker has to exit after SIGQUIT (quick stop) or SIGABRT (hung) before SIGKILL.
const QUICK_GRACE: Duration = Duration::from_secs(3);
/// Pause before replacing a worker that died before it was ready, so that a crash at import
/// does not become a fork loop.
const RESPAWN_BACKOFF: Duration = Duration::from_secs(1);
/// The longest the master sleeps between two looks at its workers.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Status bytes a worker writes to its pipe (see python/rsgi/supervisors/prefork.py).
const MSG_READY: u8 = b'R';
const MSG_BEAT: u8 = b'.';
const MSG_RETIRE: u8 = b'M';

#[derive(Clone, Copy)]
#[repr(i32)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

pub struct Settings {
    pub workers: usize,
    /// HUP re-executes the master (`--preload` with an import string) instead of only
    /// starting new workers.
    pub reload_by_exec: bool,
    pub pid_file: Option<PathBuf>,
    pub limit: Option<u64>,
    pub jitter: u64,
    pub timeout: Option<Duration>,
    /// `--timeout-graceful-shutdown`.
    pub graceful: Duration,
    /// `--shutdown-delay`: for a stop of the whole server only (see [`GracefulStop`]).
    pub shutdown_delay: Duration,
}

/// Why a worker is stopped gracefully, which decides the signal it gets and its time to exit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GracefulStop {
    /// The server stops: the worker first serves on for `--shutdown-delay` with its health
    /// path answering 503, for load balancers to take the server out, then drains.
    Server,
    /// Another worker takes over (reload, request limit, fewer workers, failed reload): the
    /// server goes on serving, so there is nothing for a load balancer to notice, and the
    /// worker drains at once.
    Replaced,
}

impl GracefulStop {
    /// The signal for the worker (see python/rsgi/supervisors/prefork.py). Both stop a
    /// serving worker gracefully; before its event loop handles them, both end it.
    fn signal(self) -> Signal {
        match self {
            GracefulStop::Server => Signal::SIGTERM,
            GracefulStop::Replaced => Signal::SIGUSR2,
        }
    }

    /// How long the worker has to exit before SIGKILL.
    fn time(self, settings: &Settings) -> Duration {
        let delay = match self {
            GracefulStop::Server => settings.shutdown_delay,
            GracefulStop::Replaced => Duration::ZERO,
        };
        delay + settings.graceful + LIFESPAN_GRACE
    }
}

/// The Python side the master calls into.
pub struct Hooks {
    /// `worker_main(fds, channel_fd, max_requests, serial)`, run in each forked worker.
    pub worker_main: Option<Py<PyAny>>,
    /// A `logging.Logger`.
    pub logger: Py<PyAny>,
    /// The environment a re-executed master gets (a mapping); `os.environ` when `None`.
    pub environ: Option<Py<PyAny>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Retire {
    Reload,
    MaxRequests,
}

struct Stopping {
    signal: Signal,
    kill_at: Instant,
    killed: bool,
}

struct Worker {
    pid: Pid,
    serial: u64,
    /// Read end of the worker's status pipe; `None` once it reached end of file.
    channel: Option<OwnedFd>,
    ready: bool,
    last_beat: Instant,
    retiring: Option<Retire>,
    stop: Option<Stopping>,
    timed_out: bool,
    /// Its slot of the shared metrics (`--metrics-bind`).
    slot: Option<usize>,
}

impl Worker {
    fn active(&self) -> bool {
        self.retiring.is_none() && self.stop.is_none()
    }
}

pub struct Master {
    settings: Settings,
    sockets: Sockets,
    notify: Option<Notifier>,
    signals: Option<SignalPipe>,
    workers: Vec<Worker>,
    target: usize,
    next_serial: u64,
    /// `Some(quick)` once the server is stopping.
    stopping: Option<bool>,
    /// During a reload: the serial of the first new worker.
    reload: Option<u64>,
    /// A HUP came during the reload: reload again once it completes.
    reload_again: bool,
    announced: bool,
    spawn_after: Instant,
    exit_code: i32,
    rng: Rng,
    notes: Vec<(Level, String)>,
    pid_written: bool,
    /// `--metrics-bind`: the endpoint and the workers' shared counters.
    metrics: Option<MetricsPort>,
}

impl Master {
    pub fn new(
        settings: Settings,
        sockets: Sockets,
        inherited: Option<Inherited>,
        notes: Vec<(Level, String)>,
        metrics: Option<MetricsPort>,
    ) -> io::Result<Self> {
        let now = Instant::now();
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        let mut master = Master {
            target: settings.workers.max(1),
            settings,
            sockets,
            notify: Notifier::from_env()?,
            signals: None,
            workers: Vec::new(),
            next_serial: 1,
            stopping: None,
            reload: None,
            reload_again: false,
            announced: false,
            spawn_after: now,
            exit_code: 0,
            rng: Rng::seeded(seed),
            notes,
            pid_written: false,
            metrics,
        };
        if let Some(state) = inherited {
            // The previous image was reloading: its workers serve until ours are ready.
            master.target = state.target.max(1);
            master.next_serial = state.next_serial;
            master.reload = Some(state.next_serial);
            master.announced = true;
            // Those already stopping were replaced by that image's reload.
            let stop = GracefulStop::Replaced;
            let kill_at = now + stop.time(&master.settings);
            for w in state.workers {
                let channel = w.channel.map(|fd| {
                    // SAFETY: the previous image handed this pipe end over to us alone.
                    let channel = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    let _ = super::set_cloexec(fd, true);
                    channel
                });
                master.workers.push(Worker {
                    pid: Pid::from_raw(w.pid),
                    serial: w.serial,
                    channel,
                    ready: true,
                    last_beat: now,
                    retiring: Some(Retire::Reload),
                    stop: w.stopping.then_some(Stopping {
                        signal: stop.signal(),
                        kill_at,
                        killed: false,
                    }),
                    timed_out: false,
                    slot: None,
                });
            }
        }
        Ok(master)
    }

    pub fn addresses(&self) -> &[String] {
        self.sockets.addresses()
    }

    pub fn adopted_workers(&self) -> usize {
        self.workers.len()
    }

    /// Serves until stopped; returns the exit code.
    pub fn run(&mut self, py: Python<'_>, hooks: &Hooks) -> PyResult<i32> {
        self.signals = Some(SignalPipe::install()?);
        for (level, note) in std::mem::take(&mut self.notes) {
            self.log(py, hooks, level, &note);
        }
        if let Err(e) = self.write_pid_file(py, hooks) {
            self.finish();
            return Err(e.into());
        }
        self.log(
            py,
            hooks,
            Level::Info,
            &format!("Started master process [{}]", std::process::id()),
        );
        for address in self.sockets.addresses().to_vec() {
            self.log(
                py,
                hooks,
                Level::Info,
                &format!("rsgi running on {address} (Press CTRL+C to quit)"),
            );
        }
        if self.reload.is_none() {
            self.notify(&[("STATUS", &format!("Starting {} workers", self.target))]);
        }
        self.main_loop(py, hooks)?;
        self.finish();
        Ok(self.exit_code)
    }

    /// Stops the adopted workers (a re-executed master that cannot load the app) and cleans up.
    pub fn abandon(&mut self, py: Python<'_>, hooks: &Hooks, code: i32) -> PyResult<i32> {
        self.signals = Some(SignalPipe::install()?);
        self.exit_code = code;
        self.begin_stop(py, hooks, false);
        self.main_loop(py, hooks)?;
        self.finish();
        Ok(self.exit_code)
    }

    fn main_loop(&mut self, py: Python<'_>, hooks: &Hooks) -> PyResult<()> {
        loop {
            self.on_signals(py, hooks);
            self.read_channels(py, hooks);
            if let Some(metrics) = &mut self.metrics {
                let serving = self.workers.iter().filter(|w| w.ready && w.stop.is_none());
                metrics.step(serving.count());
            }
            self.reap(py, hooks);
            self.check_deadlines(py, hooks);
            if self.stopping.is_some() && self.workers.is_empty() {
                return Ok(());
            }
            self.maintain(py, hooks);
            self.wait(py);
        }
    }

    fn finish(&mut self) {
        self.sockets.close();
        self.sockets.remove_files();
        self.remove_pid_file();
        self.signals = None;
    }

    // -- waiting ---------------------------------------------------------------------

    fn wait(&self, py: Python<'_>) {
        let now = Instant::now();
        let mut until = now + MAX_WAIT;
        for w in &self.workers {
            match (&w.stop, self.settings.timeout) {
                (Some(stop), _) if !stop.killed => until = until.min(stop.kill_at),
                (None, Some(timeout)) if w.ready => until = until.min(w.last_beat + timeout),
                _ => {}
            }
        }
        if self.stopping.is_none() && self.spawn_after > now {
            until = until.min(self.spawn_after);
        }
        if let Some(deadline) = self.metrics.as_ref().and_then(MetricsPort::next_deadline) {
            until = until.min(deadline);
        }
        let timeout = until.saturating_duration_since(now);
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.workers.len() + 1);
        if let Some(signals) = &self.signals {
            fds.push(pollfd(signals.fd().as_raw_fd(), libc::POLLIN));
        }
        fds.extend(
            self.workers
                .iter()
                .filter_map(|w| w.channel.as_ref())
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

    // -- signals ---------------------------------------------------------------------

    fn on_signals(&mut self, py: Python<'_>, hooks: &Hooks) {
        let received = match &self.signals {
            Some(s) => s.take(),
            None => return,
        };
        for signal in received {
            match signal {
                Signal::SIGCHLD => {}
                Signal::SIGTERM | Signal::SIGINT => {
                    // A second one skips the wait for in-flight requests.
                    let quick = self.stopping.is_some();
                    self.begin_stop(py, hooks, quick);
                }
                Signal::SIGQUIT => self.begin_stop(py, hooks, true),
                Signal::SIGHUP => self.begin_reload(py, hooks),
                Signal::SIGTTIN => {
                    self.target += 1;
                    self.log(
                        py,
                        hooks,
                        Level::Info,
                        &format!("SIGTTIN: raising the worker count to {}", self.target),
                    );
                }
                Signal::SIGTTOU => {
                    if self.target > 1 {
                        self.target -= 1;
                        self.log(
                            py,
                            hooks,
                            Level::Info,
                            &format!("SIGTTOU: lowering the worker count to {}", self.target),
                        );
                    } else {
                        self.log(
                            py,
                            hooks,
                            Level::Info,
                            "SIGTTOU: already down to one worker",
                        );
                    }
                }
                Signal::SIGUSR1 => {
                    if let Err(e) = py
                        .import("rsgi.logs")
                        .and_then(|m| m.call_method0("reopen_files"))
                    {
                        e.print(py);
                    }
                    self.log(py, hooks, Level::Info, "SIGUSR1: reopened the log files");
                    for w in self.workers.iter().filter(|w| w.stop.is_none()) {
                        let _ = kill(w.pid, Signal::SIGUSR1);
                    }
                }
                Signal::SIGUSR2 => self.log(
                    py,
                    hooks,
                    Level::Warning,
                    "SIGUSR2 is not used by rsgi; send SIGHUP to reload",
                ),
                _ => {}
            }
        }
    }

    fn begin_stop(&mut self, py: Python<'_>, hooks: &Hooks, quick: bool) {
        if self.stopping == Some(true) {
            return;
        }
        let first = self.stopping.is_none();
        self.stopping = Some(quick);
        if first {
            self.notify(&[("STOPPING", "1"), ("STATUS", "Stopping")]);
            // Refuse new connections as soon as the workers stop accepting.
            self.sockets.close();
        }
        let how = if quick { "quick" } else { "graceful" };
        self.log(
            py,
            hooks,
            Level::Info,
            &format!(
                "Shutting down ({how}): stopping {} workers",
                self.workers.len()
            ),
        );
        let now = Instant::now();
        let graceful = GracefulStop::Server;
        let graceful_kill_at = now + graceful.time(&self.settings);
        for w in &mut self.workers {
            if quick {
                // SIGQUIT only once the worker's loop handles it; its default dumps core.
                let signal = if w.ready {
                    Signal::SIGQUIT
                } else {
                    Signal::SIGTERM
                };
                let kill_at = now + QUICK_GRACE;
                match &mut w.stop {
                    Some(stop) if stop.signal == signal || stop.killed => {}
                    Some(stop) => {
                        let _ = kill(w.pid, signal);
                        stop.signal = signal;
                        stop.kill_at = stop.kill_at.min(kill_at);
                    }
                    None => {
                        let _ = kill(w.pid, signal);
                        w.stop = Some(Stopping {
                            signal,
                            kill_at,
                            killed: false,
                        });
                    }
                }
            } else if w.stop.is_none() {
                let _ = kill(w.pid, graceful.signal());
                w.stop = Some(Stopping {
                    signal: graceful.signal(),
                    kill_at: graceful_kill_at,
                    killed: false,
                });
            }
        }
    }

    fn begin_reload(&mut self, py: Python<'_>, hooks: &Hooks) {
        if self.stopping.is_some() {
            return;
        }
        if self.reload.is_some() {
            // The code may have changed again since this reload began: another one follows.
            self.log(
                py,
                hooks,
                Level::Info,
                "SIGHUP: a reload is under way; another will follow it",
            );
            self.reload_again = true;
            return;
        }
        let usec = monotonic_usec().to_string();
        self.notify(&[
            ("RELOADING", "1"),
            ("MONOTONIC_USEC", &usec),
            ("STATUS", "Reloading"),
        ]);
        if self.settings.reload_by_exec {
            self.log(
                py,
                hooks,
                Level::Info,
                "SIGHUP: re-executing the master to load the application again (--preload)",
            );
            let error = self.reexec(py, hooks);
            self.log(
                py,
                hooks,
                Level::Error,
                &format!("Reload failed: cannot re-execute the master: {error}"),
            );
            self.notify(&[("READY", "1"), ("STATUS", &self.serving_status())]);
            return;
        }
        self.log(
            py,
            hooks,
            Level::Info,
            &format!("SIGHUP: reloading, starting {} new workers", self.target),
        );
        self.reload = Some(self.next_serial);
        for w in self.workers.iter_mut().filter(|w| w.active()) {
            w.retiring = Some(Retire::Reload);
        }
    }

    // -- workers ---------------------------------------------------------------------

    /// Spawns, retires and stops workers to move towards `target` ready workers.
    fn maintain(&mut self, py: Python<'_>, hooks: &Hooks) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        let active = self.workers.iter().filter(|w| w.active()).count();
        if active < self.target && now >= self.spawn_after {
            for _ in active..self.target {
                if let Err(e) = self.spawn(py, hooks) {
                    self.log(
                        py,
                        hooks,
                        Level::Error,
                        &format!("Cannot start a worker: {e}"),
                    );
                    self.spawn_after = now + RESPAWN_BACKOFF;
                    break;
                }
            }
        }
        // Too many (SIGTTOU): the oldest go first.
        let mut active: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].active())
            .collect();
        active.sort_by_key(|&i| self.workers[i].serial);
        while active.len() > self.target {
            let i = active.remove(0);
            self.stop_worker(py, hooks, i, "the worker count was lowered");
        }
        let ready = self
            .workers
            .iter()
            .filter(|w| w.active() && w.ready)
            .count();
        if ready >= self.target {
            // The replacements serve: the retiring workers can stop accepting now.
            for i in 0..self.workers.len() {
                let w = &self.workers[i];
                if w.retiring.is_some() && w.stop.is_none() {
                    let why = match w.retiring {
                        Some(Retire::Reload) => "reloaded",
                        _ => "replaced after its request limit",
                    };
                    self.stop_worker(py, hooks, i, why);
                }
            }
            if self.reload.take().is_some() {
                self.log(py, hooks, Level::Info, "Reload complete");
                self.notify(&[("READY", "1"), ("STATUS", &self.serving_status())]);
                if std::mem::take(&mut self.reload_again) {
                    self.begin_reload(py, hooks);
                }
            }
            if !self.announced {
                self.announced = true;
                self.notify(&[("READY", "1"), ("STATUS", &self.serving_status())]);
            }
        }
    }

    fn serving_status(&self) -> String {
        let ready = self
            .workers
            .iter()
            .filter(|w| w.active() && w.ready)
            .count();
        format!("Serving with {ready} workers")
    }

    /// Stops a worker that another one replaces (see [`GracefulStop::Replaced`]).
    fn stop_worker(&mut self, py: Python<'_>, hooks: &Hooks, i: usize, why: &str) {
        let stop = GracefulStop::Replaced;
        let kill_at = Instant::now() + stop.time(&self.settings);
        let w = &mut self.workers[i];
        let _ = kill(w.pid, stop.signal());
        w.stop = Some(Stopping {
            signal: stop.signal(),
            kill_at,
            killed: false,
        });
        let pid = w.pid;
        self.log(
            py,
            hooks,
            Level::Info,
            &format!("Stopping worker [{pid}]: {why}"),
        );
    }

    fn spawn(&mut self, py: Python<'_>, hooks: &Hooks) -> io::Result<()> {
        let Some(worker_main) = &hooks.worker_main else {
            return Err(io::Error::other("no worker entry point"));
        };
        let serial = self.next_serial;
        let (read, write) = super::pipe()?;
        let (fds, own_socket) = self.sockets.for_worker()?;
        let limit = request_limit(self.settings.limit, self.settings.jitter, self.rng.next());
        let mut private: Vec<RawFd> = vec![read.as_raw_fd()];
        private.extend(
            self.workers
                .iter()
                .filter_map(|w| w.channel.as_ref().map(|c| c.as_raw_fd())),
        );
        private.extend(self.sockets.master_only_fds());
        if let Some(signals) = &self.signals {
            private.extend(signals.raw_fds());
        }
        if let Some(notify) = &self.notify {
            private.push(notify.raw_fd());
        }
        let slot = self.metrics.as_mut().and_then(MetricsPort::take_slot);
        if let Some(metrics) = &self.metrics {
            private.extend(metrics.raw_fds());
        }
        let forked = super::fork_worker(
            py,
            worker_main,
            super::WorkerArgs {
                fds,
                channel: write.as_raw_fd(),
                max_requests: limit,
                serial,
            },
            &private,
            self.signals.as_ref(),
            slot.map(|(_, counters)| counters),
        );
        let child = match forked {
            Ok(child) => child,
            Err(e) => {
                if let (Some(metrics), Some((i, _))) = (&mut self.metrics, slot) {
                    metrics.release(i);
                }
                return Err(e);
            }
        };
        drop(write);
        drop(own_socket);
        self.next_serial += 1;
        self.workers.push(Worker {
            pid: child,
            serial,
            channel: Some(read),
            ready: false,
            last_beat: Instant::now(),
            retiring: None,
            stop: None,
            timed_out: false,
            slot: slot.map(|(i, _)| i),
        });
        let note = match limit {
            Some(n) => format!(" (request limit {n})"),
            None => String::new(),
        };
        self.log(
            py,
            hooks,
            Level::Info,
            &format!("Booting worker {serial} with pid [{child}]{note}"),
        );
        Ok(())
    }

    fn read_channels(&mut self, py: Python<'_>, hooks: &Hooks) {
        let now = Instant::now();
        let mut events: Vec<(usize, u8)> = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            let Some(channel) = &w.channel else { continue };
            let mut buf = [0u8; 256];
            loop {
                match nix::unistd::read(channel, &mut buf) {
                    Ok(0) => {
                        w.channel = None;
                        break;
                    }
                    Ok(n) => {
                        w.last_beat = now;
                        for &b in &buf[..n] {
                            if b != MSG_BEAT && !events.contains(&(i, b)) {
                                events.push((i, b));
                            }
                        }
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
        }
        for (i, msg) in events {
            match msg {
                MSG_READY => {
                    self.workers[i].ready = true;
                    let (serial, pid) = (self.workers[i].serial, self.workers[i].pid);
                    self.log(
                        py,
                        hooks,
                        Level::Debug,
                        &format!("Worker {serial} [{pid}] is serving"),
                    );
                }
                MSG_RETIRE => {
                    let w = &mut self.workers[i];
                    if w.active() {
                        w.retiring = Some(Retire::MaxRequests);
                        let pid = w.pid;
                        self.log(
                            py,
                            hooks,
                            Level::Info,
                            &format!(
                                "Worker [{pid}] reached its request limit: starting its replacement"
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    fn reap(&mut self, py: Python<'_>, hooks: &Hooks) {
        let mut i = 0;
        while i < self.workers.len() {
            let pid = self.workers[i].pid;
            let status = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => Exit::Signal(signal),
                Err(Errno::ECHILD) => Exit::Unknown,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let w = self.workers.remove(i);
            if let (Some(metrics), Some(slot)) = (&mut self.metrics, w.slot) {
                metrics.release(slot);
            }
            self.on_exit(py, hooks, w, status);
        }
    }

    fn on_exit(&mut self, py: Python<'_>, hooks: &Hooks, w: Worker, status: Exit) {
        let what = match status {
            Exit::Code(code) => format!("exited with code {code}"),
            Exit::Signal(signal) => format!("was killed by signal {}", signal.as_str()),
            Exit::Unknown => "is gone".to_string(),
        };
        let asked = w.stop.is_some();
        let reason = match (w.timed_out, asked, status == Exit::Code(0)) {
            (true, _, _) => "blocked",
            (false, true, true) => "stopped",
            (false, true, false) => "stop_timeout",
            (false, false, _) => "crashed",
        };
        if let Some(metrics) = &mut self.metrics {
            metrics.exited(reason);
        }
        let (level, note) = if w.timed_out {
            (Level::Error, " after timing out")
        } else if asked && status == Exit::Code(0) {
            (Level::Info, "")
        } else if asked {
            (Level::Warning, " while stopping")
        } else {
            (Level::Error, "")
        };
        let pid = w.pid;
        self.log(py, hooks, level, &format!("Worker [{pid}] {what}{note}"));
        if asked || self.stopping.is_some() || w.ready {
            return;
        }
        if status == Exit::Code(BOOT_FAILURE) {
            match self.reload {
                Some(first) if w.serial >= first => self.abort_reload(py, hooks),
                _ => {
                    self.log(
                        py,
                        hooks,
                        Level::Error,
                        &format!("Worker failed to boot: shutting down (exit code {BOOT_FAILURE})"),
                    );
                    self.exit_code = BOOT_FAILURE;
                    self.begin_stop(py, hooks, false);
                }
            }
        } else {
            self.spawn_after = Instant::now() + RESPAWN_BACKOFF;
        }
    }

    fn abort_reload(&mut self, py: Python<'_>, hooks: &Hooks) {
        let Some(first) = self.reload.take() else {
            return;
        };
        self.log(
            py,
            hooks,
            Level::Error,
            "Reload failed: a new worker could not boot; the running workers keep serving",
        );
        for w in &mut self.workers {
            if w.retiring == Some(Retire::Reload) && w.stop.is_none() {
                w.retiring = None;
            }
        }
        for i in 0..self.workers.len() {
            if self.workers[i].serial >= first && self.workers[i].stop.is_none() {
                self.stop_worker(py, hooks, i, "the reload failed");
            }
        }
        if self.workers.iter().all(|w| !w.active()) {
            // Nothing to fall back to (a re-executed master whose old workers are gone).
            self.exit_code = BOOT_FAILURE;
            self.begin_stop(py, hooks, false);
            return;
        }
        self.notify(&[
            ("READY", "1"),
            ("STATUS", "Reload failed; serving with the previous workers"),
        ]);
        if std::mem::take(&mut self.reload_again) {
            self.begin_reload(py, hooks);
        }
    }

    /// Signals the workers past a deadline. Each note is logged before its signal goes out, so
    /// a timed-out worker's stack (written by faulthandler on SIGABRT) follows the note on a
    /// shared stderr instead of being cut by it.
    fn check_deadlines(&mut self, py: Python<'_>, hooks: &Hooks) {
        let now = Instant::now();
        let timeout = self.settings.timeout;
        let mut due = Vec::new();
        for w in &mut self.workers {
            if let Some(stop) = &mut w.stop {
                if !stop.killed && now >= stop.kill_at {
                    stop.killed = true;
                    due.push((
                        w.pid,
                        Signal::SIGKILL,
                        Level::Warning,
                        format!("Worker [{}] did not stop in time: sending SIGKILL", w.pid),
                    ));
                }
                continue;
            }
            let Some(timeout) = timeout else { continue };
            if w.ready && now.duration_since(w.last_beat) > timeout {
                due.push((
                    w.pid,
                    Signal::SIGABRT,
                    Level::Critical,
                    format!(
                        "Worker [{}] timed out: its event loop has not run for {:.1} s; \
                         sending SIGABRT (its stack follows on stderr)",
                        w.pid,
                        now.duration_since(w.last_beat).as_secs_f64()
                    ),
                ));
                w.timed_out = true;
                w.stop = Some(Stopping {
                    signal: Signal::SIGABRT,
                    kill_at: now + QUICK_GRACE,
                    killed: false,
                });
            }
        }
        for (pid, signal, level, note) in due {
            self.log(py, hooks, level, &note);
            let _ = kill(pid, signal);
        }
    }

    // -- re-exec ---------------------------------------------------------------------

    /// Replaces this process's image with a fresh one of the same command, handing over the
    /// sockets and workers. Returns only on failure, with the reason.
    fn reexec(&mut self, py: Python<'_>, hooks: &Hooks) -> String {
        match self.try_reexec(py, hooks) {
            Ok(never) => match never {},
            Err(e) => {
                self.sockets.take_back();
                for w in &self.workers {
                    if let Some(c) = &w.channel {
                        let _ = super::set_cloexec(c.as_raw_fd(), true);
                    }
                }
                if let Some(signals) = &self.signals {
                    signals.unblock();
                }
                e.to_string()
            }
        }
    }

    fn try_reexec(&mut self, py: Python<'_>, hooks: &Hooks) -> PyResult<std::convert::Infallible> {
        let sys = py.import("sys")?;
        let executable: String = sys.getattr("executable")?.extract()?;
        let argv: Vec<String> = sys.getattr("orig_argv")?.extract()?;
        let environ = match &hooks.environ {
            Some(env) => env.bind(py).clone(),
            None => py.import("os")?.getattr("environ")?,
        };
        let mut env: Vec<(String, String)> = environ
            .call_method0("items")?
            .try_iter()?
            .map(|item| item?.extract::<(String, String)>())
            .collect::<PyResult<_>>()?;
        let (listeners, reserve, uds) = self.sockets.hand_over()?;
        let mut workers = Vec::new();
        for w in &self.workers {
            let channel = w.channel.as_ref().map(AsRawFd::as_raw_fd);
            if let Some(fd) = channel {
                super::set_cloexec(fd, false)?;
            }
            workers.push(InheritedWorker {
                pid: w.pid.as_raw(),
                channel,
                serial: w.serial,
                stopping: w.stop.is_some(),
            });
        }
        let state = Inherited {
            pid: std::process::id(),
            target: self.target,
            next_serial: self.next_serial,
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

    // -- files and systemd -----------------------------------------------------------

    fn write_pid_file(&mut self, py: Python<'_>, hooks: &Hooks) -> io::Result<()> {
        let Some(path) = &self.settings.pid_file else {
            return Ok(());
        };
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
        self.pid_written = true;
        self.log(
            py,
            hooks,
            Level::Debug,
            &format!("Wrote pid file {}", path.display()),
        );
        Ok(())
    }

    fn remove_pid_file(&mut self) {
        let Some(path) = &self.settings.pid_file else {
            return;
        };
        if !self.pid_written {
            return;
        }
        let ours = std::process::id().to_string();
        if std::fs::read_to_string(path).is_ok_and(|t| t.trim() == ours) {
            let _ = std::fs::remove_file(path);
        }
        self.pid_written = false;
    }

    fn notify(&self, fields: &[(&str, &str)]) {
        if let Some(n) = &self.notify {
            let _ = n.send(fields);
        }
    }

    fn log(&self, py: Python<'_>, hooks: &Hooks, level: Level, msg: &str) {
        if let Err(e) = hooks.logger.call_method1(py, "log", (level as i32, msg)) {
            e.print(py);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Exit {
    Code(i32),
    Signal(Signal),
    Unknown,
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            workers: 2,
            reload_by_exec: false,
            pid_file: None,
            limit: None,
            jitter: 0,
            timeout: None,
            graceful: Duration::from_secs(30),
            shutdown_delay: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_replaced_worker_skips_the_shutdown_delay() {
        let s = settings();
        assert_eq!(GracefulStop::Replaced.time(&s), s.graceful + LIFESPAN_GRACE);
        assert_eq!(
            GracefulStop::Server.time(&s),
            s.shutdown_delay + s.graceful + LIFESPAN_GRACE
        );
        // The worker tells them apart by the signal.
        assert_eq!(GracefulStop::Server.signal(), Signal::SIGTERM);
        assert_eq!(GracefulStop::Replaced.signal(), Signal::SIGUSR2);
    }
}
