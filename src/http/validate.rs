//! Checks hyper does not make on its own. Each one closes a request-smuggling or ambiguity
//! hole, so a failing request is answered with an error and the connection is closed.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Version};

/// Returns the status to answer with when the request head must not reach the app.
pub fn check_head(version: Version, headers: &HeaderMap) -> Option<StatusCode> {
    let te = headers.get_all(TRANSFER_ENCODING);
    let mut te_count = 0;
    for value in te.iter() {
        te_count += 1;
        if !value.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Some(StatusCode::NOT_IMPLEMENTED);
        }
    }
    if te_count > 1 {
        return Some(StatusCode::BAD_REQUEST);
    }
    if te_count == 1 && headers.contains_key(CONTENT_LENGTH) {
        return Some(StatusCode::BAD_REQUEST);
    }
    if headers.get_all(CONTENT_LENGTH).iter().count() > 1 {
        return Some(StatusCode::BAD_REQUEST);
    }
    let hosts = headers.get_all(HOST).iter().count();
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Some(StatusCode::BAD_REQUEST);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;

    #[test]
    fn plain_request_passes() {
        let h = headers(&[("host", "a"), ("content-length", "3")]);
        assert_eq!(check_head(Version::HTTP_11, &h), None);
    }

    #[test]
    fn te_with_cl_is_rejected() {
        let h = headers(&[
            ("host", "a"),
            ("content-length", "3"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(
            check_head(Version::HTTP_11, &h),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn unknown_coding_is_not_implemented() {
        let h = headers(&[("host", "a"), ("transfer-encoding", "gzip, chunked")]);
        assert_eq!(
            check_head(Version::HTTP_11, &h),
            Some(StatusCode::NOT_IMPLEMENTED)
        );
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            check_head(Version::HTTP_11, &headers(&[])),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(check_head(Version::HTTP_10, &headers(&[])), None);
        let two = headers(&[("host", "a"), ("host", "b")]);
        assert_eq!(
            check_head(Version::HTTP_11, &two),
            Some(StatusCode::BAD_REQUEST)
        );
    }
}
