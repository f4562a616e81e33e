"""Raw ASGI app answering a 1 MiB body (one `http.response.body` message).

Served as `download:app`.
"""

from _fixed import fixed_body_app

app = fixed_body_app(b"x" * (1024 * 1024), b"application/octet-stream")
