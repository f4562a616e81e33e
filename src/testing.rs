//! Helpers shared by the unit tests.

use http::{HeaderMap, HeaderName};

/// The header map of `pairs`, in order; a repeated name keeps every value.
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    map
}
