//! The master's rules, driven through a simulated loop: forks get made-up pids and time moves
//! only when a test says so.

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn settings(workers: usize) -> Settings {
    Settings {
        workers,
        reload_by_exec: false,
        pid_file: None,
        limit: None,
        jitter: 0,
        timeout: None,
        max_rss: None,
        graceful: Duration::from_secs(30),
        shutdown_delay: Duration::from_secs(5),
    }
}

/// The master loop, without its effects: it records what the policy asks for.
struct Sim {
    policy: Policy,
    now: Instant,
    /// Every pid forked so far, in order.
    forked: Vec<Pid>,
    /// The next fork fails.
    fail_fork: bool,
    /// Workers stopped by SIGSTOP, as [`Action::Inspect`] finds them.
    stopped: Vec<Pid>,
}

impl Sim {
    fn new(settings: Settings) -> Sim {
        Sim::adopting(settings, None)
    }

    fn adopting(settings: Settings, handover: Option<Handover>) -> Sim {
        let now = Instant::now();
        Sim {
            policy: Policy::new(settings, 7, handover, now),
            now,
            forked: Vec::new(),
            fail_fork: false,
            stopped: Vec::new(),
        }
    }

    /// Started, with `settings.workers` workers all serving.
    fn serving(settings: Settings) -> Sim {
        let mut sim = Sim::new(settings);
        sim.feed(start());
        let workers = sim.tick();
        for pid in forked_pids(&sim, &workers) {
            sim.ready(pid);
        }
        sim.tick();
        sim
    }

    /// Feeds one event, answering forks and inspections as the real loop does; returns every
    /// action, the answers to an outcome right after the action.
    fn feed(&mut self, event: Event) -> Vec<Action> {
        let mut done = Vec::new();
        for action in self.policy.handle(event, self.now) {
            let outcome = match action {
                Action::Fork { serial, .. } => Some(self.fork(serial)),
                Action::Inspect { pid } => Some(Event::Inspected {
                    pid,
                    stopped: self.stopped.contains(&pid),
                }),
                _ => None,
            };
            done.push(action);
            if let Some(outcome) = outcome {
                done.extend(self.feed(outcome));
            }
        }
        done
    }

    fn fork(&mut self, serial: u64) -> Event {
        if std::mem::take(&mut self.fail_fork) {
            return Event::ForkFailed {
                error: "EAGAIN".into(),
            };
        }
        let pid = Pid::from_raw(1000 + self.forked.len() as i32);
        self.forked.push(pid);
        Event::Forked { serial, pid }
    }

    fn tick(&mut self) -> Vec<Action> {
        self.feed(Event::Tick)
    }

    /// Lets `time` pass, then ticks.
    fn after(&mut self, time: Duration) -> Vec<Action> {
        self.now += time;
        self.tick()
    }

    fn ready(&mut self, pid: Pid) -> Vec<Action> {
        self.message(pid, Message::Ready)
    }

    fn message(&mut self, pid: Pid, message: Message) -> Vec<Action> {
        self.feed(Event::Message { pid, message })
    }

    fn exited(&mut self, pid: Pid, status: Exit) -> Vec<Action> {
        self.feed(Event::Exited { pid, status })
    }

    fn signal(&mut self, signal: Signal) -> Vec<Action> {
        self.feed(Event::Signal(signal))
    }

    /// A memory sample of `pid`, in MiB, then the tick that follows it in the loop.
    fn rss(&mut self, pid: Pid, mib: u64) -> Vec<Action> {
        let mut done = self.feed(Event::Rss {
            pid,
            bytes: mib << 20,
        });
        done.extend(self.after(SEC));
        done
    }
}

fn start() -> Event {
    Event::Start {
        pid: 42,
        addresses: vec!["http://127.0.0.1:8000".into()],
    }
}

fn pid(n: usize) -> Pid {
    Pid::from_raw(1000 + n as i32)
}

/// The pids of the forks among `actions`.
fn forked_pids(sim: &Sim, actions: &[Action]) -> Vec<Pid> {
    let forks = actions
        .iter()
        .filter(|a| matches!(a, Action::Fork { .. }))
        .count();
    sim.forked[sim.forked.len() - forks..].to_vec()
}

