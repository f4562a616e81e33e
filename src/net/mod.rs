//! Sockets and time: listening sockets (bound here, inherited as a file descriptor, or handed
//! over by a process manager; all non-blocking and close-on-exec), and the coarse clock that
//! connection timeouts read.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixListener as StdUnixListener;

use socket2::{Domain, SockAddr, Socket, Type};

pub mod clock;

pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(StdUnixListener),
}

impl Listener {
    pub fn bind_tcp(host: &str, port: u16, backlog: i32) -> io::Result<Self> {
        let addr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address for host"))?;
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
        let local = socket.local_addr()?;
        socket.set_nonblocking(true)?;
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
