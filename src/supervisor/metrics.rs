//! `--metrics-bind` with a master: every worker counts into its own slot of a shared mapping
//! made before the first fork, and the master answers `GET /metrics` with the sums. A worker
//! that exits leaves its counters to the master's running totals, so the sums never go down.
//!
//! The master has no runtime and no thread, so the endpoint is a small non-blocking state
//! machine driven by the master's `poll` loop: read a request head, write the whole response,
//! close. It is meant for a scraper on a private address, and bounded accordingly: a few
//! connections at a time, a few seconds each.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::metrics::{render, serve::CONTENT_TYPE, Metrics, Region};

/// Slots in the shared mapping (256 bytes each): live workers plus those still stopping.
const SLOTS: usize = 1024;
const MAX_SCRAPES: usize = 16;
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 8 * 1024;

pub struct MetricsPort {
    listener: TcpListener,
    region: Region,
    used: Vec<bool>,
    /// Counters of the workers that exited.
    retired: Box<Metrics>,
    /// Worker exits by reason, in the order of [`EXIT_REASONS`].
    exits: [u64; EXIT_REASONS.len()],
    scrapes: Vec<Scrape>,
}

struct Scrape {
    stream: TcpStream,
    head: Vec<u8>,
    /// The response, once the head is read, and how much of it was written.
    response: Option<(Vec<u8>, usize)>,
    deadline: Instant,
}

impl MetricsPort {
    pub fn bind(addr: &str, backlog: i32) -> io::Result<Self> {
        let listener = crate::net::bind_metrics(addr, backlog)?;
        listener.set_nonblocking(true)?;
        Ok(MetricsPort {
            listener,
            region: Region::shared(SLOTS)?,
            used: vec![false; SLOTS],
            retired: Box::default(),
            exits: [0; EXIT_REASONS.len()],
            scrapes: Vec::new(),
        })
    }

    /// A free slot for a new worker, if any is left (else it counts privately, unseen).
    pub fn take_slot(&mut self) -> Option<(usize, &'static Metrics)> {
        let i = self.used.iter().position(|u| !u)?;
        self.used[i] = true;
        Some((i, &self.region.slots()[i]))
    }

    /// The worker using `slot` exited: keep its counters, free the slot.
    pub fn release(&mut self, slot: usize) {
        self.retired.absorb(&self.region.slots()[slot]);
        self.used[slot] = false;
    }

    /// Counts a worker exit under `reason`, one of [`EXIT_REASONS`].
    pub fn exited(&mut self, reason: &str) {
        if let Some(i) = EXIT_REASONS.iter().position(|r| *r == reason) {
            self.exits[i] += 1;
        }
    }

    /// The descriptors to poll, with their events.
    pub fn poll_fds(&self) -> Vec<(RawFd, libc::c_short)> {
        let mut fds = vec![(self.listener.as_raw_fd(), libc::POLLIN)];
        for s in &self.scrapes {
            let events = if s.response.is_some() {
                libc::POLLOUT
            } else {
                libc::POLLIN
            };
            fds.push((s.stream.as_raw_fd(), events));
        }
        fds
    }

    /// Descriptors a forked worker closes.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.poll_fds().into_iter().map(|(fd, _)| fd).collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.scrapes.iter().map(|s| s.deadline).min()
    }

    /// Accepts, reads and answers what can be done without blocking.
    pub fn step(&mut self, workers: usize) {
        let now = Instant::now();
        while let Ok((stream, _)) = self.listener.accept() {
            if self.scrapes.len() >= MAX_SCRAPES || stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.scrapes.push(Scrape {
                stream,
                head: Vec::new(),
                response: None,
                deadline: now + SCRAPE_TIMEOUT,
            });
        }
        let mut scrapes = std::mem::take(&mut self.scrapes);
        scrapes.retain_mut(|s| now < s.deadline && self.advance(s, workers));
        self.scrapes = scrapes;
    }

    /// Moves one scrape on; false once it is finished or failed.
    fn advance(&self, s: &mut Scrape, workers: usize) -> bool {
        if s.response.is_none() {
            let mut buf = [0u8; 2048];
            loop {
                match s.stream.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(n) => s.head.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
                if s.head.len() > MAX_HEAD {
                    return false;
                }
            }
            let Some(end) = s.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                return true;
            };
            s.response = Some((self.respond(&s.head[..end], workers), 0));
        }
        let Some((response, written)) = &mut s.response else {
            return true;
        };
        while *written < response.len() {
            match s.stream.write(&response[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        false
    }

    fn respond(&self, head: &[u8], workers: usize) -> Vec<u8> {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let mut parts = line.split(|&b| b == b' ');
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        let path = target.split(|&b| b == b'?').next().unwrap_or_default();
        let (status, content_type, body) = if path != b"/metrics" {
            ("404 Not Found", "text/plain", b"not found\n".to_vec())
        } else if method != b"GET" && method != b"HEAD" {
            (
                "405 Method Not Allowed",
                "text/plain",
                b"GET only\n".to_vec(),
            )
        } else {
            ("200 OK", CONTENT_TYPE, self.render(workers).into_bytes())
        };
        let mut out = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if method != b"HEAD" {
            out.extend_from_slice(&body);
        }
        out
    }

    fn render(&self, workers: usize) -> String {
        let mut slots: Vec<&Metrics> = self
            .used
            .iter()
            .zip(self.region.slots())
            .filter(|(used, _)| **used)
            .map(|(_, slot)| slot)
            .collect();
        slots.push(&self.retired);
        render(&slots, &master_families(workers, &self.exits))
    }
}

/// Why a worker process ended: asked to stop (reload, max requests, scaling down, shutdown),
/// killed after not stopping in time, killed for a blocked event loop, died on its own, or
/// replaced for its memory use (`--limit-max-rss`).
pub const EXIT_REASONS: [&str; 5] = ["stopped", "stop_timeout", "blocked", "crashed", "max_rss"];

/// The master's own metric families.
fn master_families(workers: usize, exits: &[u64]) -> String {
    let mut text = format!(
        "# HELP rsgi_workers Worker processes serving.\n# TYPE rsgi_workers gauge\n\
         rsgi_workers {workers}\n\
         # HELP rsgi_worker_exits_total Worker processes that exited, by reason.\n\
         # TYPE rsgi_worker_exits_total counter\n"
    );
    for (reason, count) in EXIT_REASONS.iter().zip(exits) {
        text.push_str(&format!(
            "rsgi_worker_exits_total{{reason=\"{reason}\"}} {count}\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_families_are_prometheus_text() {
        let text = master_families(3, &[7, 0, 1, 2]);
        assert!(text.contains("\nrsgi_workers 3\n"));
        assert!(text.contains("\nrsgi_worker_exits_total{reason=\"stopped\"} 7\n"));
        assert!(text.ends_with("\nrsgi_worker_exits_total{reason=\"crashed\"} 2\n"));
        assert_eq!(text.matches("# TYPE").count(), 2);
        let text = master_families(3, &[7, 0, 1, 2, 4]);
        assert!(text.ends_with("\nrsgi_worker_exits_total{reason=\"max_rss\"} 4\n"));
    }
}
