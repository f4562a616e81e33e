"""gunicorn config file (``-c``) for tests/test_gunicorn.py: each server hook appends one
line, ``<hook> <worker pid> [details]``, to ``$GUNICORN_TEST_DIR/hooks.log``."""

import os


def _note(line: str) -> None:
    with open(os.path.join(os.environ["GUNICORN_TEST_DIR"], "hooks.log"), "a") as fh:
        fh.write(line + "\n")


def post_worker_init(worker):
    _note(f"post_worker_init {worker.pid}")


def worker_int(worker):
    _note(f"worker_int {worker.pid}")


def worker_abort(worker):
    _note(f"worker_abort {worker.pid}")


def worker_exit(server, worker):
    _note(f"worker_exit {worker.pid}")


def pre_request(worker, req):
    _note(f"pre_request {worker.pid} {req.method} {req.path}")


def post_request(worker, req, environ, resp):
    _note(f"post_request {worker.pid} {req.path} {resp.status} {environ['REQUEST_METHOD']}")
