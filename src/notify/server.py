"""Running the app under uvicorn: one configuration for the CLI, the tests and the benchmarks."""

from __future__ import annotations

import uvicorn
from litestar import Litestar

from notify.core.config import Settings
from notify.hub.transport import bind_http


def build_server(
    app: Litestar, settings: Settings, host: str, port: int, loop: str = "auto"
) -> uvicorn.Server:
    """uvicorn with notify's WebSocket protocol: it serves `/ws/notify` itself and, on
    shutdown (SIGTERM), closes those sockets with 1001 so clients resume on another pod."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        loop=loop,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
        timeout_keep_alive=75,  # outlive load balancers' idle timeouts (often 60 s)
        http=bind_http(app.state),  # serves /ws/notify itself (notify.hub.transport)
        ws_per_message_deflate=False,  # deflate state would cost KiBs per idle socket
        ws_max_size=settings.ws_max_frame,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_interval,
    )
    return uvicorn.Server(config)
