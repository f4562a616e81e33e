//! What the kernel tells the master about a worker process (`/proc/PID/status`): whether it is
//! stopped (SIGSTOP, a debugger), which `--timeout-worker` must know because a stopped process
//! cannot run its SIGABRT handler, and its resident memory, for `--limit-max-rss`.

use nix::unistd::Pid;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Usage {
    /// State `T` (stopped by a signal) or `t` (stopped by a tracer).
    pub stopped: bool,
    /// Resident set size in bytes (`VmRSS`); 0 when the kernel gives none (a zombie).
    pub rss: u64,
}

/// `None` when the process is gone or there is no `/proc` (not Linux).
pub fn read(pid: Pid) -> Option<Usage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse(&text)
}

fn parse(text: &str) -> Option<Usage> {
    let mut state = None;
    let mut rss = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "State" => state = value.trim().chars().next(),
            // The kernel writes it in kB, meaning KiB.
            "VmRSS" => {
                let kib = value.trim().trim_end_matches("kB").trim();
                rss = kib.parse::<u64>().ok()? * 1024;
            }
            _ => {}
        }
    }
    Some(Usage {
        stopped: matches!(state?, 'T' | 't'),
        rss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
                          VmPeak:\t  912340 kB\nVmRSS:\t   65536 kB\nThreads:\t3\n";

    #[test]
    fn reads_the_state_and_the_resident_size() {
        let usage = parse(STATUS).unwrap();
        assert_eq!(
            usage,
            Usage {
                stopped: false,
                rss: 64 << 20
            }
        );
        let stopped = STATUS.replace("S (sleeping)", "T (stopped)");
        assert!(parse(&stopped).unwrap().stopped);
        let traced = STATUS.replace("S (sleeping)", "t (tracing stop)");
        assert!(parse(&traced).unwrap().stopped);
    }

    #[test]
    fn a_zombie_has_no_resident_size_and_garbage_is_none() {
        let zombie = "Name:\tpython3\nState:\tZ (zombie)\nThreads:\t1\n";
        assert_eq!(parse(zombie).unwrap().rss, 0);
        assert_eq!(parse("no state here\n"), None);
        assert_eq!(parse(&STATUS.replace("65536", "lots")), None);
    }

    #[test]
    fn this_process_is_running_and_resident() {
        let me = read(Pid::this()).unwrap();
        assert!(!me.stopped && me.rss > 0);
    }
}
