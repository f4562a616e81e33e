//! Sockets and time: listening sockets (bound here, inherited as a file descriptor, or handed
//! over by a process manager; all non-blocking and close-on-exec), and the coarse clock that
//! connection timeouts read.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::CoreConfig;

pub mod activation;
pub mod clock;

/// On a graceful shutdown, how long a connection with no request running may take to send
/// one (at most the idle timeout) before it is closed. hyper would close it at once, yet its
/// client may have sent a request already: the first one of a connection accepted just before
/// the shutdown, or the next one on a keep-alive connection. Under a process manager that
/// keeps the listening socket open (rsgi's master, gunicorn), closing it would fail a request
/// that no other worker can pick up. A request that arrives meanwhile is served with
/// `connection: close`; one whose head has begun to arrive when the grace ends is waited for
/// until the head-read deadline.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The listening sockets a config names: those systemd passed (socket activation wins over
/// host/port), else `--uds`, else `--fd`, else host/port.
pub fn bind(config: &CoreConfig) -> io::Result<Vec<Listener>> {
    if let Some(activated) = activation::take()? {
        return activated
            .into_iter()
            .map(|a| Listener::from_fd(a.fd))
            .collect();
    }
    let listener = if let Some(path) = &config.uds {
        Listener::bind_unix(path, config.backlog)?
    } else if let Some(fd) = config.fd {
        Listener::from_fd(fd)?
    } else {
        Listener::bind_tcp(&config.host, config.port, config.backlog)?
    };
    Ok(vec![listener])
}

/// The first address `host` resolves to.
pub fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address for host"))
}

/// A TCP socket with SO_REUSEPORT bound to `addr`; listening only when `listen` is set.
///
/// `--reuse-port` keeps one that does not listen to hold the port (and learn it when the port
/// is 0), and gives each worker its own listening one on the same address.
pub fn bind_reuse_port(addr: SocketAddr, backlog: i32, listen: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    if listen {
        socket.listen(backlog)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    Ok(socket)
}

pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(StdUnixListener),
}

impl Listener {
    pub fn bind_tcp(host: &str, port: u16, backlog: i32) -> io::Result<Self> {
        let addr = resolve(host, port)?;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        Ok(Listener::Tcp(socket.into()))
    }

    pub fn bind_unix(path: &str, backlog: i32) -> io::Result<Self> {
        // A socket file left by a dead server would make bind fail; a live one refuses connects.
        if std::os::unix::net::UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&SockAddr::unix(path)?)?;
        socket.listen(backlog)?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        Ok(Listener::Unix(socket.into()))
    }

    /// Adopts an already listening socket, such as one passed by a process manager.
    pub fn from_fd(fd: RawFd) -> io::Result<Self> {
        // SAFETY: the caller hands over ownership of a valid descriptor; fstat-like checks
        // follow, and a non-socket fails in `local_addr` below.
        let socket = unsafe { Socket::from_raw_fd(fd) };
        let local = match socket.local_addr() {
            Ok(local) => local,
            Err(e) => {
                let _ = socket.into_raw_fd();
                return Err(e);
            }
        };
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        if local.is_unix() {
            Ok(Listener::Unix(socket.into()))
        } else if local.as_socket().is_some() {
            Ok(Listener::Tcp(socket.into()))
        } else {
            // Give the descriptor back rather than closing what we were lent.
            let _ = socket.into_raw_fd();
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fd is not a TCP or unix socket",
            ))
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    /// A URL-like description for the startup log line.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(SocketAddr::V6(a)) => format!("http://[{}]:{}", a.ip(), a.port()),
                Ok(a) => format!("http://{a}"),
                Err(_) => "http://?".into(),
            },
            Listener::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            {
                Some(p) => format!("unix:{p}"),
                None => "unix:?".into(),
            },
        }
    }
}

/// The `--metrics-bind` listener (`HOST:PORT`), for a worker or the master.
pub fn bind_metrics(addr: &str, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().ok()?,
            ))
        })
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "expected HOST:PORT")
        })?;
    match Listener::bind_tcp(host, port, backlog)? {
        Listener::Tcp(l) => Ok(l),
        Listener::Unix(_) => unreachable!("bind_tcp makes TCP listeners"),
    }
}
