//! The I/O thread: a tokio runtime that accepts connections and serves them with hyper.

use std::convert::Infallible;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{recv, MsgFlags};
use tokio::io::Interest;
use tokio::sync::{oneshot, watch};

use crate::http::settings::PREFACE;
use crate::http::{
    serve_connection, serve_h2, ConnInfo, Endpoint, HttpContext, Sendfile, Versions,
};
use crate::metrics::{self, Metrics};
use crate::net::Listener;

pub struct IoThread {
    ctx: Arc<HttpContext>,
    shutdown: watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    connections: Arc<AtomicUsize>,
    accept_loops: AcceptLoops,
}

/// Threads of the I/O runtime's blocking pool.
const FILE_THREADS: usize = 16;

impl IoThread {
    /// Starts the runtime on its own thread. `threads` above one gives a multi-threaded
    /// runtime with that many workers.
    pub fn start(
        ctx: Arc<HttpContext>,
        listeners: Vec<Listener>,
        metrics: Option<std::net::TcpListener>,
        threads: usize,
    ) -> io::Result<Self> {
        let mut builder = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads).thread_name("rsgi-io");
            builder
        };
        // The blocking pool only opens and reads `pathsend` files (under TLS and HTTP/2),
        // each read short: tokio's default of 512 threads would only add stacks and heaps.
        let runtime = builder
            .max_blocking_threads(FILE_THREADS)
            .enable_all()
            .build()?;
        super::memory::tune_python_heap();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel();
        let (accept_loops, accepting) = AcceptLoops::new();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let shared = ctx.clone();
        let thread = std::thread::Builder::new()
            .name("rsgi-io".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(ctx.bridge.clone().dispatch());
                    tokio::spawn(ctx.bridge.clone().signal());
                    tokio::spawn(crate::net::clock::tick());
                    tokio::spawn(super::memory::give_back(counter.clone()));
                    if let Some(listener) = metrics {
                        tokio::spawn(metrics::serve::serve(listener, shutdown_rx.clone()));
                    }
                    if ctx.access.is_some() {
                        tokio::spawn(flush_access_log(ctx.clone()));
                    }
                    for listener in listeners {
                        let accept = accept_loop(
                            listener,
                            ctx.clone(),
                            shutdown_rx.clone(),
                            counter.clone(),
                            accepting.clone(),
                        );
                        tokio::spawn(accept);
                    }
                    // From now on only the accept loops hold one.
                    drop(accepting);
                    let _ = stop_rx.await;
                });
                // Dropping the runtime drops every connection still open.
                drop(runtime);
            })?;
        Ok(IoThread {
            ctx: shared,
            shutdown,
            stop: Some(stop),
            thread: Some(thread),
            connections,
            accept_loops,
        })
    }

    /// Stops accepting, and returns once no accept loop can take another connection: every
    /// connection accepted is counted in [`connections`](Self::connections) by then, so a
    /// caller that waits for that count to reach zero misses none (otherwise a connection
    /// accepted just after it read zero would be dropped with the runtime, unanswered). Each
    /// connection then finishes its in-flight request and closes.
    pub fn shutdown(&self) {
        self.set_draining();
        let _ = self.shutdown.send(true);
        if !self.accept_loops.wait_stopped(ACCEPT_STOP_WAIT) {
            tracing::warn!("The accept loops did not stop within {ACCEPT_STOP_WAIT:?}");
        }
    }

    pub fn set_draining(&self) {
        self.ctx.draining.store(true, Ordering::Relaxed);
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn stop(mut self) {
        self.shutdown();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(access) = &self.ctx.access {
            access.sink.flush();
        }
    }

    /// Reopens the access log file (after logrotate moved it).
    pub fn reopen_logs(&self) -> io::Result<()> {
        match &self.ctx.access {
            Some(access) => access.sink.reopen(),
            None => Ok(()),
        }
    }
}

/// Writes buffered access lines at least every [`FLUSH_EVERY`].
async fn flush_access_log(ctx: Arc<HttpContext>) {
    let mut interval = tokio::time::interval(FLUSH_EVERY);
    loop {
        interval.tick().await;
        if let Some(access) = &ctx.access {
            access.sink.flush();
        }
    }
}

const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// How long [`IoThread::shutdown`] waits for the accept loops to stop. They stop at their
/// next poll; only a stalled I/O thread (or an accept error's back-off) takes longer.
const ACCEPT_STOP_WAIT: Duration = Duration::from_secs(1);

/// Tells when every accept loop has stopped: each one holds an [`Accepting`] for as long as
/// it may accept a connection, and the wait ends when the last is dropped.
struct AcceptLoops(parking_lot::Mutex<mpsc::Receiver<Infallible>>);

/// An accept loop's token (see [`AcceptLoops`]); nothing is ever sent through it.
type Accepting = mpsc::Sender<Infallible>;

