"""The HTTP floor: a bare ASGI app that reads the request body and returns a constant JSON answer, run
by uvicorn exactly as `gru serve` runs it (service/cli.py's options), with the same workers and load
generator as gru-serve in `make bench`. Nothing an ASGI service can do costs less per request; the bench
reports gru-serve's req/s as a share of this.

    python -m bench.baselines.bare_app PORT WORKERS
"""

from __future__ import annotations

import sys
from typing import Any

ANSWER = b'{"model":"small","version":1,"labels":["1","2"],"predictions":[{"label":"1","probabilities":' \
         b'[0.5235966,0.47640347]}]}'  # a small model's answer, byte for byte
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


def main(port: int, workers: int) -> None:
    import uvicorn

    from service.cli import uvicorn_options
    from service.logs import logging_config
    from service.settings import Settings

    settings = Settings(log_level="warning")
    uvicorn.run("bench.baselines.bare_app:app", host="127.0.0.1", port=port, workers=workers,
                **uvicorn_options(settings, logging_config(settings.log_level, settings.log_format)))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