fn forks(actions: &[Action]) -> Vec<u64> {
    let serials = actions.iter().filter_map(|a| match a {
        Action::Fork { serial, .. } => Some(*serial),
        _ => None,
    });
    serials.collect()
}

fn kills(actions: &[Action]) -> Vec<(Pid, Signal)> {
    let kills = actions.iter().filter_map(|a| match a {
        Action::Kill { pid, signal } => Some((*pid, *signal)),
        _ => None,
    });
    kills.collect()
}

/// The first log line holding `text`, with its level.
fn logged(actions: &[Action], text: &str) -> Option<(Level, String)> {
    actions.iter().find_map(|a| match a {
        Action::Log(level, line) if line.contains(text) => Some((*level, line.clone())),
        _ => None,
    })
}

fn notices(actions: &[Action]) -> Vec<Notice> {
    let notices = actions.iter().filter_map(|a| match a {
        Action::Notify(n) => Some(n.clone()),
        _ => None,
    });
    notices.collect()
}

fn hooks(actions: &[Action]) -> Vec<Hook> {
    let called = actions.iter().filter_map(|a| match a {
        Action::Hook(hook) => Some(hook.clone()),
        _ => None,
    });
    called.collect()
}

fn exit_code(actions: &[Action]) -> Option<i32> {
    actions.iter().find_map(|a| match a {
        Action::Exit(code) => Some(*code),
        _ => None,
    })
}

fn ready_notice(workers: usize) -> Notice {
    Notice::Ready(format!("Serving with {workers} workers"))
}

#[test]
fn a_replaced_worker_skips_the_shutdown_delay() {
    let s = settings(2);
    assert_eq!(GracefulStop::Replaced.time(&s), s.graceful + LIFESPAN_GRACE);
    assert_eq!(
        GracefulStop::Server.time(&s),
        s.shutdown_delay + s.graceful + LIFESPAN_GRACE
    );
    // The worker tells them apart by the signal.
    assert_eq!(GracefulStop::Server.signal(), Signal::SIGTERM);
    assert_eq!(GracefulStop::Replaced.signal(), Signal::SIGUSR2);
}

#[test]
fn start_up_forks_the_workers_and_announces_readiness_once_all_serve() {
    let mut sim = Sim::new(Settings {
        pid_file: Some("/run/rsgi.pid".into()),
        ..settings(3)
    });
    let started = sim.feed(start());
    assert_eq!(started[0], Action::WritePidFile("/run/rsgi.pid".into()));
    assert!(logged(&started, "Started master process [42]").is_some());
    assert!(logged(&started, "rsgi running on http://127.0.0.1:8000").is_some());
    assert_eq!(
        notices(&started),
        [Notice::Status("Starting 3 workers".into())]
    );
    let booting = sim.tick();
    assert_eq!(forks(&booting), [1, 2, 3]);
    assert!(logged(&booting, "Booting worker 3 with pid [1002]").is_some());
    assert!(sim.tick().is_empty(), "no worker is forked twice");
    sim.ready(pid(0));
    sim.ready(pid(1));
    assert!(notices(&sim.tick()).is_empty(), "not all of them serve yet");
    sim.ready(pid(2));
    assert_eq!(notices(&sim.tick()), [ready_notice(3)]);
    assert_eq!(sim.policy.serving(), 3);
    assert!(sim.tick().is_empty(), "readiness is announced once");
}

#[test]
fn a_worker_that_dies_is_replaced_and_its_exit_logged() {
    let mut sim = Sim::serving(settings(2));
    let died = sim.exited(pid(0), Exit::Code(1));
    assert_eq!(
        logged(&died, "Worker [1000]"),
        Some((Level::Error, "Worker [1000] exited with code 1".into()))
    );
    assert!(died.contains(&Action::RecordExit(ExitReason::Crashed)));
    assert_eq!(
        forks(&sim.tick()),
        [3],
        "a serving worker is replaced at once"
    );
    let killed = sim.exited(pid(1), Exit::Signal(Signal::SIGSEGV));
    assert_eq!(
        logged(&killed, "Worker [1001]"),
        Some((
            Level::Error,
            "Worker [1001] was killed by signal SIGSEGV".into()
        ))
    );
    assert_eq!(forks(&sim.tick()), [4]);
}

