//! The master's rules, apart from their effects: which worker to start, retire or kill, and
//! when a reload fails or the master stops. [`Policy`] is a state machine: the master loop
//! (`master.rs`) turns what it saw into [`Event`]s and performs the [`Action`]s that come out.
//! It makes no system call, reads no clock (every event comes with `now`) and calls no Python,
//! so its tests run in microseconds.
//!
//! A worker's life: forked (booting) -> ready (it said `R`) -> possibly retiring (a reload,
//! its request limit or its memory use asked for a replacement; it keeps serving until the
//! replacements are ready) -> stopping (a signal was sent; SIGKILL follows at a deadline).
//!
//! Invariants:
//! - Every [`Action::Fork`] is answered, before any other event, by [`Event::Forked`] or
//!   [`Event::ForkFailed`]; one fork is asked for at a time.
//! - Every [`Action::Inspect`] is answered, before any other event, by [`Event::Inspected`].
//! - A retiring worker is stopped only once `target` non-retiring workers are ready, so a
//!   reload or a recycling leaves no moment with fewer serving workers.
//! - Every stopping worker has a deadline, after which it gets SIGKILL once.
//! - [`Action::Exit`] comes only from [`Event::Tick`], once the master stops and every
//!   worker is gone; the loop ends there.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::protocol::{Message, BOOT_FAILURE};
use super::state::{request_limit, Rng};

/// After `--timeout-graceful-shutdown`, how long a stopping worker has for its lifespan
/// shutdown before SIGKILL.
const LIFESPAN_GRACE: Duration = Duration::from_secs(5);
/// How long a worker has to exit after SIGQUIT (quick stop) or SIGABRT (hung) before SIGKILL.
const QUICK_GRACE: Duration = Duration::from_secs(3);
/// Pause before replacing a worker that died before it was ready, so that a crash at import
/// does not become a fork loop.
const RESPAWN_BACKOFF: Duration = Duration::from_secs(1);
/// How many samples in a row (the master takes one a second) a worker's resident memory must
/// be over `--limit-max-rss` before it is replaced: a short peak is not a leak.
const RSS_SAMPLES: u32 = 2;
const MIB: u64 = 1 << 20;

/// A log record's level, as Python's `logging` numbers it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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
    /// `--limit-max-rss`, in MiB.
    pub max_rss: Option<u64>,
    /// `--timeout-graceful-shutdown`.
    pub graceful: Duration,
    /// `--shutdown-delay`: for a stop of the whole server only (see [`GracefulStop`]).
    pub shutdown_delay: Duration,
}

/// How a worker ended, as `waitpid` told.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
    /// Not our child any more (`ECHILD`).
    Unknown,
}

/// Why a worker ended, for the metrics' `worker_exits` counter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExitReason {
    /// Timed out (`--timeout-worker`).
    Blocked,
    /// Asked to stop, and exited 0.
    Stopped,
    /// Asked to stop, but killed or failed.
    StopTimeout,
    /// Not asked to stop.
    Crashed,
    /// Replaced for its memory use (`--limit-max-rss`), and exited 0.
    MaxRss,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Blocked => "blocked",
            ExitReason::Stopped => "stopped",
            ExitReason::StopTimeout => "stop_timeout",
            ExitReason::Crashed => "crashed",
            ExitReason::MaxRss => "max_rss",
        }
    }
}

/// What happened, as the master loop saw it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// The loop starts serving; `pid` is the master's, `addresses` where it listens.
    Start {
        pid: u32,
        addresses: Vec<String>,
    },
    /// A re-executed master that cannot load the app gives up: stop everything, exit `code`.
    Abandon {
        code: i32,
    },
    Forked {
        serial: u64,
        pid: Pid,
    },
    ForkFailed {
        error: String,
    },
    Message {
        pid: Pid,
        message: Message,
    },
    Exited {
        pid: Pid,
        status: Exit,
    },
    Signal(Signal),
    /// The answer to [`Action::Inspect`]: whether the worker is stopped (SIGSTOP, a debugger).
    Inspected {
        pid: Pid,
        stopped: bool,
    },
    /// A worker's resident memory, sampled once a second with `--limit-max-rss`.
    Rss {
        pid: Pid,
        bytes: u64,
    },
    /// `execve` failed; the master goes on with its workers.
    ReExecFailed {
        error: String,
    },
    /// The loop woke up (at least once a second): deadlines, exit, and the worker count.
    Tick,
}

