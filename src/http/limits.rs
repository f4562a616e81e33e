//! Request limits that answer with a status before the app runs: request line (414, checked
//! by the framing check as the line arrives), header fields (431), declared body size (413),
//! and requests in flight (503).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::request::Parts;
use http::StatusCode;

#[derive(Debug, Clone)]
pub struct Limits {
    pub request_line: usize,
    pub field_size: usize,
    pub body: Option<u64>,
    pub concurrency: Option<usize>,
    /// How long a request body may stall while the app waits for it.
    pub body_read: Duration,
}

/// Why the server answers a request itself instead of the app: the status, and a few words for
/// the log line. The framing check, the limits, a failed body and the concurrency limit all
/// refuse with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal(pub StatusCode, pub &'static str);

impl Limits {
    /// Checks the head against the limits hyper does not enforce itself.
    pub fn check_head(&self, parts: &Parts) -> Option<Refusal> {
        for (name, value) in &parts.headers {
            if name.as_str().len() + 2 + value.len() > self.field_size {
                return Some(Refusal(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "header field too large",
                ));
            }
        }
        if let (Some(limit), Some(len)) = (self.body, declared_length(parts)) {
            if len > limit {
                return Some(Refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large",
                ));
            }
        }
        None
    }
}

fn declared_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Requests in flight in this process, for `--limit-concurrency`; the same counter is the
/// `rsgi_requests_in_flight` gauge.
pub struct InFlight(&'static AtomicU64);

impl InFlight {
    pub fn new(gauge: &'static AtomicU64) -> Self {
        InFlight(gauge)
    }

    /// Counts a request in, unless `limit` is reached.
    pub fn admit(&self, limit: Option<usize>) -> bool {
        let now = self.0.fetch_add(1, Ordering::Relaxed);
        if limit.is_some_and(|l| now >= l as u64) {
            self.0.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn done(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> Parts {
        req.into_parts().0
    }

    fn limits() -> Limits {
        Limits {
            request_line: 40,
            field_size: 20,
            body: Some(10),
            concurrency: Some(1),
            body_read: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_short_head_passes() {
        let p = parts(http::Request::get("/short").body(()).unwrap());
        assert_eq!(limits().check_head(&p), None);
    }

    #[test]
    fn large_field_is_431() {
        let p = parts(
            http::Request::get("/")
                .header("x-long", "v".repeat(20))
                .body(())
                .unwrap(),
        );
        assert_eq!(
            limits().check_head(&p).unwrap().0,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn declared_body_over_limit_is_413() {
        let p = parts(
            http::Request::post("/")
                .header("content-length", "11")
                .body(())
                .unwrap(),
        );
        assert_eq!(
            limits().check_head(&p).unwrap().0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let p = parts(
            http::Request::post("/")
                .header("content-length", "10")
                .body(())
                .unwrap(),
        );
        assert_eq!(limits().check_head(&p), None);
    }

    #[test]
    fn in_flight_limit() {
        let f = InFlight::new(Box::leak(Box::default()));
        assert!(f.admit(Some(1)));
        assert!(!f.admit(Some(1)));
        f.done();
        assert!(f.admit(Some(1)));
        assert!(f.admit(None));
    }
}
