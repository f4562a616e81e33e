//! systemd socket activation: the listening sockets a service manager passes as file
//! descriptors 3, 4, ... with `LISTEN_FDS=n`, `LISTEN_PID=<our pid>` and optionally
//! `LISTEN_FDNAMES=name:name`. The variables are meant for one process only: once taken they
//! are removed from the environment, so that workers and the app's subprocesses never see them.

use std::os::fd::RawFd;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// One socket handed over by the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activated {
    pub fd: RawFd,
    /// Its `FileDescriptorName=`, or "unknown" when none was given.
    pub name: String,
}

/// Reads the activation variables. `Ok(None)` when there are none for `pid` (unset, or meant
/// for another process); an error when they are set for us but malformed.
pub fn parse(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    pid: u32,
) -> Result<Option<Vec<Activated>>, String> {
    let (Some(listen_pid), Some(listen_fds)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    let for_pid: u32 = listen_pid
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_PID={listen_pid:?} is not a process id"))?;
    if for_pid != pid {
        return Ok(None);
    }
    let count: u32 = listen_fds
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={listen_fds:?} is not a number"))?;
    if count == 0 {
        return Ok(None);
    }
    if count > 4096 {
        return Err(format!("LISTEN_FDS={count} is implausibly large"));
    }
    let names: Vec<&str> = match listen_fdnames {
        Some(text) if !text.is_empty() => text.split(':').collect(),
        _ => Vec::new(),
    };
    Ok(Some(
        (0..count)
            .map(|i| Activated {
                fd: LISTEN_FDS_START + i as RawFd,
                name: names.get(i as usize).unwrap_or(&"unknown").to_string(),
            })
            .collect(),
    ))
}

/// Takes the sockets systemd passed to this process, if any, and clears the variables.
pub fn take() -> std::io::Result<Option<Vec<Activated>>> {
    let var = |name| std::env::var(name).ok();
    let found = parse(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if found.is_some() {
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            // Only this (still single-threaded at startup) process reads them.
            std::env::remove_var(name);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_or_for_another_process() {
        assert_eq!(parse(None, Some("1"), None, 10), Ok(None));
        assert_eq!(parse(Some("10"), None, None, 10), Ok(None));
        assert_eq!(parse(Some("11"), Some("1"), None, 10), Ok(None));
        assert_eq!(parse(Some("10"), Some("0"), None, 10), Ok(None));
    }

    #[test]
    fn fds_start_at_three_with_names() {
        let got = parse(Some("42"), Some("2"), Some("http:admin"), 42)
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            vec![
                Activated {
                    fd: 3,
                    name: "http".into()
                },
                Activated {
                    fd: 4,
                    name: "admin".into()
                },
            ]
        );
    }

    #[test]
    fn missing_names_are_unknown() {
        let got = parse(Some(" 7 "), Some("3"), Some("web"), 7)
            .unwrap()
            .unwrap();
        let names: Vec<_> = got.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["web", "unknown", "unknown"]);
        assert_eq!(got[2].fd, 5);
    }

    #[test]
    fn malformed_values_for_us_are_errors() {
        assert!(parse(Some("x"), Some("1"), None, 7).is_err());
        assert!(parse(Some("7"), Some("one"), None, 7).is_err());
        assert!(parse(Some("7"), Some("100000"), None, 7).is_err());
    }
}
