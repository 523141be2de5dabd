"""POST /models/{name}[/versions/{v}]/predict answered in plain ASGI, ahead of FastAPI's router and
dependency solver.

Profiling under load showed routing, dependency resolution and the endpoint wrapper costing several
times the parse + batch + render work itself. This middleware gives the hot path the same `answer`
and the same JSON errors as the documented FastAPI route (service/api/routes/predict.py), which stays
for OpenAPI. It sits inside BodySizeLimit, so bodies over GRU_MAX_BODY_BYTES are refused as before.
Anything added as a route dependency (not as a middleware outside this one) does not run for predict.
"""

from __future__ import annotations

import re

from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.deps import resolve_model
from service.api.errors import DOMAIN_ERRORS, domain_error_response
from service.api.responses import NumpyJSONResponse
from service.api.routes.predict import answer

PREDICT_PATH = re.compile(r"/models/([^/]+)(?:/versions/([0-9]{1,9}))?/predict")


class PredictFastPath:
    def __init__(self, app: ASGIApp, state: State):
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PREDICT_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        content_type = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), None)
        state = self.state
        try:
            version = int(match.group(2)) if match.group(2) else None
            runtime = resolve_model(state.repository, match.group(1), version)
            state.batchers.get(runtime).check_room()  # shed load before reading and parsing
            body = await read_body(receive)  # BodySizeLimit raises BodyTooLarge from receive
            if body is None:
                return  # the client went away
            content = await answer(runtime, state.settings, state.batchers, content_type, body)
            response = NumpyJSONResponse(content)
        except DOMAIN_ERRORS as exc:
            response = domain_error_response(exc, scope["path"])
        await response(scope, receive, send)


async def read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
