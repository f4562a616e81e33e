//! The `--metrics-bind` endpoint of a single-process server, on its I/O thread.

use std::convert::Infallible;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::{current, render};

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` until shutdown.
pub async fn serve(listener: std::net::TcpListener, mut shutdown: watch::Receiver<bool>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        tracing::error!("Cannot serve metrics: the listener is unusable");
        return;
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req| async move { Ok::<_, Infallible>(answer(&req)) });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

fn answer(req: &Request<Incoming>) -> Response<String> {
    if req.uri().path() != "/metrics" {
        let mut resp = Response::new("not found\n".to_owned());
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }
    let text = render(&[current()], "");
    let mut resp = Response::new(text);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    resp
}
