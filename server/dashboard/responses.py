"""JSON out: escaped so that no data can ever read as markup, and always valid JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse

# Inside JSON strings only (elsewhere JSON has none of these): "<script>" in an item id
# comes back as "\u003cscript\u003e", so a browser that sniffed the body as HTML, or a page
# that pasted it into markup, would still find no tag.
_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def finite(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN or infinity: a rate
    without impressions, a score of an unrankable item)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [finite(inner) for inner in value]
    return value


def dumps(content: Any) -> bytes:
    text = json.dumps(finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.translate(_ESCAPES).encode("utf-8")


class SafeJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content)
