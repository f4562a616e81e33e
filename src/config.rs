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
    pub proxy_headers: bool,
    pub access_log_format: Option<String>,
    pub log_format: String,
    pub request_id: bool,
    pub forwarded_allow_ips: String,
    pub health_path: Option<String>,
    pub ws: String,
    pub ws_max_size: usize,
    pub ws_max_queue: usize,
    pub ws_ping_interval: Option<f64>,
    pub ws_ping_timeout: Option<f64>,
    pub ws_per_message_deflate: bool,
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
