"""Raw ASGI apps answering a body in one `http.response.body` message: 1 MiB (`download:app`)
and 64 KiB (`download:small`).
"""

from _fixed import fixed_body_app

app = fixed_body_app(b"x" * (1024 * 1024), b"application/octet-stream")
small = fixed_body_app(b"x" * (64 * 1024), b"application/octet-stream")