#[test]
fn a_worker_that_dies_while_booting_is_replaced_after_a_pause() {
    let mut sim = Sim::new(settings(1));
    sim.feed(start());
    sim.tick();
    sim.exited(pid(0), Exit::Code(1));
    assert!(forks(&sim.tick()).is_empty(), "no fork loop");
    assert_eq!(sim.policy.next_deadline(sim.now), Some(sim.now + SEC));
    assert_eq!(forks(&sim.after(SEC)), [2]);
}

#[test]
fn a_failed_fork_is_tried_again_after_a_pause() {
    let mut sim = Sim::new(settings(2));
    sim.feed(start());
    sim.fail_fork = true;
    let first = sim.tick();
    assert!(logged(&first, "Cannot start a worker: EAGAIN").is_some());
    assert_eq!(forks(&first), [1], "no second fork right after a failure");
    assert!(sim.forked.is_empty());
    assert!(forks(&sim.tick()).is_empty());
    assert_eq!(forks(&sim.after(SEC)), [1, 2], "the serial is not used up");
}

#[test]
fn reload_stops_the_old_workers_only_once_every_new_one_serves() {
    let mut sim = Sim::serving(settings(2));
    let hup = sim.signal(Signal::SIGHUP);
    assert_eq!(notices(&hup), [Notice::Reloading]);
    assert!(logged(&hup, "SIGHUP: reloading, starting 2 new workers").is_some());
    assert_eq!(forks(&sim.tick()), [3, 4]);
    sim.ready(pid(2));
    assert!(
        kills(&sim.tick()).is_empty(),
        "one new worker is not enough"
    );
    assert_eq!(sim.policy.serving(), 3);
    sim.ready(pid(3));
    let done = sim.tick();
    assert_eq!(
        kills(&done),
        [(pid(0), Signal::SIGUSR2), (pid(1), Signal::SIGUSR2)]
    );
    assert!(logged(&done, "Stopping worker [1000]: reloaded").is_some());
    assert!(logged(&done, "Reload complete").is_some());
    assert_eq!(notices(&done), [ready_notice(2)]);
    let gone = sim.exited(pid(0), Exit::Code(0));
    assert_eq!(
        logged(&gone, "Worker [1000]"),
        Some((Level::Info, "Worker [1000] exited with code 0".into()))
    );
    assert!(gone.contains(&Action::RecordExit(ExitReason::Stopped)));
    assert!(
        forks(&sim.tick()).is_empty(),
        "a retired worker is not replaced"
    );
}

#[test]
fn a_failed_reload_leaves_the_old_workers_serving() {
    let mut sim = Sim::serving(settings(2));
    sim.signal(Signal::SIGHUP);
    sim.tick();
    sim.ready(pid(2));
    let failed = sim.exited(pid(3), Exit::Code(BOOT_FAILURE));
    let (level, _) = logged(&failed, "Reload failed").expect("the failure is logged");
    assert_eq!(level, Level::Error);
    assert_eq!(
        kills(&failed),
        [(pid(2), Signal::SIGUSR2)],
        "the new worker that booted stops, the old ones serve on"
    );
    assert_eq!(
        notices(&failed),
        [Notice::Ready(
            "Reload failed; serving with the previous workers".into()
        )]
    );
    assert!(logged(&failed, "shutting down").is_none());
    sim.exited(pid(2), Exit::Code(0));
    let after = sim.after(Duration::from_secs(60));
    assert!(forks(&after).is_empty() && kills(&after).is_empty());
    assert_eq!(exit_code(&after), None);
    assert_eq!(sim.policy.serving(), 2);
    sim.signal(Signal::SIGHUP);
    assert_eq!(forks(&sim.tick()), [5, 6], "a later reload starts afresh");
}