impl AcceptLoops {
    fn new() -> (Self, Accepting) {
        let (tx, rx) = mpsc::channel();
        (AcceptLoops(parking_lot::Mutex::new(rx)), tx)
    }

    /// Waits up to `limit` for every [`Accepting`] to be dropped; true once they all are.
    fn wait_stopped(&self, limit: Duration) -> bool {
        let outcome = self.0.lock().recv_timeout(limit);
        matches!(outcome, Err(mpsc::RecvTimeoutError::Disconnected))
    }
}

/// Counts a connection for as long as it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(c: &Arc<AtomicUsize>) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Metrics::add(&metrics::current().connections, 1);
        Counted(c.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let open = self.0.fetch_sub(1, Ordering::Relaxed) - 1;
        Metrics::sub(&metrics::current().connections, 1);
        super::memory::connection_closed(open);
    }
}

/// Accepts until the shutdown signal. `_accepting` is dropped on return, after the last
/// connection accepted was counted.
async fn accept_loop(
    listener: Listener,
    ctx: Arc<HttpContext>,
    mut shutdown: watch::Receiver<bool>,
    counter: Arc<AtomicUsize>,
    _accepting: Accepting,
) {
    let result = match listener {
        Listener::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                loop {
                    tokio::select! {
                        // Once the signal is seen, not one more connection.
                        biased;
                        _ = shutdown.changed() => break,
                        r = l.accept() => match r {
                            Ok((stream, peer)) => {
                                let _ = stream.set_nodelay(true);
                                let server = stream.local_addr().map_or(Endpoint::Unknown, Endpoint::from);
                                spawn_conn(stream, peer.into(), server, &ctx, &shutdown, &counter);
                            }
                            Err(e) => accept_failed(e).await,
                        },
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        },
        Listener::Unix(l) => match tokio::net::UnixListener::from_std(l) {
            Ok(l) => {
                let path = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                    .map_or(Endpoint::Unknown, Endpoint::Unix);
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.changed() => break,
                        r = l.accept() => match r {
                            Ok((stream, _)) => {
                                spawn_conn(stream, Endpoint::Unknown, path.clone(), &ctx, &shutdown, &counter);
                            }
                            Err(e) => accept_failed(e).await,
                        },
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::error!("Cannot listen: {e}");
    }
}

fn spawn_conn<S>(
    stream: S,
    client: Endpoint,
    server: Endpoint,
    ctx: &Arc<HttpContext>,
    shutdown: &watch::Receiver<bool>,
    counter: &Arc<AtomicUsize>,
) where
    S: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + ReadReady
        + Sendfile
        + Unpin
        + Send
        + Sync
        + 'static,
{
    let counted = Counted::new(counter);
    let ctx = ctx.clone();
    let shutdown = shutdown.clone();
    let fd = stream.as_raw_fd();
    // Two kinds of task rather than one with a branch for each: a task's future is as large as
    // its largest state, and the TLS one (handshake, rustls connection) would take ~8 KiB more
    // of every plain connection.
    if ctx.tls.is_some() {
        tokio::spawn(serve_tls(
            stream, fd, client, server, ctx, shutdown, counted,
        ));
    } else {
        tokio::spawn(async move {
            if first_bytes(&stream, &ctx, &shutdown).await {
                let conn = Arc::new(ConnInfo::new(client, server, None));
                if speaks_h2(&stream, ctx.h2.versions) {
                    serve_h2(stream, conn, ctx, shutdown).await;
                } else {
                    serve_connection(stream, fd, conn, ctx, shutdown).await;
                }
            }
            drop(counted);
        });
    }
}

/// A socket that can tell when it has bytes to read.
trait ReadReady: AsRawFd {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Runs `f`, and forgets the socket's read readiness if it fails with `WouldBlock`.
    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl ReadReady for tokio::net::TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }
    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::READABLE, f)
    }
}

impl ReadReady for tokio::net::UnixStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::UnixStream::poll_read_ready(self, cx)
    }
    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::READABLE, f)
    }
}

/// Resolves once the socket has a byte to read, or is closed or failed. tokio reports a new
/// socket readable before it is, so readiness is checked with a peek.
async fn readable<S: ReadReady>(stream: &S) {
    let mut byte = [0u8; 1];
    loop {
        if std::future::poll_fn(|cx| stream.poll_read_ready(cx))
            .await
            .is_err()
        {
            return;
        }
        let peek = stream.try_read_io(|| {
            recv(stream.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK).map_err(io::Error::from)
        });
        match peek {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            _ => return,
        }
    }
}

/// Waits until a new plain connection has bytes to read, or must go on for another reason:
/// hyper's connection (with its 8 KiB write buffer) is only built then, so a client that
/// connects ahead of need (a pool, a browser's preconnect) costs the task alone. False when
/// the connection stayed silent for the idle timeout, and is to be closed: what the
/// connection driver would do with it. On a shutdown, the driver takes over at once, and
/// applies its grace to a connection with no request yet.
async fn first_bytes<S: ReadReady>(
    stream: &S,
    ctx: &HttpContext,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    let mut shutdown = shutdown.clone();
    if *shutdown.borrow_and_update() {
        return true;
    }
    tokio::select! {
        _ = readable(stream) => true,
        _ = shutdown.changed() => true,
        _ = tokio::time::sleep(ctx.timeouts.idle()) => false,
    }
}

