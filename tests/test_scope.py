"""The HTTP connection scope an app receives, checked key by key."""

from __future__ import annotations

import json

import pytest
from conftest import RawClient, running_server


@pytest.fixture(scope="module")
def scope_server():
    with running_server("scope_app:app") as server:
        yield server


@pytest.fixture(scope="module")
def root_path_server():
    with running_server("scope_app:app", "--root-path", "/api") as server:
        yield server


def fetch_scope(port, method="GET", target="/", *, headers=None, body=None, version="HTTP/1.1"):
    with RawClient(port) as client:
        client.request(method, target, headers=headers, body=body, version=version)
        resp = client.read_response()
        local_port = client.local_port
    assert resp.status == 200, resp
    assert resp.header("content-type") == b"application/json"
    data = json.loads(resp.body)
    data["_client_port"] = local_port
    return data


@pytest.fixture(scope="module")
def basic(scope_server):
    """Scope of one request with an encoded path, a query string and repeated headers."""
    return fetch_scope(
        scope_server.port,
        "GET",
        "/caf%C3%A9/a%20b?a=1&b=%20",
        headers=[("X-A", "1"), ("X-B", "2"), ("X-A", "3"), ("X-Case", "MiXeD")],
    )


def test_type_and_asgi_version(basic):
    scope = basic["scope"]
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert isinstance(scope["asgi"]["spec_version"], str)
    assert basic["types"]["asgi"] == "dict"


@pytest.mark.rsgi_only
def test_asgi_spec_version_exact(basic):
    assert basic["scope"]["asgi"] == {"version": "3.0", "spec_version": "2.5"}


def test_http_version_method_scheme(basic):
    scope = basic["scope"]
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert basic["types"]["http_version"] == "str"
    assert basic["types"]["method"] == "str"


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        ("path", "/café/a b", "str"),
        ("raw_path", "/caf%C3%A9/a%20b", "bytes"),
        ("query_string", "a=1&b=%20", "bytes"),
    ],
    ids=[
        "path_is_percent_decoded_utf8",
        "raw_path_is_exact_bytes_without_query",
        "query_string_is_raw_bytes",
    ],
)
def test_target_keys(basic, key, value, kind):
    assert basic["scope"][key] == value
    assert basic["types"][key] == kind


def test_root_path_default_empty(basic):
    assert basic["scope"].get("root_path", "") == ""


def test_headers_lowercase_bytes_order_and_repeats(basic):
    headers = [tuple(pair) for pair in basic["scope"]["headers"]]
    assert basic["types"]["headers"] in ("list", "tuple")
    assert basic["headers_all_bytes"] is True
    assert basic["headers_pairs"] is True
    for name, _ in headers:
        assert name == name.lower(), name
    assert [value for name, value in headers if name == "x-a"] == ["1", "3"]
    assert [value for name, value in headers if name == "x-b"] == ["2"]
    assert [value for name, value in headers if name == "x-case"] == ["MiXeD"]
    assert [value for name, value in headers if name == "host"] == ["testserver"]
    # Nothing invented by the server, but the request id rsgi adds (--request-id).
    names = {name for name, _ in headers} - {"x-request-id"}
    assert sorted(names) == ["host", "x-a", "x-b", "x-case"]


def test_client_and_server_addresses(basic, scope_server):
    scope = basic["scope"]
    assert list(scope["client"]) == ["127.0.0.1", basic["_client_port"]]
    assert list(scope["server"]) == ["127.0.0.1", scope_server.port]


def test_http10_version(scope_server):
    data = fetch_scope(scope_server.port, "GET", "/v10", version="HTTP/1.0")
    assert data["scope"]["http_version"] == "1.0"


def test_post_method_and_body(scope_server):
    data = fetch_scope(scope_server.port, "PATCH", "/thing", body=b"payload-bytes")
    assert data["scope"]["method"] == "PATCH"
    assert data["body"] == "payload-bytes"


def test_encoded_slash_and_empty_query(scope_server):
    data = fetch_scope(scope_server.port, "GET", "/a%2Fb/c")
    assert data["scope"]["path"] == "/a/b/c"
    assert data["scope"]["raw_path"] == "/a%2Fb/c"
    assert data["scope"]["query_string"] == ""
    assert data["types"]["query_string"] == "bytes"


def test_query_string_with_non_ascii_kept_raw(scope_server):
    data = fetch_scope(scope_server.port, "GET", "/q?name=caf%C3%A9&flag&x=a+b")
    assert data["scope"]["query_string"] == "name=caf%C3%A9&flag&x=a+b"
    assert data["scope"]["path"] == "/q"


def test_state_is_shallow_copy_of_lifespan_state(scope_server):
    first = fetch_scope(scope_server.port, "GET", "/mutate-state")
    assert first["types"]["state"] == "dict"
    assert first["scope"]["state"]["counter"] == 42
    assert "x" not in first["scope"]["state"]
    second = fetch_scope(scope_server.port, "GET", "/after")
    state = second["scope"]["state"]
    assert state["counter"] == 42
    # A key set on one request's copy is not seen by the next request...
    assert "x" not in state
    # ...but the copy is shallow: the mutable value made at startup is shared.
    assert state["shared_list"] == ["seen"]


def test_root_path_option(root_path_server):
    data = fetch_scope(root_path_server.port, "GET", "/x?y=1")
    scope = data["scope"]
    assert scope["root_path"] == "/api"
    # uvicorn-compatible semantics: the proxy stripped the prefix, and `path` is the full
    # path including root_path (ASGI: path includes root_path).
    assert scope["path"] == "/api/x"
    assert scope["query_string"] == "y=1"
