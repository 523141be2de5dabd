"""The HTTP floor: a bare ASGI app that reads the request body and returns a constant JSON answer, run
by the same server with the same workers and load generator as gru-serve. Nothing a real service can
do costs less per request; `make bench` reports gru-serve's req/s as a share of this.

    uvicorn bench.baselines.bare_app:app        granian --interface asgi bench.baselines.bare_app:app
"""

from __future__ import annotations

from typing import Any

ANSWER = b'{"predictions":[{"label":"1","probabilities":[0.5,0.5]}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # the whole body, as a real app must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
