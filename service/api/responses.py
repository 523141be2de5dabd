"""JSON responses serialised by orjson, NumPy arrays included (no Python loop over floats)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class NumpyJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