/// A systemd notification (`sd_notify`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Notice {
    /// `STATUS=` alone.
    Status(String),
    /// `READY=1` with a status.
    Ready(String),
    Stopping,
    Reloading,
}

/// A worker the master hands over to its next image (`--preload` reload).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HandedWorker {
    pub pid: Pid,
    pub serial: u64,
    /// It was told to stop already.
    pub stopping: bool,
}

/// What a master image passes to the next one, or adopts from the previous one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Handover {
    pub target: usize,
    pub next_serial: u64,
    pub workers: Vec<HandedWorker>,
}

/// A gunicorn server hook of the master's (python/rsgi/supervisors/prefork.py `master_hook`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Hook {
    /// `pre_fork(server, worker)`: worker `serial` is forked next.
    PreFork { serial: u64 },
    /// `child_exit(server, worker)`: worker `serial` exited.
    ChildExit { serial: u64, pid: Pid },
    /// `nworkers_changed(server, new, old)`: TTIN or TTOU changed the worker count.
    NworkersChanged { new: usize, old: usize },
    /// `on_reload(server)`: a HUP starts a reload.
    OnReload,
    /// `pre_exec(server)`: the master re-executes itself next.
    PreExec,
}

/// What the master loop must do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Action {
    Log(Level, String),
    /// Call a server hook; its outcome changes nothing here.
    Hook(Hook),
    /// Write our pid there; failing that, the master does not start.
    WritePidFile(PathBuf),
    Notify(Notice),
    /// Fork a worker; answer with [`Event::Forked`] or [`Event::ForkFailed`].
    Fork {
        serial: u64,
        max_requests: Option<u64>,
    },
    Kill {
        pid: Pid,
        signal: Signal,
    },
    /// Tell whether a worker is stopped; answer with [`Event::Inspected`].
    Inspect {
        pid: Pid,
    },
    /// Close the master's copy of the listening sockets, so that new connections are refused
    /// as soon as the workers stop accepting.
    CloseSockets,
    /// Reopen the master's log files (SIGUSR1).
    ReopenLogs,
    /// Count a worker's exit in the metrics.
    RecordExit(ExitReason),
    /// Replace the master's image; answer with [`Event::ReExecFailed`] if that fails.
    ReExec(Handover),
    Exit(i32),
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Retire {
    Reload,
    MaxRequests,
    MaxRss,
}

struct Stopping {
    signal: Signal,
    kill_at: Instant,
    killed: bool,
}

struct Worker {
    pid: Pid,
    serial: u64,
    ready: bool,
    last_beat: Instant,
    retiring: Option<Retire>,
    stop: Option<Stopping>,
    timed_out: bool,
    /// Samples in a row over `--limit-max-rss`.
    over_rss: u32,
}

impl Worker {
    /// Neither retiring nor stopping: it counts towards `target`.
    fn active(&self) -> bool {
        self.retiring.is_none() && self.stop.is_none()
    }
}

/// A fork the policy asked for: what the worker was given, for the log line once it exists.
struct PendingFork {
    max_requests: Option<u64>,
}

/// The master's state: its workers, the worker count it aims for, and the reload or stop under
/// way. See the module's documentation for the invariants.
pub struct Policy {
    settings: Settings,
    workers: Vec<Worker>,
    target: usize,
    next_serial: u64,
    /// The fork asked for and not yet answered.
    forking: Option<PendingFork>,
    /// `Some(quick)` once the server is stopping.
    stopping: Option<bool>,
    /// During a reload: the serial of the first new worker.
    reload: Option<u64>,
    /// A HUP came during the reload: reload again once it completes.
    reload_again: bool,
    /// systemd was told READY=1 (or the previous image told it).
    announced: bool,
    spawn_after: Instant,
    exit_code: i32,
    rng: Rng,
    out: Vec<Action>,
}

