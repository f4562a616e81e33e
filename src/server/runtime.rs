//! The I/O thread: a tokio runtime that accepts connections and serves them with hyper.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::http::{serve_connection, ConnInfo, Endpoint, HttpContext};
use crate::metrics::{self, Metrics};
use crate::net::Listener;

pub struct IoThread {
    ctx: Arc<HttpContext>,
    shutdown: watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    connections: Arc<AtomicUsize>,
}

impl IoThread {
    /// Starts the runtime on its own thread. `threads` above one gives a multi-threaded
    /// runtime with that many workers.
    pub fn start(
        ctx: Arc<HttpContext>,
        listeners: Vec<Listener>,
        metrics: Option<std::net::TcpListener>,
        threads: usize,
    ) -> io::Result<Self> {
        let runtime = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("rsgi-io")
                .enable_all()
                .build()?
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel();
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
                        );
                        tokio::spawn(accept);
                    }
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
        })
    }

    pub fn shutdown(&self) {
        self.set_draining();
        let _ = self.shutdown.send(true);
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
        self.0.fetch_sub(1, Ordering::Relaxed);
        Metrics::sub(&metrics::current().connections, 1);
    }
}

async fn accept_loop(
    listener: Listener,
    ctx: Arc<HttpContext>,
    mut shutdown: watch::Receiver<bool>,
    counter: Arc<AtomicUsize>,
) {
    let result = match listener {
        Listener::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                loop {
                    tokio::select! {
                        r = l.accept() => match r {
                            Ok((stream, peer)) => {
                                let _ = stream.set_nodelay(true);
                                let server = stream.local_addr().map_or(Endpoint::Unknown, Endpoint::from);
                                spawn_conn(stream, peer.into(), server, &ctx, &shutdown, &counter);
                            }
                            Err(e) => accept_failed(e).await,
                        },
                        _ = shutdown.changed() => break,
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
                        r = l.accept() => match r {
                            Ok((stream, _)) => {
                                spawn_conn(stream, Endpoint::Unknown, path.clone(), &ctx, &shutdown, &counter);
                            }
                            Err(e) => accept_failed(e).await,
                        },
                        _ = shutdown.changed() => break,
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
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let counted = Counted::new(counter);
    let ctx = ctx.clone();
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        match &ctx.tls {
            None => {
                let conn = Arc::new(ConnInfo::new(client, server, None));
                serve_connection(stream, conn, ctx.clone(), shutdown).await;
            }
            // The handshake runs here, in the connection's task on the I/O thread.
            Some(tls) => match tls.accept(stream, &mut shutdown).await {
                Ok((stream, info)) => {
                    let conn = Arc::new(ConnInfo::new(client, server, Some(info)));
                    serve_connection(stream, conn, ctx.clone(), shutdown).await;
                }
                Err(e) => tracing::debug!("TLS handshake with {} failed: {e}", client.describe()),
            },
        }
        drop(counted);
    });
}

/// Accept errors such as EMFILE are transient: log, back off briefly, go on.
async fn accept_failed(e: io::Error) {
    tracing::warn!("Error accepting a connection: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
