//! The part of `rsgi.config.Config` that the Rust core reads.
//!
//! `Config` (python/rsgi/config.py) is the one definition of every setting; this struct only
//! names the attributes the core needs, so the two cannot drift apart silently: a missing
//! attribute fails loudly when the core starts.

use std::time::Duration;

use pyo3::prelude::*;

use crate::ws::WsConfig;

#[derive(FromPyObject, Clone, Debug)]
pub struct CoreConfig {
    pub host: String,
    pub port: u16,
    pub uds: Option<String>,
    pub fd: Option<i32>,
    pub backlog: i32,
    pub root_path: String,
    pub server_header: bool,
    pub date_header: bool,
    /// `auto`, `1` or `2`: the HTTP versions served.
    pub http: String,
    pub h2_max_concurrent_streams: u32,
    pub headers: Vec<(String, String)>,
    pub timeout_keep_alive: f64,
    pub timeout_header_read: f64,
    pub threads: usize,
    pub limit_request_line: usize,
    pub limit_request_fields: usize,
    pub limit_request_field_size: usize,
    pub limit_request_body: Option<u64>,
    pub limit_concurrency: Option<usize>,
    pub timeout_body_read: f64,
    pub timeout_write: f64,
    pub proxy_headers: bool,
    pub access_log_format: Option<String>,
    pub log_format: String,
    pub request_id: bool,
    pub metrics_bind: Option<String>,
    pub forwarded_allow_ips: String,
    pub health_path: Option<String>,
    pub ws: String,
    pub ws_max_size: usize,
    pub ws_max_queue: usize,
    pub ws_ping_interval: Option<f64>,
    pub ws_ping_timeout: Option<f64>,
    pub ws_per_message_deflate: bool,
    pub ssl_certfile: Option<String>,
    pub ssl_keyfile: Option<String>,
    pub ssl_keyfile_password: Option<String>,
    pub ssl_ca_certs: Option<String>,
    pub ssl_cert_reqs: u8,
}

impl CoreConfig {
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_keep_alive.max(0.0))
    }

    pub fn body_read(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_body_read.max(0.0))
    }

    pub fn header_read(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_header_read.max(0.0))
    }

    /// How long a response may make no progress on the socket; `None` when 0 turns it off.
    pub fn write(&self) -> Option<Duration> {
        (self.timeout_write.is_finite() && self.timeout_write > 0.0)
            .then(|| Duration::from_secs_f64(self.timeout_write))
    }

    /// The TLS settings, when TLS is on (`ssl_certfile` is set).
    pub fn tls(&self) -> Option<crate::tls::TlsSettings> {
        Some(crate::tls::TlsSettings {
            certfile: self.ssl_certfile.clone()?,
            keyfile: self.ssl_keyfile.clone(),
            password: self.ssl_keyfile_password.clone(),
            ca_certs: self.ssl_ca_certs.clone(),
            cert_reqs: self.ssl_cert_reqs,
        })
    }

    pub fn versions(&self) -> crate::http::Versions {
        crate::http::Versions::parse(&self.http)
    }

    /// HTTP/2's bound on a decoded request header list: what `--limit-request-fields` fields
    /// of `--limit-request-field-size` bytes take, but no more than an HTTP/1.1 head may.
    pub fn h2_header_list(&self) -> u32 {
        let fields = self.limit_request_fields.max(1);
        let list = fields.saturating_mul(self.limit_request_field_size);
        list.min(crate::http::framing::MAX_HEAD) as u32
    }

    pub fn ws(&self) -> WsConfig {
        // 0 (or None) turns a keep-alive setting off.
        let secs = |v: Option<f64>| {
            v.filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
        };
        WsConfig {
            enabled: self.ws != "none",
            max_size: self.ws_max_size.max(1),
            max_queue: self.ws_max_queue.max(1),
            ping_interval: secs(self.ws_ping_interval),
            ping_timeout: secs(self.ws_ping_timeout),
            per_message_deflate: self.ws_per_message_deflate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval: Option<f64>, timeout: Option<f64>, ws: &str) -> CoreConfig {
        CoreConfig {
            host: "127.0.0.1".into(),
            port: 0,
            uds: None,
            fd: None,
            backlog: 1,
            root_path: String::new(),
            server_header: true,
            date_header: true,
            http: "auto".into(),
            h2_max_concurrent_streams: 100,
            headers: Vec::new(),
            timeout_keep_alive: 5.0,
            timeout_header_read: 30.0,
            threads: 1,
            limit_request_line: 8190,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            limit_request_body: None,
            limit_concurrency: None,
            timeout_body_read: 30.0,
            timeout_write: 60.0,
            proxy_headers: false,
            access_log_format: None,
            log_format: String::new(),
            request_id: false,
            metrics_bind: None,
            health_path: None,
            forwarded_allow_ips: String::new(),
            ssl_certfile: None,
            ssl_keyfile: None,
            ssl_keyfile_password: None,
            ssl_ca_certs: None,
            ssl_cert_reqs: 0,
            ws: ws.into(),
            ws_max_size: 0,
            ws_max_queue: 0,
            ws_ping_interval: interval,
            ws_ping_timeout: timeout,
            ws_per_message_deflate: true,
        }
    }

    #[test]
    fn ws_keepalive_zero_or_none_disables() {
        let ws = config(Some(0.0), None, "auto").ws();
        assert!(ws.enabled);
        assert_eq!((ws.ping_interval, ws.ping_timeout), (None, None));
        let ws = config(Some(0.25), Some(20.0), "wsproto").ws();
        assert_eq!(ws.ping_interval, Some(Duration::from_millis(250)));
        assert_eq!(ws.ping_timeout, Some(Duration::from_secs(20)));
        // Limits of 0 would stall every connection: at least 1.
        assert_eq!((ws.max_size, ws.max_queue), (1, 1));
        assert!(!config(None, None, "none").ws().enabled);
    }
}