#[test]
fn a_boot_failure_at_start_stops_the_master_with_its_code() {
    let mut sim = Sim::new(settings(2));
    sim.feed(start());
    sim.tick();
    sim.ready(pid(1));
    let failed = sim.exited(pid(0), Exit::Code(BOOT_FAILURE));
    assert!(logged(
        &failed,
        "Worker failed to boot: shutting down (exit code 3)"
    )
    .is_some());
    assert!(failed.contains(&Action::CloseSockets));
    assert_eq!(notices(&failed), [Notice::Stopping]);
    assert_eq!(kills(&failed), [(pid(1), Signal::SIGTERM)]);
    let waiting = sim.tick();
    assert_eq!(exit_code(&waiting), None, "the other worker is still there");
    assert!(forks(&waiting).is_empty());
    sim.exited(pid(1), Exit::Code(0));
    assert_eq!(exit_code(&sim.tick()), Some(BOOT_FAILURE));
}

#[test]
fn a_hup_during_a_reload_queues_another() {
    let mut sim = Sim::serving(settings(1));
    sim.signal(Signal::SIGHUP);
    assert_eq!(forks(&sim.tick()), [2]);
    let again = sim.signal(Signal::SIGHUP);
    assert!(logged(&again, "a reload is under way; another will follow it").is_some());
    assert!(notices(&again).is_empty());
    assert!(forks(&sim.tick()).is_empty(), "one reload at a time");
    sim.ready(pid(1));
    let done = sim.tick();
    assert!(logged(&done, "Reload complete").is_some());
    assert_eq!(notices(&done), [ready_notice(1), Notice::Reloading]);
    assert_eq!(kills(&done), [(pid(0), Signal::SIGUSR2)]);
    assert_eq!(forks(&sim.tick()), [3], "the queued reload starts");
    sim.ready(pid(2));
    assert_eq!(kills(&sim.tick()), [(pid(1), Signal::SIGUSR2)]);
}

#[test]
fn ttin_adds_a_worker_and_ttou_stops_the_oldest_gracefully() {
    let mut sim = Sim::serving(settings(2));
    let ttin = sim.signal(Signal::SIGTTIN);
    assert!(logged(&ttin, "raising the worker count to 3").is_some());
    assert_eq!(forks(&sim.tick()), [3]);
    sim.ready(pid(2));
    sim.signal(Signal::SIGTTOU);
    let lowered = sim.tick();
    assert_eq!(kills(&lowered), [(pid(0), Signal::SIGUSR2)]);
    assert!(logged(
        &lowered,
        "Stopping worker [1000]: the worker count was lowered"
    )
    .is_some());
    sim.signal(Signal::SIGTTOU);
    assert_eq!(kills(&sim.tick()), [(pid(1), Signal::SIGUSR2)]);
    let floor = sim.signal(Signal::SIGTTOU);
    assert!(logged(&floor, "already down to one worker").is_some());
    assert!(kills(&sim.tick()).is_empty());
    sim.exited(pid(0), Exit::Code(0));
    assert!(forks(&sim.tick()).is_empty());
}

#[test]
fn a_worker_at_its_request_limit_is_replaced_before_it_stops() {
    let mut sim = Sim::new(Settings {
        limit: Some(100),
        ..settings(1)
    });
    sim.feed(start());
    let boot = sim.tick();
    assert!(boot.contains(&Action::Fork {
        serial: 1,
        max_requests: Some(100)
    }));
    assert!(logged(&boot, "(request limit 100)").is_some());
    sim.ready(pid(0));
    sim.tick();
    let limit = sim.message(pid(0), Message::Retire);
    assert!(logged(&limit, "Worker [1000] reached its request limit").is_some());
    assert!(
        sim.message(pid(0), Message::Retire).is_empty(),
        "once is enough"
    );
    let replacement = sim.tick();
    assert_eq!(forks(&replacement), [2]);
    assert!(kills(&replacement).is_empty(), "it serves until replaced");
    sim.ready(pid(1));
    let retired = sim.tick();
    assert_eq!(kills(&retired), [(pid(0), Signal::SIGUSR2)]);
    assert!(logged(&retired, "replaced after its request limit").is_some());
}