/// Whether a plain connection speaks HTTP/2: its first bytes, peeked without waiting (once
/// per connection, and only when both versions are served), begin the HTTP/2 preface.
fn speaks_h2<S: ReadReady>(stream: &S, versions: Versions) -> bool {
    if versions != Versions::Auto {
        return versions.plain_is_h2(&[]);
    }
    let mut first = [0u8; PREFACE.len()];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    let n = recv(stream.as_raw_fd(), &mut first, flags).unwrap_or(0);
    versions.plain_is_h2(&first[..n])
}

/// A TLS connection's task: the handshake runs here, on the I/O thread, then the connection.
async fn serve_tls<S>(
    stream: S,
    fd: std::os::fd::RawFd,
    client: Endpoint,
    server: Endpoint,
    ctx: Arc<HttpContext>,
    mut shutdown: watch::Receiver<bool>,
    counted: Counted,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = &ctx.tls else { return };
    match tls.accept(stream, &mut shutdown).await {
        Ok((stream, info)) => {
            let conn = Arc::new(ConnInfo::new(client, server, Some(info)));
            if ctx
                .h2
                .versions
                .tls_is_h2(stream.get_ref().1.alpn_protocol())
            {
                serve_h2(stream, conn, ctx.clone(), shutdown).await;
            } else {
                serve_connection(stream, fd, conn, ctx.clone(), shutdown).await;
            }
        }
        Err(e) => tracing::debug!("TLS handshake with {} failed: {e}", client.describe()),
    }
    drop(counted);
}

/// Accept errors such as EMFILE are transient: log, back off briefly, go on.
async fn accept_failed(e: io::Error) {
    tracing::warn!("Error accepting a connection: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::handoff::bridge::Bridge;
    use crate::http::{InFlight, Limits, Timeouts};
    use crate::ws::WsConfig;

    fn io_thread(listener: TcpListener) -> IoThread {
        let metrics = crate::metrics::current();
        let ctx = HttpContext {
            bridge: Arc::new(Bridge::new().unwrap()),
            default_headers: http::HeaderMap::new(),
            http1: hyper::server::conn::http1::Builder::new(),
            h2: Default::default(),
            timeouts: Timeouts {
                keep_alive: Duration::from_secs(5),
                header_read: Duration::from_secs(30),
                write: None,
            },
            limits: Limits {
                request_line: 8190,
                field_size: 8190,
                body: None,
                concurrency: None,
                body_read: Duration::from_secs(30),
            },
            in_flight: InFlight::new(&metrics.in_flight),
            metrics,
            proxies: None,
            access: None,
            request_id: false,
            health_path: None,
            draining: Default::default(),
            ws: WsConfig {
                enabled: false,
                max_size: 1,
                max_queue: 1,
                ping_interval: None,
                ping_timeout: None,
                per_message_deflate: false,
            },
            tls: None,
        };
        IoThread::start(Arc::new(ctx), vec![Listener::Tcp(listener)], None, 1).unwrap()
    }

    /// Once `shutdown` returns, every connection accepted is counted, and none is accepted
    /// later (a caller that saw none left would drop it unanswered): the rest stay in the
    /// backlog for another process sharing the socket.
    #[test]
    fn nothing_is_accepted_once_shutdown_returns() {
        for _ in 0..20 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            // What the master keeps: the socket listens on after the worker lets go of it.
            let master = listener.try_clone().unwrap();
            let io = io_thread(listener);
            // Clients connecting all along, before and after the shutdown.
            let (started, connecting) = mpsc::channel();
            let clients = std::thread::spawn(move || {
                let mut clients = vec![TcpStream::connect(addr).unwrap()];
                started.send(()).unwrap();
                clients.extend((0..63).map(|_| TcpStream::connect(addr).unwrap()));
                clients
            });
            connecting.recv().unwrap();
            io.shutdown();
            let counted = io.connections();
            let clients = clients.join().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(
                io.connections(),
                counted,
                "accepted after shutdown returned"
            );
            let left = std::iter::from_fn(|| master.accept().ok()).count();
            assert_eq!(counted + left, clients.len());
            io.stop();
        }
    }

    #[test]
    fn accept_loops_stopped_once_every_token_is_dropped() {
        let (loops, accepting) = AcceptLoops::new();
        let held = accepting.clone();
        drop(accepting);
        assert!(!loops.wait_stopped(Duration::from_millis(20)));
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        assert!(loops.wait_stopped(Duration::from_secs(10)));
        late.join().unwrap();
        // And it stays so: a second shutdown returns at once.
        assert!(loops.wait_stopped(Duration::ZERO));
    }
}