impl Policy {
    /// `seed` spreads the request limits (`--limit-max-requests-jitter`); `adopted` are the
    /// workers of the image this master replaced, which serve until ours are ready.
    pub fn new(settings: Settings, seed: u64, adopted: Option<Handover>, now: Instant) -> Self {
        let mut policy = Policy {
            target: settings.workers.max(1),
            settings,
            workers: Vec::new(),
            next_serial: 1,
            forking: None,
            stopping: None,
            reload: None,
            reload_again: false,
            announced: false,
            spawn_after: now,
            exit_code: 0,
            rng: Rng::seeded(seed),
            out: Vec::new(),
        };
        if let Some(handover) = adopted {
            policy.adopt(handover, now);
        }
        policy
    }

    /// The previous image was reloading: its workers serve until ours are ready.
    fn adopt(&mut self, handover: Handover, now: Instant) {
        self.target = handover.target.max(1);
        self.next_serial = handover.next_serial;
        self.reload = Some(handover.next_serial);
        self.announced = true;
        // Those already stopping were replaced by that image's reload.
        let stop = GracefulStop::Replaced;
        let kill_at = now + stop.time(&self.settings);
        for w in handover.workers {
            self.workers.push(Worker {
                pid: w.pid,
                serial: w.serial,
                ready: true,
                last_beat: now,
                retiring: Some(Retire::Reload),
                stop: w.stopping.then_some(Stopping {
                    signal: stop.signal(),
                    kill_at,
                    killed: false,
                }),
                timed_out: false,
                over_rss: 0,
            });
        }
    }