#[test]
fn the_request_limit_jitter_stays_within_bounds() {
    let mut sim = Sim::new(Settings {
        limit: Some(100),
        jitter: 10,
        ..settings(20)
    });
    sim.feed(start());
    for action in sim.tick() {
        if let Action::Fork { max_requests, .. } = action {
            assert!(matches!(max_requests, Some(100..=110)));
        }
    }
}

fn timing_out() -> Sim {
    Sim::serving(Settings {
        timeout: Some(Duration::from_secs(10)),
        ..settings(1)
    })
}

#[test]
fn a_hung_worker_is_replaced_and_gets_sigabrt_then_sigkill() {
    let mut sim = timing_out();
    assert_eq!(
        sim.policy.next_deadline(sim.now),
        Some(sim.now + Duration::from_secs(10))
    );
    assert!(
        sim.after(Duration::from_secs(10)).is_empty(),
        "not past it yet"
    );
    let hung = sim.after(SEC);
    let (level, line) = logged(&hung, "timed out").expect("logged");
    assert_eq!(level, Level::Critical);
    assert!(line.contains("has not run for 11.0 s"), "{line}");
    assert_eq!(kills(&hung), [(pid(0), Signal::SIGABRT)]);
    assert_eq!(forks(&hung), [2], "its replacement boots at once");
    assert!(sim.after(2 * SEC).is_empty());
    let late = sim.after(SEC);
    assert_eq!(kills(&late), [(pid(0), Signal::SIGKILL)]);
    assert!(logged(&late, "did not stop in time").is_some());
    assert!(sim.after(10 * SEC).is_empty(), "SIGKILL goes once");
    let gone = sim.exited(pid(0), Exit::Signal(Signal::SIGKILL));
    assert!(gone.contains(&Action::RecordExit(ExitReason::Blocked)));
    assert!(logged(&gone, "was killed by signal SIGKILL after timing out").is_some());
    assert!(forks(&sim.tick()).is_empty(), "replaced already");
}

#[test]
fn a_stopped_worker_that_times_out_is_killed_at_once_without_a_stack() {
    let mut sim = timing_out();
    sim.stopped.push(pid(0));
    let hung = sim.after(11 * SEC);
    assert!(hung.contains(&Action::Inspect { pid: pid(0) }));
    let (level, line) = logged(&hung, "timed out").expect("logged");
    assert_eq!(level, Level::Critical);
    assert!(line.contains("has not run for 11.0 s"), "{line}");
    assert!(line.contains("is stopped (SIGSTOP"), "{line}");
    assert!(!line.contains("stack follows"), "{line}");
    assert_eq!(kills(&hung), [(pid(0), Signal::SIGKILL)], "no SIGABRT");
    assert_eq!(forks(&hung), [2], "its replacement boots at once");
    assert!(sim.after(10 * SEC).is_empty(), "SIGKILL goes once");
    let gone = sim.exited(pid(0), Exit::Signal(Signal::SIGKILL));
    assert!(gone.contains(&Action::RecordExit(ExitReason::Blocked)));
    assert!(logged(&gone, "was killed by signal SIGKILL after timing out").is_some());
}

#[test]
fn heartbeats_keep_a_worker_from_timing_out() {
    let mut sim = timing_out();
    for _ in 0..20 {
        sim.message(pid(0), Message::Beat);
        assert!(kills(&sim.after(5 * SEC)).is_empty());
    }
}

#[test]
fn a_booting_worker_is_not_timed_out() {
    let mut sim = Sim::new(Settings {
        timeout: Some(Duration::from_secs(10)),
        ..settings(1)
    });
    sim.feed(start());
    sim.tick();
    assert_eq!(sim.policy.next_deadline(sim.now), None);
    assert!(kills(&sim.after(Duration::from_secs(600))).is_empty());
}

