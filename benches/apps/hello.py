"""Raw ASGI "hello" app: 13 bytes, text/plain, content-length set.

Served from this directory as `hello:app`.
"""

from _fixed import fixed_body_app

app = fixed_body_app(b"Hello, world!", b"text/plain")