    /// Takes in one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Start { pid, addresses } => self.start(pid, &addresses),
            Event::Abandon { code } => {
                self.exit_code = code;
                self.begin_stop(false, now);
            }
            Event::Forked { serial, pid } => self.forked(serial, pid, now),
            Event::ForkFailed { error } => self.fork_failed(&error, now),
            Event::Message { pid, message } => self.on_message(pid, message, now),
            Event::Exited { pid, status } => self.on_exit(pid, status, now),
            Event::Signal(signal) => self.on_signal(signal, now),
            Event::Inspected { pid, stopped } => self.abort_hung(pid, stopped, now),
            Event::Rss { pid, bytes } => self.check_rss(pid, bytes),
            Event::ReExecFailed { error } => self.reexec_failed(&error),
            Event::Tick => self.tick(now),
        }
        std::mem::take(&mut self.out)
    }

    /// Whether the master should sample the workers' memory (and send [`Event::Rss`]).
    pub fn wants_rss(&self) -> bool {
        self.settings.max_rss.is_some()
    }

    /// Workers that serve and are not stopping (retiring ones still serve).
    pub fn serving(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.ready && w.stop.is_none())
            .count()
    }

    /// The next moment a [`Event::Tick`] has something to do, if any is known.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let workers = self
            .workers
            .iter()
            .filter_map(|w| match (&w.stop, self.settings.timeout) {
                (Some(stop), _) if !stop.killed => Some(stop.kill_at),
                (None, Some(timeout)) if w.ready => Some(w.last_beat + timeout),
                _ => None,
            });
        let spawn = (self.stopping.is_none() && self.spawn_after > now).then_some(self.spawn_after);
        workers.chain(spawn).min()
    }

    fn log(&mut self, level: Level, message: String) {
        self.out.push(Action::Log(level, message));
    }

    fn kill(&mut self, pid: Pid, signal: Signal) {
        self.out.push(Action::Kill { pid, signal });
    }

    fn notify(&mut self, notice: Notice) {
        self.out.push(Action::Notify(notice));
    }

    fn index(&self, pid: Pid) -> Option<usize> {
        self.workers.iter().position(|w| w.pid == pid)
    }

    fn active(&self) -> usize {
        self.workers.iter().filter(|w| w.active()).count()
    }

    fn ready(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.active() && w.ready)
            .count()
    }

    fn serving_status(&self) -> String {
        format!("Serving with {} workers", self.ready())
    }

    // -- start and signals -----------------------------------------------------------

    fn start(&mut self, pid: u32, addresses: &[String]) {
        if let Some(path) = self.settings.pid_file.clone() {
            let note = format!("Wrote pid file {}", path.display());
            self.out.push(Action::WritePidFile(path));
            self.log(Level::Debug, note);
        }
        self.log(Level::Info, format!("Started master process [{pid}]"));
        for address in addresses {
            let note = format!("rsgi running on {address} (Press CTRL+C to quit)");
            self.log(Level::Info, note);
        }
        if self.reload.is_none() {
            let status = format!("Starting {} workers", self.target);
            self.notify(Notice::Status(status));
        }
    }

    fn on_signal(&mut self, signal: Signal, now: Instant) {
        match signal {
            Signal::SIGTERM | Signal::SIGINT => {
                // A second one skips the wait for in-flight requests.
                let quick = self.stopping.is_some();
                self.begin_stop(quick, now);
            }
            Signal::SIGQUIT => self.begin_stop(true, now),
            Signal::SIGHUP => self.begin_reload(),
            Signal::SIGTTIN => {
                self.target += 1;
                let note = format!("SIGTTIN: raising the worker count to {}", self.target);
                self.log(Level::Info, note);
                self.workers_changed(self.target - 1);
            }
            Signal::SIGTTOU => self.lower_target(),
            Signal::SIGUSR1 => self.reopen_logs(),
            Signal::SIGUSR2 => self.log(
                Level::Warning,
                "SIGUSR2 is not used by rsgi; send SIGHUP to reload".into(),
            ),
            _ => {}
        }
    }

    fn lower_target(&mut self) {
        if self.target > 1 {
            self.target -= 1;
            let note = format!("SIGTTOU: lowering the worker count to {}", self.target);
            self.log(Level::Info, note);
            self.workers_changed(self.target + 1);
        } else {
            self.log(Level::Info, "SIGTTOU: already down to one worker".into());
        }
    }

    fn workers_changed(&mut self, old: usize) {
        let new = self.target;
        self.out
            .push(Action::Hook(Hook::NworkersChanged { new, old }));
    }

    fn reopen_logs(&mut self) {
        self.out.push(Action::ReopenLogs);
        self.log(Level::Info, "SIGUSR1: reopened the log files".into());
        let pids: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.stop.is_none())
            .map(|w| w.pid)
            .collect();
        for pid in pids {
            self.kill(pid, Signal::SIGUSR1);
        }
    }

    // -- stopping and reloading ------------------------------------------------------

    fn begin_stop(&mut self, quick: bool, now: Instant) {
        if self.stopping == Some(true) {
            return;
        }
        if self.stopping.is_none() {
            self.notify(Notice::Stopping);
            self.out.push(Action::CloseSockets);
        }
        self.stopping = Some(quick);
        let how = if quick { "quick" } else { "graceful" };
        let note = format!(
            "Shutting down ({how}): stopping {} workers",
            self.workers.len()
        );
        self.log(Level::Info, note);
        for i in 0..self.workers.len() {
            if quick {
                self.stop_quickly(i, now);
            } else if self.workers[i].stop.is_none() {
                self.stop_worker(i, GracefulStop::Server, now);
            }
        }
    }

    /// Sends SIGQUIT (SIGTERM to a booting worker: SIGQUIT's default dumps core) unless the
    /// worker got it already, or SIGKILL.
    fn stop_quickly(&mut self, i: usize, now: Instant) {
        let w = &mut self.workers[i];
        let signal = if w.ready {
            Signal::SIGQUIT
        } else {
            Signal::SIGTERM
        };
        let kill_at = now + QUICK_GRACE;
        match &mut w.stop {
            Some(stop) if stop.signal == signal || stop.killed => return,
            Some(stop) => {
                stop.signal = signal;
                stop.kill_at = stop.kill_at.min(kill_at);
            }
            None => {
                w.stop = Some(Stopping {
                    signal,
                    kill_at,
                    killed: false,
                })
            }
        }
        let pid = w.pid;
        self.kill(pid, signal);
    }

    fn stop_worker(&mut self, i: usize, how: GracefulStop, now: Instant) {
        let w = &mut self.workers[i];
        w.stop = Some(Stopping {
            signal: how.signal(),
            kill_at: now + how.time(&self.settings),
            killed: false,
        });
        let pid = w.pid;
        self.kill(pid, how.signal());
    }

    /// Stops a worker that another one replaces (see [`GracefulStop::Replaced`]).
    fn replace_worker(&mut self, i: usize, why: &str, now: Instant) {
        self.stop_worker(i, GracefulStop::Replaced, now);
        let pid = self.workers[i].pid;
        self.log(Level::Info, format!("Stopping worker [{pid}]: {why}"));
    }

    fn begin_reload(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        if self.reload.is_some() {
            // The code may have changed again since this reload began: another one follows.
            let note = "SIGHUP: a reload is under way; another will follow it";
            self.log(Level::Info, note.into());
            self.reload_again = true;
            return;
        }
        self.notify(Notice::Reloading);
        self.out.push(Action::Hook(Hook::OnReload));
        if self.settings.reload_by_exec {
            let note = "SIGHUP: re-executing the master to load the application again (--preload)";
            self.log(Level::Info, note.into());
            self.out.push(Action::Hook(Hook::PreExec));
            self.out.push(Action::ReExec(self.handover()));
            return;
        }
        let note = format!("SIGHUP: reloading, starting {} new workers", self.target);
        self.log(Level::Info, note);
        self.reload = Some(self.next_serial);
        for w in self.workers.iter_mut().filter(|w| w.active()) {
            w.retiring = Some(Retire::Reload);
        }
    }

    fn handover(&self) -> Handover {
        let workers = self.workers.iter().map(|w| HandedWorker {
            pid: w.pid,
            serial: w.serial,
            stopping: w.stop.is_some(),
        });
        Handover {
            target: self.target,
            next_serial: self.next_serial,
            workers: workers.collect(),
        }
    }

    fn reexec_failed(&mut self, error: &str) {
        let note = format!("Reload failed: cannot re-execute the master: {error}");
        self.log(Level::Error, note);
        self.notify(Notice::Ready(self.serving_status()));
    }

    /// A new worker could not boot: the new ones stop, the old ones serve on.
    fn abort_reload(&mut self, now: Instant) {
        let Some(first) = self.reload.take() else {
            return;
        };
        let note = "Reload failed: a new worker could not boot; the running workers keep serving";
        self.log(Level::Error, note.into());
        for w in &mut self.workers {
            if w.retiring == Some(Retire::Reload) && w.stop.is_none() {
                w.retiring = None;
            }
        }
        for i in 0..self.workers.len() {
            if self.workers[i].serial >= first && self.workers[i].stop.is_none() {
                self.replace_worker(i, "the reload failed", now);
            }
        }
        if self.active() == 0 {
            // Nothing to fall back to (a re-executed master whose old workers are gone).
            self.exit_code = BOOT_FAILURE;
            self.begin_stop(false, now);
            return;
        }
        let status = "Reload failed; serving with the previous workers";
        self.notify(Notice::Ready(status.into()));
        if std::mem::take(&mut self.reload_again) {
            self.begin_reload();
        }
    }

    // -- workers ---------------------------------------------------------------------

    fn forked(&mut self, serial: u64, pid: Pid, now: Instant) {
        let limit = self.forking.take().and_then(|f| f.max_requests);
        self.next_serial = serial + 1;
        self.workers.push(Worker {
            pid,
            serial,
            ready: false,
            last_beat: now,
            retiring: None,
            stop: None,
            timed_out: false,
            over_rss: 0,
        });
        let note = match limit {
            Some(n) => format!(" (request limit {n})"),
            None => String::new(),
        };
        let line = format!("Booting worker {serial} with pid [{pid}]{note}");
        self.log(Level::Info, line);
        self.maintain(now);
    }

    fn fork_failed(&mut self, error: &str, now: Instant) {
        self.forking = None;
        self.log(Level::Error, format!("Cannot start a worker: {error}"));
        self.spawn_after = now + RESPAWN_BACKOFF;
    }

    fn on_message(&mut self, pid: Pid, message: Message, now: Instant) {
        let Some(i) = self.index(pid) else { return };
        let w = &mut self.workers[i];
        w.last_beat = now;
        match message {
            Message::Beat => {}
            Message::Ready => {
                w.ready = true;
                let serial = w.serial;
                self.log(Level::Debug, format!("Worker {serial} [{pid}] is serving"));
            }
            Message::Retire if w.active() => {
                w.retiring = Some(Retire::MaxRequests);
                let note =
                    format!("Worker [{pid}] reached its request limit: starting its replacement");
                self.log(Level::Info, note);
            }
            Message::Retire => {}
        }
    }

    /// A worker that died unasked is replaced: at once if it served, after a pause if it was
    /// booting. A boot failure (exit 3 before `R`) instead aborts the reload that started it,
    /// or stops the master with that code.
    fn on_exit(&mut self, pid: Pid, status: Exit, now: Instant) {
        let Some(i) = self.index(pid) else { return };
        let w = self.workers.remove(i);
        let asked = w.stop.is_some();
        self.out
            .push(Action::RecordExit(exit_reason(&w, asked, status)));
        let (level, line) = exit_line(&w, asked, status);
        self.log(level, line);
        let (serial, pid) = (w.serial, w.pid);
        self.out.push(Action::Hook(Hook::ChildExit { serial, pid }));
        if asked || self.stopping.is_some() || w.ready {
            return;
        }
        if status != Exit::Code(BOOT_FAILURE) {
            self.spawn_after = now + RESPAWN_BACKOFF;
            return;
        }
        match self.reload {
            Some(first) if w.serial >= first => self.abort_reload(now),
            _ => {
                let note =
                    format!("Worker failed to boot: shutting down (exit code {BOOT_FAILURE})");
                self.log(Level::Error, note);
                self.exit_code = BOOT_FAILURE;
                self.begin_stop(false, now);
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        self.check_deadlines(now);
        if self.stopping.is_some() && self.workers.is_empty() {
            self.out.push(Action::Exit(self.exit_code));
            return;
        }
        self.maintain(now);
    }

    /// Signals the workers past a deadline. Each note is logged before its signal goes out, so
    /// a timed-out worker's stack (written by faulthandler on SIGABRT) follows the note on a
    /// shared stderr instead of being cut by it.
    fn check_deadlines(&mut self, now: Instant) {
        for i in 0..self.workers.len() {
            if self.workers[i].stop.is_some() {
                self.kill_if_late(i, now);
            } else {
                self.abort_if_hung(i, now);
            }
        }
    }

    fn kill_if_late(&mut self, i: usize, now: Instant) {
        let w = &mut self.workers[i];
        let Some(stop) = &mut w.stop else { return };
        if stop.killed || now < stop.kill_at {
            return;
        }
        stop.killed = true;
        let pid = w.pid;
        let note = format!("Worker [{pid}] did not stop in time: sending SIGKILL");
        self.log(Level::Warning, note);
        self.kill(pid, Signal::SIGKILL);
    }

    /// A ready worker whose event loop sent nothing for `--timeout-worker` is stopping from
    /// now on (its replacement can be forked); the master is asked whether it is stopped
    /// before it is signalled ([`Policy::abort_hung`]). A booting one is not judged: importing
    /// the app may take long.
    fn abort_if_hung(&mut self, i: usize, now: Instant) {
        let Some(timeout) = self.settings.timeout else {
            return;
        };
        let w = &mut self.workers[i];
        if !w.ready || now.saturating_duration_since(w.last_beat) <= timeout {
            return;
        }
        w.timed_out = true;
        w.stop = Some(Stopping {
            signal: Signal::SIGABRT,
            kill_at: now + QUICK_GRACE,
            killed: false,
        });
        let pid = w.pid;
        self.out.push(Action::Inspect { pid });
    }

    /// A hung worker gets SIGABRT, whose handler (faulthandler) writes its stack. A stopped
    /// one cannot run a handler: SIGABRT would only wait for the SIGKILL deadline, and no
    /// stack would come, so it gets SIGKILL at once.
    fn abort_hung(&mut self, pid: Pid, stopped: bool, now: Instant) {
        let Some(i) = self.index(pid) else { return };
        let w = &mut self.workers[i];
        let Some(stop) = w.stop.as_mut().filter(|_| w.timed_out) else {
            return;
        };
        let silent = now.saturating_duration_since(w.last_beat).as_secs_f64();
        let what =
            format!("Worker [{pid}] timed out: its event loop has not run for {silent:.1} s");
        let (signal, note) = if stopped {
            stop.signal = Signal::SIGKILL;
            stop.killed = true;
            let why = "it is stopped (SIGSTOP or a debugger), so no stack can be shown";
            (Signal::SIGKILL, format!("{what}; {why}: sending SIGKILL"))
        } else {
            let note = format!("{what}; sending SIGABRT (its stack follows on stderr)");
            (Signal::SIGABRT, note)
        };
        self.log(Level::Critical, note);
        self.kill(pid, signal);
    }

    /// A serving worker over `--limit-max-rss` for [`RSS_SAMPLES`] samples in a row retires
    /// as at its request limit: its replacement serves before it stops.
    fn check_rss(&mut self, pid: Pid, bytes: u64) {
        let (Some(limit), Some(i)) = (self.settings.max_rss, self.index(pid)) else {
            return;
        };
        let w = &mut self.workers[i];
        if !w.ready || !w.active() {
            return;
        }
        if bytes <= limit * MIB {
            w.over_rss = 0;
            return;
        }
        w.over_rss += 1;
        if w.over_rss < RSS_SAMPLES {
            return;
        }
        w.retiring = Some(Retire::MaxRss);
        let note = format!(
            "Worker {} [{pid}] uses {} MiB, over --limit-max-rss {limit}: starting its replacement",
            w.serial,
            bytes.div_ceil(MIB)
        );
        self.log(Level::Warning, note);
    }

    /// Forks, retires and stops workers to move towards `target` ready workers.
    fn maintain(&mut self, now: Instant) {
        if self.stopping.is_some() || self.forking.is_some() {
            return;
        }
        if self.active() < self.target {
            if now >= self.spawn_after {
                self.fork();
            }
            return;
        }
        self.retire_extra(now);
        if self.ready() >= self.target {
            self.replacements_ready(now);
        }
    }

    fn fork(&mut self) {
        let limit = request_limit(self.settings.limit, self.settings.jitter, self.rng.next());
        self.forking = Some(PendingFork {
            max_requests: limit,
        });
        let serial = self.next_serial;
        self.out.push(Action::Hook(Hook::PreFork { serial }));
        self.out.push(Action::Fork {
            serial: self.next_serial,
            max_requests: limit,
        });
    }

    /// Too many (SIGTTOU): the oldest go first.
    fn retire_extra(&mut self, now: Instant) {
        let mut active: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].active())
            .collect();
        active.sort_by_key(|&i| self.workers[i].serial);
        let extra = active.len().saturating_sub(self.target);
        for &i in &active[..extra] {
            self.replace_worker(i, "the worker count was lowered", now);
        }
    }

    /// The replacements serve: the retiring workers can stop accepting now.
    fn replacements_ready(&mut self, now: Instant) {
        for i in 0..self.workers.len() {
            let w = &self.workers[i];
            if w.stop.is_some() {
                continue;
            }
            match w.retiring {
                Some(Retire::Reload) => self.replace_worker(i, "reloaded", now),
                Some(Retire::MaxRequests) => {
                    self.replace_worker(i, "replaced after its request limit", now)
                }
                Some(Retire::MaxRss) => {
                    self.replace_worker(i, "replaced for its memory use (--limit-max-rss)", now)
                }
                None => {}
            }
        }
        if self.reload.take().is_some() {
            self.log(Level::Info, "Reload complete".into());
            self.notify(Notice::Ready(self.serving_status()));
            if std::mem::take(&mut self.reload_again) {
                self.begin_reload();
            }
        }
        if !self.announced {
            self.announced = true;
            self.notify(Notice::Ready(self.serving_status()));
        }
    }
}

fn exit_reason(w: &Worker, asked: bool, status: Exit) -> ExitReason {
    match (w.timed_out, asked, status == Exit::Code(0)) {
        (true, _, _) => ExitReason::Blocked,
        (false, true, true) if w.retiring == Some(Retire::MaxRss) => ExitReason::MaxRss,
        (false, true, true) => ExitReason::Stopped,
        (false, true, false) => ExitReason::StopTimeout,
        (false, false, _) => ExitReason::Crashed,
    }
}

fn exit_line(w: &Worker, asked: bool, status: Exit) -> (Level, String) {
    let what = match status {
        Exit::Code(code) => format!("exited with code {code}"),
        Exit::Signal(signal) => format!("was killed by signal {}", signal.as_str()),
        Exit::Unknown => "is gone".to_string(),
    };
    let (level, note) = if w.timed_out {
        (Level::Error, " after timing out")
    } else if asked && status == Exit::Code(0) {
        (Level::Info, "")
    } else if asked {
        (Level::Warning, " while stopping")
    } else {
        (Level::Error, "")
    };
    (level, format!("Worker [{}] {what}{note}", w.pid))
}

#[cfg(test)]
mod tests;
