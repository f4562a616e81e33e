//! The master's listening sockets. Shared mode: bound once, every worker inherits the same
//! sockets and the master keeps its copies, so a connection waiting in the backlog survives
//! any worker's exit. `--reuse-port` mode: the master holds the address with a bound socket
//! that does not listen, and each worker gets its own listening SO_REUSEPORT socket.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use socket2::Socket;

use crate::config::CoreConfig;
use crate::net::{self, Listener};

pub struct Sockets {
    listeners: Vec<Listener>,
    reserve: Option<Socket>,
    backlog: i32,
    /// The unix socket file this master created, removed when it exits.
    uds: Option<String>,
    addresses: Vec<String>,
}

impl Sockets {
    /// Binds what the config names. Returns a warning to log when `reuse_port` cannot apply.
    pub fn open(config: &CoreConfig, reuse_port: bool) -> io::Result<(Self, Option<String>)> {
        if let Some(activated) = net::activation::take()? {
            let listeners = activated
                .into_iter()
                .map(|a| Listener::from_fd(a.fd))
                .collect::<io::Result<Vec<_>>>()?;
            let warning = reuse_port.then(|| {
                "--reuse-port does not apply to sockets passed by systemd; \
                 the workers share them"
                    .to_string()
            });
            return Ok((Self::shared(listeners, config.backlog, None), warning));
        }
        if reuse_port {
            let addr = net::resolve(&config.host, config.port)?;
            let reserve = net::bind_reuse_port(addr, config.backlog, false)?;
            let addresses = vec![describe_tcp(reserve.local_addr()?.as_socket())];
            return Ok((
                Sockets {
                    listeners: Vec::new(),
                    reserve: Some(reserve),
                    backlog: config.backlog,
                    uds: None,
                    addresses,
                },
                None,
            ));
        }
        let listeners = net::bind(config)?;
        let uds = config.uds.clone();
        Ok((Self::shared(listeners, config.backlog, uds), None))
    }

    fn shared(listeners: Vec<Listener>, backlog: i32, uds: Option<String>) -> Self {
        let addresses = listeners.iter().map(Listener::describe).collect();
        Sockets {
            listeners,
            reserve: None,
            backlog,
            uds,
            addresses,
        }
    }

    /// Takes over the sockets of the master image this process replaced.
    pub fn adopt(
        listeners: &[RawFd],
        reserve: Option<RawFd>,
        uds: Option<String>,
        backlog: i32,
    ) -> io::Result<Self> {
        let listeners = listeners
            .iter()
            .map(|&fd| Listener::from_fd(fd))
            .collect::<io::Result<Vec<_>>>()?;
        let reserve = match reserve {
            Some(fd) => {
                // SAFETY: the previous image handed this descriptor over to us alone.
                let socket = unsafe { Socket::from_raw_fd(fd) };
                socket.set_cloexec(true)?;
                Some(socket)
            }
            None => None,
        };
        let mut this = Self::shared(listeners, backlog, uds);
        if let Some(reserve) = &reserve {
            this.addresses = vec![describe_tcp(reserve.local_addr()?.as_socket())];
        }
        this.reserve = reserve;
        Ok(this)
    }

    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The descriptors a new worker serves on, and the socket made for it alone (reuse-port
    /// mode), which the master closes once the worker is forked.
    pub fn for_worker(&self) -> io::Result<(Vec<RawFd>, Option<Socket>)> {
        if let Some(reserve) = &self.reserve {
            let addr = reserve
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("reserved socket has no TCP address"))?;
            let own = net::bind_reuse_port(addr, self.backlog, true)?;
            return Ok((vec![own.as_raw_fd()], Some(own)));
        }
        Ok((
            self.listeners.iter().map(Listener::as_raw_fd).collect(),
            None,
        ))
    }

    /// Descriptors only the master needs; a worker closes them.
    pub fn master_only_fds(&self) -> Vec<RawFd> {
        self.reserve.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Stops listening: once the workers are gone too, new connections are refused.
    pub fn close(&mut self) {
        self.listeners.clear();
        self.reserve = None;
    }

    /// Removes the unix socket file this master created.
    pub fn remove_files(&mut self) {
        if let Some(path) = self.uds.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// For a re-exec: every descriptor the next image needs, kept open over `execve`.
    pub fn hand_over(&self) -> io::Result<(Vec<RawFd>, Option<RawFd>, Option<String>)> {
        let listeners: Vec<RawFd> = self.listeners.iter().map(Listener::as_raw_fd).collect();
        let reserve = self.reserve.as_ref().map(AsRawFd::as_raw_fd);
        for &fd in listeners.iter().chain(reserve.iter()) {
            super::set_cloexec(fd, false)?;
        }
        Ok((listeners, reserve, self.uds.clone()))
    }

    /// Undoes `hand_over` after a failed `execve`.
    pub fn take_back(&self) {
        let listeners = self.listeners.iter().map(Listener::as_raw_fd);
        for fd in listeners.chain(self.reserve.iter().map(AsRawFd::as_raw_fd)) {
            let _ = super::set_cloexec(fd, true);
        }
    }
}

fn describe_tcp(addr: Option<SocketAddr>) -> String {
    match addr {
        Some(SocketAddr::V6(a)) => format!("http://[{}]:{}", a.ip(), a.port()),
        Some(a) => format!("http://{a}"),
        None => "http://?".into(),
    }
}