#[test]
fn a_graceful_stop_waits_for_the_workers_then_exits() {
    let mut sim = Sim::serving(settings(2));
    let term = sim.signal(Signal::SIGTERM);
    assert_eq!(notices(&term), [Notice::Stopping]);
    assert!(term.contains(&Action::CloseSockets));
    assert!(logged(&term, "Shutting down (graceful): stopping 2 workers").is_some());
    assert_eq!(
        kills(&term),
        [(pid(0), Signal::SIGTERM), (pid(1), Signal::SIGTERM)]
    );
    sim.exited(pid(0), Exit::Code(0));
    let waiting = sim.tick();
    assert!(
        forks(&waiting).is_empty(),
        "nothing is replaced while stopping"
    );
    assert_eq!(exit_code(&waiting), None);
    // --shutdown-delay 5 + --timeout-graceful-shutdown 30 + the lifespan's 5.
    assert!(sim.after(Duration::from_secs(39)).is_empty());
    assert_eq!(kills(&sim.after(SEC)), [(pid(1), Signal::SIGKILL)]);
    let killed = sim.exited(pid(1), Exit::Signal(Signal::SIGKILL));
    assert!(logged(&killed, "while stopping").is_some());
    assert!(killed.contains(&Action::RecordExit(ExitReason::StopTimeout)));
    assert_eq!(exit_code(&sim.tick()), Some(0));
}

#[test]
fn a_second_term_makes_the_stop_quick() {
    let mut sim = Sim::serving(settings(2));
    sim.signal(Signal::SIGTERM);
    let second = sim.signal(Signal::SIGTERM);
    assert!(logged(&second, "Shutting down (quick)").is_some());
    assert_eq!(
        kills(&second),
        [(pid(0), Signal::SIGQUIT), (pid(1), Signal::SIGQUIT)]
    );
    assert!(notices(&second).is_empty(), "systemd heard once");
    assert!(
        sim.signal(Signal::SIGTERM).is_empty(),
        "quick is as far as it goes"
    );
    assert_eq!(
        kills(&sim.after(3 * SEC)),
        [(pid(0), Signal::SIGKILL), (pid(1), Signal::SIGKILL)]
    );
}

#[test]
fn quit_stops_quickly_and_spares_a_booting_worker_its_core_dump() {
    let mut sim = Sim::serving(settings(1));
    sim.signal(Signal::SIGTTIN);
    sim.tick();
    let quit = sim.signal(Signal::SIGQUIT);
    assert_eq!(
        kills(&quit),
        [(pid(0), Signal::SIGQUIT), (pid(1), Signal::SIGTERM)]
    );
    assert!(sim.after(2 * SEC).is_empty());
    assert_eq!(
        kills(&sim.after(SEC)),
        [(pid(0), Signal::SIGKILL), (pid(1), Signal::SIGKILL)]
    );
    sim.exited(pid(0), Exit::Signal(Signal::SIGKILL));
    sim.exited(pid(1), Exit::Signal(Signal::SIGKILL));
    assert_eq!(exit_code(&sim.tick()), Some(0));
}

#[test]
fn usr1_reopens_the_logs_and_tells_the_serving_workers() {
    let mut sim = Sim::serving(settings(2));
    sim.signal(Signal::SIGTTOU);
    sim.tick();
    let usr1 = sim.signal(Signal::SIGUSR1);
    assert_eq!(usr1[0], Action::ReopenLogs);
    assert_eq!(kills(&usr1), [(pid(1), Signal::SIGUSR1)]);
}

#[test]
fn a_reload_by_exec_hands_every_worker_over() {
    let mut sim = Sim::serving(Settings {
        reload_by_exec: true,
        ..settings(2)
    });
    sim.signal(Signal::SIGTTOU);
    sim.tick();
    let hup = sim.signal(Signal::SIGHUP);
    let handover = Handover {
        target: 1,
        next_serial: 3,
        workers: vec![
            HandedWorker {
                pid: pid(0),
                serial: 1,
                stopping: true,
            },
            HandedWorker {
                pid: pid(1),
                serial: 2,
                stopping: false,
            },
        ],
    };
    assert!(hup.contains(&Action::ReExec(handover)));
    let failed = sim.feed(Event::ReExecFailed {
        error: "ENOENT".into(),
    });
    assert!(logged(
        &failed,
        "Reload failed: cannot re-execute the master: ENOENT"
    )
    .is_some());
    assert_eq!(notices(&failed), [ready_notice(1)]);
}

