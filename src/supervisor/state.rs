//! Small pure pieces of the master: the per-worker request limit with its jitter, and the
//! state a re-executed master (HUP with `--preload`) inherits from the image it replaces.

use std::os::fd::RawFd;

/// The environment variable carrying [`Inherited`] across `execve`.
pub const STATE_VAR: &str = "RSGI_MASTER_STATE";

/// A worker's request limit: `limit` plus a random 0..=`jitter`.
pub fn request_limit(limit: Option<u64>, jitter: u64, random: u64) -> Option<u64> {
    let extra = if jitter == 0 {
        0
    } else {
        random % jitter.saturating_add(1)
    };
    limit.map(|l| l.saturating_add(extra))
}

/// xorshift64*: plenty for spreading worker restarts, and no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A worker the previous master image left running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InheritedWorker {
    pub pid: i32,
    /// Read end of its status pipe, if still open.
    pub channel: Option<RawFd>,
    pub serial: u64,
    /// It was told to stop already.
    pub stopping: bool,
}

/// What a master passes to its next image: its sockets (kept open over `execve`) and workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inherited {
    /// The master's pid; the state is ignored by any other process.
    pub pid: u32,
    pub target: usize,
    pub next_serial: u64,
    /// Shared listening sockets.
    pub listeners: Vec<RawFd>,
    /// `--reuse-port`: the bound, non-listening socket that holds the address.
    pub reserve: Option<RawFd>,
    /// The unix socket path the master bound and must remove at exit.
    pub uds: Option<String>,
    pub workers: Vec<InheritedWorker>,
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Inherited {
    pub fn encode(&self) -> String {
        let workers = join(self.workers.iter().map(|w| {
            let channel = w.channel.map_or("-".to_string(), |c| c.to_string());
            let stopping = if w.stopping { "s" } else { "r" };
            format!("{}:{}:{}:{}", w.pid, channel, w.serial, stopping)
        }));
        let mut out = format!(
            "pid={};target={};serial={};listeners={};workers={}",
            self.pid,
            self.target,
            self.next_serial,
            join(&self.listeners),
            workers
        );
        if let Some(fd) = self.reserve {
            out.push_str(&format!(";reserve={fd}"));
        }
        if let Some(path) = &self.uds {
            // Last, so that a path may hold ';' and '='.
            out.push_str(&format!(";uds={path}"));
        }
        out
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let bad = |what: &str| format!("malformed {STATE_VAR} ({what}): {text:?}");
        let mut state = Inherited::default();
        let mut rest = text;
        while !rest.is_empty() {
            let (key, tail) = rest.split_once('=').ok_or_else(|| bad("no '='"))?;
            if key == "uds" {
                state.uds = Some(tail.to_string());
                break;
            }
            let (value, next) = tail.split_once(';').unwrap_or((tail, ""));
            rest = next;
            let number = |v: &str| v.parse::<u64>().map_err(|_| bad(key));
            match key {
                "pid" => state.pid = number(value)? as u32,
                "target" => state.target = number(value)? as usize,
                "serial" => state.next_serial = number(value)?,
                "reserve" => state.reserve = Some(number(value)? as RawFd),
                "listeners" => {
                    state.listeners = value
                        .split(',')
                        .filter(|v| !v.is_empty())
                        .map(|v| number(v).map(|n| n as RawFd))
                        .collect::<Result<_, _>>()?
                }
                "workers" => {
                    for item in value.split(',').filter(|v| !v.is_empty()) {
                        let parts: Vec<&str> = item.split(':').collect();
                        let [pid, channel, serial, stopping] = parts[..] else {
                            return Err(bad("worker"));
                        };
                        let channel = match channel {
                            "-" => None,
                            fd => Some(number(fd)? as RawFd),
                        };
                        let stopping = match stopping {
                            "s" => true,
                            "r" => false,
                            _ => return Err(bad("worker")),
                        };
                        state.workers.push(InheritedWorker {
                            pid: number(pid)? as i32,
                            channel,
                            serial: number(serial)?,
                            stopping,
                        });
                    }
                }
                _ => return Err(bad(key)),
            }
        }
        if state.pid == 0 || state.target == 0 {
            return Err(bad("pid and target are required"));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_without_jitter_is_exact() {
        assert_eq!(request_limit(Some(100), 0, 12345), Some(100));
        assert_eq!(request_limit(None, 10, 12345), None);
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut rng = Rng::seeded(42);
        let limits: Vec<u64> = (0..1000)
            .map(|_| request_limit(Some(100), 5, rng.next()).unwrap())
            .collect();
        assert!(limits.iter().all(|&l| (100..=105).contains(&l)));
        for value in 100..=105 {
            assert!(limits.contains(&value), "{value} never drawn");
        }
        assert_eq!(request_limit(Some(u64::MAX), u64::MAX, 7), Some(u64::MAX));
    }

    #[test]
    fn state_round_trips() {
        let state = Inherited {
            pid: 4242,
            target: 3,
            next_serial: 9,
            listeners: vec![3, 4],
            reserve: Some(7),
            uds: Some("/tmp/a;b=c.sock".into()),
            workers: vec![
                InheritedWorker {
                    pid: 100,
                    channel: Some(8),
                    serial: 1,
                    stopping: false,
                },
                InheritedWorker {
                    pid: 101,
                    channel: None,
                    serial: 2,
                    stopping: true,
                },
            ],
        };
        assert_eq!(Inherited::decode(&state.encode()), Ok(state));
        let minimal = Inherited {
            pid: 1,
            target: 1,
            ..Default::default()
        };
        assert_eq!(Inherited::decode(&minimal.encode()), Ok(minimal));
    }

    #[test]
    fn malformed_state_is_rejected() {
        assert!(Inherited::decode("pid=1;target=x").is_err());
        assert!(Inherited::decode("pid=1;target=1;workers=1:2:3").is_err());
        assert!(Inherited::decode("pid=1;target=1;workers=1:2:3:x").is_err());
        assert!(Inherited::decode("pid=1;target=1;bogus=3").is_err());
        assert!(Inherited::decode("target=1").is_err());
    }
}
