"""Starlette `FileResponse` of a 1 MiB file: `GET /` (`file:app`).

Starlette sends the file with `http.response.pathsend` when the server announces it in
`scope["extensions"]` (rsgi, granian); otherwise (uvicorn) it reads the file in chunks in
Python and sends them as body messages. The file (random bytes, the same in every run) is
written once into the temp directory.
"""

import os
import random
import tempfile

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route

SIZE = 1024 * 1024
PATH = os.path.join(tempfile.gettempdir(), "rsgi-bench-file-1mib.bin")


def _write_once() -> None:
    if os.path.exists(PATH) and os.path.getsize(PATH) == SIZE:
        return
    part = f"{PATH}.{os.getpid()}"
    with open(part, "wb") as f:
        f.write(random.Random(1).randbytes(SIZE))
    os.replace(part, PATH)


_write_once()


async def serve_file(request):
    return FileResponse(PATH, media_type="application/octet-stream")


app = Starlette(routes=[Route("/", serve_file)])