fn adopted(stopping: bool) -> Handover {
    Handover {
        target: 2,
        next_serial: 5,
        workers: vec![
            HandedWorker {
                pid: Pid::from_raw(500),
                serial: 3,
                stopping,
            },
            HandedWorker {
                pid: Pid::from_raw(501),
                serial: 4,
                stopping: false,
            },
        ],
    }
}

#[test]
fn a_re_executed_master_retires_the_adopted_workers_once_its_own_serve() {
    let mut sim = Sim::adopting(settings(9), Some(adopted(false)));
    assert!(
        notices(&sim.feed(start())).is_empty(),
        "still READY for systemd"
    );
    assert_eq!(forks(&sim.tick()), [5, 6]);
    sim.ready(pid(0));
    sim.ready(pid(1));
    let done = sim.tick();
    assert_eq!(
        kills(&done),
        [
            (Pid::from_raw(500), Signal::SIGUSR2),
            (Pid::from_raw(501), Signal::SIGUSR2)
        ]
    );
    assert_eq!(notices(&done), [ready_notice(2)]);
}

#[test]
fn a_re_executed_master_that_cannot_boot_a_worker_keeps_the_adopted_ones() {
    let mut sim = Sim::adopting(settings(2), Some(adopted(false)));
    sim.feed(start());
    sim.tick();
    let failed = sim.exited(pid(0), Exit::Code(BOOT_FAILURE));
    assert!(logged(&failed, "Reload failed").is_some());
    assert_eq!(exit_code(&sim.after(SEC)), None);
}

#[test]
fn a_re_executed_master_with_nothing_to_fall_back_to_exits_with_the_boot_failure() {
    let mut sim = Sim::adopting(settings(2), Some(adopted(true)));
    sim.feed(start());
    sim.tick();
    sim.exited(Pid::from_raw(501), Exit::Code(0));
    let failed = sim.exited(pid(0), Exit::Code(BOOT_FAILURE));
    assert!(logged(&failed, "Reload failed").is_some());
    assert_eq!(notices(&failed), [Notice::Stopping]);
    sim.exited(pid(1), Exit::Code(0));
    sim.exited(Pid::from_raw(500), Exit::Code(0));
    assert_eq!(exit_code(&sim.tick()), Some(BOOT_FAILURE));
}

#[test]
fn abandoning_stops_the_adopted_workers_and_exits_with_the_code() {
    let mut sim = Sim::adopting(settings(2), Some(adopted(true)));
    let abandon = sim.feed(Event::Abandon { code: 3 });
    assert_eq!(kills(&abandon), [(Pid::from_raw(501), Signal::SIGTERM)]);
    sim.exited(Pid::from_raw(500), Exit::Code(0));
    sim.exited(Pid::from_raw(501), Exit::Code(0));
    assert_eq!(exit_code(&sim.tick()), Some(3));
}

#[test]
fn every_exit_reason_is_a_metrics_label() {
    use super::super::metrics::EXIT_REASONS;
    let reasons = [
        ExitReason::Blocked,
        ExitReason::Stopped,
        ExitReason::StopTimeout,
        ExitReason::Crashed,
        ExitReason::MaxRss,
    ];
    for reason in reasons {
        assert!(EXIT_REASONS.contains(&reason.as_str()), "{reason:?}");
    }
}

fn limiting_rss() -> Sim {
    Sim::serving(Settings {
        max_rss: Some(512),
        ..settings(1)
    })
}

#[test]
fn a_worker_over_the_rss_limit_once_is_left_alone() {
    let mut sim = limiting_rss();
    assert!(sim.policy.wants_rss());
    assert!(sim.rss(pid(0), 600).is_empty());
    assert!(
        sim.rss(pid(0), 512).is_empty(),
        "at the limit is not over it"
    );
    assert!(
        sim.rss(pid(0), 600).is_empty(),
        "back under resets the count"
    );
    assert!(sim.rss(pid(0), 100).is_empty());
}

