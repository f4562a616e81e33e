//! The Prometheus text exposition format, summed over processes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Metrics, BUCKETS, REFUSALS};

fn sum<'a>(slots: &[&'a Metrics], field: impl Fn(&'a Metrics) -> &'a AtomicU64) -> u64 {
    slots.iter().map(|m| field(m).load(Ordering::Relaxed)).sum()
}

/// Picks one counter out of a process's metrics.
type Field = fn(&Metrics) -> &AtomicU64;

/// The families of one sample without labels: name, type, help, and what is summed.
#[rustfmt::skip]
const UNLABELLED: [(&str, &str, &str, Field); 6] = [
    ("rsgi_requests_in_flight", "gauge", "Requests being handled.", |m| &m.in_flight),
    ("rsgi_connections_open", "gauge", "Open HTTP connections.", |m| &m.connections),
    ("rsgi_websocket_connections_open", "gauge", "Open WebSocket connections.", |m| &m.websockets),
    ("rsgi_received_bytes_total", "counter", "Bytes read from clients.", |m| &m.bytes_in),
    ("rsgi_sent_bytes_total", "counter", "Response body bytes sent.", |m| &m.bytes_out),
    ("rsgi_sendfile_bytes_total", "counter", "Response body bytes sent from files with sendfile(2).", |m| &m.sendfile_bytes),
];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders the metrics of `slots` (the live workers); `extra` is appended as is (the master's
/// own families, such as worker restarts).
pub fn render(slots: &[&Metrics], extra: &str) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "rsgi_requests_total",
        "counter",
        "Requests completed, by status class.",
    );
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let _ = writeln!(
            out,
            "rsgi_requests_total{{status=\"{class}\"}} {}",
            sum(slots, |m| &m.requests[i])
        );
    }
    family(
        &mut out,
        "rsgi_request_duration_seconds",
        "histogram",
        "Time from request head to the end of the response.",
    );
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += sum(slots, |m| &m.duration[i]);
        let _ = writeln!(
            out,
            "rsgi_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += sum(slots, |m| &m.duration[BUCKETS.len()]);
    let _ = writeln!(
        out,
        "rsgi_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let micros = sum(slots, |m| &m.duration_micros);
    let _ = writeln!(
        out,
        "rsgi_request_duration_seconds_sum {}",
        micros as f64 / 1e6
    );
    let _ = writeln!(out, "rsgi_request_duration_seconds_count {cumulative}");
    for (name, kind, help, field) in UNLABELLED {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {}", sum(slots, field));
    }
    family(
        &mut out,
        "rsgi_requests_refused_total",
        "counter",
        "Requests refused before the app ran, by status (503: shed by --limit-concurrency).",
    );
    for (i, status) in REFUSALS.iter().enumerate() {
        let _ = writeln!(
            out,
            "rsgi_requests_refused_total{{status=\"{status}\"}} {}",
            sum(slots, |m| &m.refused[i])
        );
    }
    out.push_str(extra);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sums_and_cumulative_buckets() {
        let (a, b) = (Metrics::default(), Metrics::default());
        a.request_done(200, Duration::from_micros(500), 5);
        b.request_done(503, Duration::from_secs(20), 7);
        b.refused(413);
        let text = render(&[&a, &b], "");
        assert!(text.contains("rsgi_requests_total{status=\"2xx\"} 1\n"));
        assert!(text.contains("rsgi_requests_total{status=\"5xx\"} 1\n"));
        assert!(text.contains("rsgi_request_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("rsgi_request_duration_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("rsgi_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("rsgi_sent_bytes_total 12\n"));
        assert!(text.contains("rsgi_requests_refused_total{status=\"413\"} 1\n"));
    }
}
