"""Every intended difference between rsgi and uvicorn that the compat suite tolerates.

This is the only place a difference may be excused.  The comparison code in
``harness.py`` looks each one up here by name (``allowed("...")``), so an entry that is
removed makes the tests that relied on it fail again.  Anything not listed is a bug in
one of the servers (normally rsgi, since uvicorn is the reference).
"""

from __future__ import annotations

DIFFERENCES: dict[str, str] = {
    "x-request-id": (
        "rsgi echoes or generates an X-Request-ID response header for every request "
        "(--request-id, on by default; README 'Logging'); uvicorn sends none."
    ),
    "server-header": (
        "The Server header names the server: 'rsgi' instead of 'uvicorn' (--server-header)."
    ),
    "date-header": (
        "The Date header is the time of the response; it differs between any two responses."
    ),
    "single-message-framing": (
        "When the app sends its whole body in one http.response.body message (more_body "
        "false) without a Content-Length, rsgi knows the length and frames the response with "
        "Content-Length; uvicorn (httptools) uses Transfer-Encoding: chunked. The body bytes "
        "are identical. Tolerated only in exactly that shape: uvicorn chunked, rsgi "
        "Content-Length equal to the body's length."
    ),
    "head-length": (
        "For a HEAD request whose app sends the body it would send for GET in one message "
        "without a Content-Length (datasette's CSV), rsgi answers with the Content-Length a "
        "GET would carry, as RFC 9110 section 9.3.2 suggests; uvicorn sends no framing "
        "header at all. Tolerated only in that shape."
    ),
    "http10": (
        "rsgi answers an HTTP/1.0 request with an HTTP/1.0 status line: hyper frames the "
        "response as 1.0 (no chunked encoding; close-delimited unless the client asked for "
        "keep-alive), and the version says so (RFC 9110 section 6.2 allows it). uvicorn "
        "writes 'HTTP/1.1' and 'connection: close'. A 1.0 client that sends "
        "'Connection: keep-alive' (ApacheBench -k, old proxies) keeps its connection with "
        "rsgi ('connection: keep-alive' echoed); uvicorn closes it."
    ),
    "error-page-text": (
        "rsgi's own 400 page says 'Bad Request' (the status's reason phrase, as for every "
        "refusal it makes); uvicorn's says 'Invalid HTTP request received.'. Status, "
        "'connection: close' and content type agree."
    ),
    "client-disconnected": (
        "After the client has gone, rsgi's send() raises rsgi.ClientDisconnected (an "
        "OSError, as ASGI spec 2.4 asks) so the app stops producing output; uvicorn's send() "
        "returns None and discards the message. rsgi logs this at DEBUG only (README "
        "'Logging'). An app that catches the error and prints its own traceback (datasette "
        "does, for an aborted CSV export) shows it on stderr; under uvicorn it streams on "
        "to nobody instead."
    ),
    "websocket-access-line": (
        "For a WebSocket handshake rsgi writes an ordinary access line to stdout "
        "('\"GET /ws HTTP/1.1\" 101', or 403 when refused); uvicorn writes "
        "'\"WebSocket /ws\" [accepted]' and 'connection open' to stderr at INFO. Neither is "
        "at WARNING or above; WebSocket scenarios do not compare access lines."
    ),
    "missing-host": (
        "An HTTP/1.1 request without a Host header (or with two) gets 400 and "
        "'connection: close' from rsgi, with a WARNING log line, as RFC 9112 section 3.2 "
        "requires and tests/test_smuggling.py checks (a request-smuggling defence); uvicorn "
        "serves it. Tolerated only in that shape: rsgi 400, uvicorn 2xx, for that request."
    ),
    "exit-status-after-sigterm": (
        "After a graceful shutdown on SIGTERM rsgi exits with status 0 (README: 'Exit codes: "
        "0 after a clean shutdown'); uvicorn restores the default handler and re-raises the "
        "signal, so it dies of SIGTERM (-15 from Popen)."
    ),
    "sighup-reload": (
        "SIGHUP to an rsgi master (here started with --pid so that one worker runs under a "
        "master) is a zero-downtime reload; uvicorn without --reload has no SIGHUP "
        "handler (the signal kills it), so only rsgi is sent SIGHUP and its open streams "
        "are held to uvicorn's SIGTERM behaviour."
    ),
}


def allowed(name: str) -> str:
    """The reason for the difference ``name``; KeyError if it is not an intended one."""
    return DIFFERENCES[name]
