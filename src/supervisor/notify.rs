//! systemd's readiness protocol (`sd_notify`): newline-separated `KEY=VALUE` lines in one
//! datagram to the AF_UNIX socket named by `NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). Without the variable every call is a no-op.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use nix::sys::socket::{sendto, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

/// Where `NOTIFY_SOCKET` points.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Path(Vec<u8>),
    Abstract(Vec<u8>),
}

/// Reads a `NOTIFY_SOCKET` value; `None` when empty or not a unix socket address.
pub fn parse_target(value: &[u8]) -> Option<Target> {
    match value {
        [] => None,
        [b'@', name @ ..] if !name.is_empty() => Some(Target::Abstract(name.to_vec())),
        [b'/', ..] => Some(Target::Path(value.to_vec())),
        _ => None,
    }
}

/// One notification, e.g. `[("READY", "1"), ("STATUS", "serving")]`. A value's line breaks
/// would start a new assignment, so they become spaces.
pub fn message(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, value) in fields {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(key);
        out.push('=');
        out.extend(
            value
                .chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
        );
    }
    out
}

/// `CLOCK_MONOTONIC` in microseconds, which `RELOADING=1` carries as `MONOTONIC_USEC`.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}

pub struct Notifier {
    socket: OwnedFd,
    addr: UnixAddr,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; `Ok(None)` when it is unset.
    pub fn from_env() -> io::Result<Option<Self>> {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        // macOS has no SOCK_CLOEXEC (nor systemd, so NOTIFY_SOCKET is not set there).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        const CLOEXEC: SockFlag = SockFlag::SOCK_CLOEXEC;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        const CLOEXEC: SockFlag = SockFlag::empty();
        let Some(target) = parse_target(value.as_bytes()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET={value:?} is not a unix socket address"),
            ));
        };
        let addr = match target {
            Target::Path(path) => UnixAddr::new(path.as_slice())?,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Target::Abstract(name) => UnixAddr::new_abstract(&name)?,
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Target::Abstract(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "abstract NOTIFY_SOCKET addresses exist on Linux only",
                ))
            }
        };
        let socket = socket(AddressFamily::Unix, SockType::Datagram, CLOEXEC, None)?;
        Ok(Some(Notifier { socket, addr }))
    }

    pub fn send(&self, fields: &[(&str, &str)]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let text = message(fields);
        sendto(
            self.socket.as_raw_fd(),
            text.as_bytes(),
            &self.addr,
            MsgFlags::empty(),
        )?;
        Ok(())
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target(b"/run/systemd/notify"),
            Some(Target::Path(b"/run/systemd/notify".to_vec()))
        );
        assert_eq!(
            parse_target(b"@sd-notify"),
            Some(Target::Abstract(b"sd-notify".to_vec()))
        );
        assert_eq!(parse_target(b""), None);
        assert_eq!(parse_target(b"@"), None);
        assert_eq!(parse_target(b"relative/path"), None);
    }

    #[test]
    fn messages() {
        assert_eq!(message(&[("READY", "1")]), "READY=1");
        assert_eq!(
            message(&[("READY", "1"), ("STATUS", "4 workers serving")]),
            "READY=1\nSTATUS=4 workers serving"
        );
        assert_eq!(
            message(&[("STATUS", "bad\nREADY=1")]),
            "STATUS=bad READY=1",
            "a value cannot inject a second assignment"
        );
    }

    #[test]
    fn monotonic_clock_moves() {
        let a = monotonic_usec();
        assert!(a > 0);
        assert!(monotonic_usec() >= a);
    }
}