#[test]
fn a_worker_over_the_rss_limit_twice_is_replaced_before_it_stops() {
    let mut sim = limiting_rss();
    sim.rss(pid(0), 600);
    let over = sim.rss(pid(0), 612);
    let (level, line) = logged(&over, "--limit-max-rss").expect("logged");
    assert_eq!(level, Level::Warning);
    assert_eq!(
        line,
        "Worker 1 [1000] uses 612 MiB, over --limit-max-rss 512: starting its replacement"
    );
    assert_eq!(forks(&over), [2]);
    assert!(kills(&over).is_empty(), "it serves until replaced");
    assert!(sim.rss(pid(0), 700).is_empty(), "once is enough");
    let retired = sim.ready(pid(1));
    assert!(kills(&retired).is_empty(), "retired on the tick");
    let retired = sim.tick();
    assert_eq!(kills(&retired), [(pid(0), Signal::SIGUSR2)]);
    assert!(logged(&retired, "replaced for its memory use").is_some());
    let gone = sim.exited(pid(0), Exit::Code(0));
    assert!(gone.contains(&Action::RecordExit(ExitReason::MaxRss)));
    assert!(forks(&sim.tick()).is_empty(), "replaced already");
}

#[test]
fn rss_is_not_judged_while_booting_nor_without_a_limit() {
    let mut sim = Sim::new(Settings {
        max_rss: Some(512),
        ..settings(1)
    });
    sim.feed(start());
    sim.tick();
    for _ in 0..5 {
        assert!(
            sim.rss(pid(0), 4096).is_empty(),
            "importing may take memory"
        );
    }
    let mut sim = Sim::serving(settings(1));
    assert!(!sim.policy.wants_rss());
    for _ in 0..5 {
        assert!(sim.rss(pid(0), 4096).is_empty());
    }
}

#[test]
fn the_server_hooks_come_before_a_fork_after_an_exit_and_with_each_worker_count() {
    let mut sim = Sim::new(settings(1));
    sim.feed(start());
    let boot = sim.tick();
    let hook = boot
        .iter()
        .position(|a| a == &Action::Hook(Hook::PreFork { serial: 1 }));
    let fork = boot
        .iter()
        .position(|a| matches!(a, Action::Fork { serial: 1, .. }));
    assert!(hook.unwrap() < fork.unwrap());
    sim.ready(pid(0));
    sim.tick();
    let ttin = sim.signal(Signal::SIGTTIN);
    assert_eq!(hooks(&ttin), [Hook::NworkersChanged { new: 2, old: 1 }]);
    assert_eq!(hooks(&sim.tick()), [Hook::PreFork { serial: 2 }]);
    sim.ready(pid(1));
    let ttou = sim.signal(Signal::SIGTTOU);
    assert_eq!(hooks(&ttou), [Hook::NworkersChanged { new: 1, old: 2 }]);
    assert!(hooks(&sim.signal(Signal::SIGTTOU)).is_empty());
    sim.tick();
    let exit = sim.exited(pid(0), Exit::Code(0));
    let child_exit = Hook::ChildExit {
        serial: 1,
        pid: pid(0),
    };
    assert_eq!(hooks(&exit), [child_exit]);
    let hup = sim.signal(Signal::SIGHUP);
    assert_eq!(hooks(&hup), [Hook::OnReload]);
}

#[test]
fn a_reload_by_exec_calls_on_reload_then_pre_exec() {
    let mut sim = Sim::serving(Settings {
        reload_by_exec: true,
        ..settings(1)
    });
    let hup = sim.signal(Signal::SIGHUP);
    assert_eq!(hooks(&hup), [Hook::OnReload, Hook::PreExec]);
    let exec = hup.iter().position(|a| matches!(a, Action::ReExec(_)));
    assert_eq!(hup[exec.unwrap() - 1], Action::Hook(Hook::PreExec));
}
