//! What every connection of a server shares: settings, limits, counters, the access log and
//! the bridge to the loop thread.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use http::HeaderMap;

use super::activity::Timeouts;
use super::limits::{InFlight, Limits, Refusal};
use super::proxy::TrustedProxies;
use super::settings::H2;
use super::Endpoint;
use crate::handoff::bridge::Bridge;
use crate::log::{AccessLog, Sink};
use crate::metrics::Metrics;
use crate::ws::WsConfig;

/// What every connection of a server shares.
pub struct HttpContext {
    pub bridge: Arc<Bridge>,
    /// `server` and `--header` defaults, added to responses that do not set them.
    pub default_headers: HeaderMap,
    pub http1: hyper::server::conn::http1::Builder,
    /// HTTP/2's settings, and which versions are served.
    pub h2: H2,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub in_flight: InFlight,
    /// This process's counters.
    pub metrics: &'static Metrics,
    /// `None` when proxy headers are off.
    pub proxies: Option<TrustedProxies>,
    /// `None` when the access log is off.
    pub access: Option<Access>,
    /// Take or make an `x-request-id` for every request, and echo it in the response.
    pub request_id: bool,
    /// `--health-path`: answered by [`AsgiService::health`], never by the app.
    pub health_path: Option<String>,
    /// Set once the server is shutting down: the health path answers 503 from then on.
    pub draining: AtomicBool,
    pub ws: WsConfig,
    /// TLS termination, when `--ssl-certfile` is set.
    pub tls: Option<crate::tls::Tls>,
}

/// The access log: its format and where its lines go.
pub struct Access {
    pub log: AccessLog,
    pub sink: Sink,
}

impl HttpContext {
    /// Logs a refused request, one line, through the loop thread.
    pub fn log_refusal(&self, Refusal(status, why): Refusal, client: &Endpoint) {
        self.metrics.refused(status.as_u16());
        let who = client.describe();
        tracing::warn!("{} {why} ({who})", status.as_u16());
    }
}
