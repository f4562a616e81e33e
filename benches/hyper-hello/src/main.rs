//! Minimal hyper 1.x HTTP/1.1 server answering every request with `Hello, world!`, or with
//! BODY_BYTES bytes of `x` (the download workloads), and a POST with the length of its body
//! (the upload workload): what the same exchange costs with no Python at all, the ceiling for
//! any ASGI server.
//!
//! Usage: `hyper-hello PORT [THREADS [BODY_BYTES]]`
//!
//! Each thread runs its own current_thread tokio runtime with its own listening socket
//! (SO_REUSEPORT), so `THREADS=1` (the default) is a strictly single-core server and
//! `THREADS=N` is the pure-Rust counterpart of N single-threaded worker processes.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

const HELLO: &[u8] = b"Hello, world!";

/// One body for every response: a cheap clone of the same buffer, as an ASGI app that answers
/// a module-level `bytes` object.
fn respond(body: &Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(body.clone()));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(resp)
}

/// Reads the request body to its end, as the upload app does, and answers its length.
async fn count_body(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut body = req.into_body();
    let mut len = 0;
    while let Some(Ok(frame)) = body.frame().await {
        len += frame.data_ref().map_or(0, Bytes::len);
    }
    respond(&Bytes::from(len.to_string()))
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

async fn serve(port: u16, body: Bytes) -> std::io::Result<()> {
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
        let body = body.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let body = body.clone();
                async move {
                    match req.method() == Method::POST {
                        true => count_body(req).await,
                        false => respond(&body),
                    }
                }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = conn.await {
                if !err.is_incomplete_message() {
                    eprintln!("connection error: {err}");
                }
            }
        });
    }
}

fn run_thread(port: u16, body: Bytes) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(port, body))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: hyper-hello PORT [THREADS [BODY_BYTES]]");
        std::process::exit(2);
    });
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1).max(1);
    let body = match args.next().and_then(|n| n.parse::<usize>().ok()) {
        Some(len) => Bytes::from(vec![b'x'; len]),
        None => Bytes::from_static(HELLO),
    };

    let handles: Vec<_> = (1..threads)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || run_thread(port, body))
        })
        .collect();
    if let Err(err) = run_thread(port, body) {
        eprintln!("hyper-hello: {err}");
        std::process::exit(1);
    }
    for handle in handles {
        if let Ok(Err(err)) = handle.join() {
            eprintln!("hyper-hello: {err}");
        }
    }
}
