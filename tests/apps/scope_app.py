"""ASGI app that answers every HTTP request with a JSON description of its scope.

A request whose path ends in ``/mutate-state`` changes its ``scope["state"]`` after
describing it: it sets ``x`` and appends to the shared list made at startup.
"""

from raw_app import describe_scope, lifespan, read_body, respond_json


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    body = await read_body(receive)
    description = describe_scope(scope)
    description["body"] = body.decode("latin-1")
    if scope["path"].endswith("/mutate-state"):
        scope["state"]["x"] = 1
        scope["state"]["shared_list"].append("seen")
    await respond_json(send, description)
