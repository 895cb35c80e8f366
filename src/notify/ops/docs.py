"""GET /docs: the interactive API reference, reading /schema/openapi.json."""

from __future__ import annotations

from litestar import MediaType, get

DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>notify API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><script id="api-reference" data-url="/schema/openapi.json"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script></body></html>
"""


@get("/docs", exclude_from_auth=True, include_in_schema=False, media_type=MediaType.HTML)
async def docs() -> str:
    return DOCS_HTML
