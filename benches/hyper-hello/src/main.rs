//! Minimal hyper 1.x HTTP/1.1 server answering every request with `Hello, world!`.
//!
//! Usage: `hyper-hello PORT [THREADS]`
//!
//! Each thread runs its own current_thread tokio runtime with its own listening socket
//! (SO_REUSEPORT), so `THREADS=1` (the default) is a strictly single-core server and
//! `THREADS=N` is the pure-Rust counterpart of N single-threaded worker processes.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

const BODY: &[u8] = b"Hello, world!";

async fn hello(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(BODY.len()));
    Ok(resp)
}

fn bind(port: u16) -> std::io::Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn serve(port: u16) -> std::io::Result<()> {
    let listener = bind(port)?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                eprintln!("accept error: {err}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::task::spawn_local(async move {
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(hello));
            if let Err(err) = conn.await {
                if !err.is_incomplete_message() {
                    eprintln!("connection error: {err}");
                }
            }
        });
    }
}

fn run_thread(port: u16) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(port))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: hyper-hello PORT [THREADS]");
        std::process::exit(2);
    });
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1).max(1);

    let handles: Vec<_> = (1..threads)
        .map(|_| std::thread::spawn(move || run_thread(port)))
        .collect();
    if let Err(err) = run_thread(port) {
        eprintln!("hyper-hello: {err}");
        std::process::exit(1);
    }
    for handle in handles {
        if let Ok(Err(err)) = handle.join() {
            eprintln!("hyper-hello: {err}");
        }
    }
}
