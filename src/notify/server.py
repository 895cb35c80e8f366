"""Running the app under uvicorn: one configuration for the CLI, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from litestar import Litestar

from notify.core.config import Settings
from notify.hub.transport import NotifyWebSocketProtocol


class NotifyServer(uvicorn.Server):
    """On SIGTERM, close every socket with 1001 first so clients resume on another pod;
    uvicorn's own shutdown would close them with 1012."""

    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self._app = app
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        hub = getattr(self._app.state, "hub", None)
        if self._draining or hub is None or not hub.connections:
            super().handle_exit(sig, frame)
            return
        self._draining = True

        async def drain() -> None:
            try:
                await asyncio.wait_for(hub.close_all(1001, "server going away"), 5)
            finally:
                super(NotifyServer, self).handle_exit(sig, frame)

        asyncio.get_running_loop().create_task(drain())


def build_server(
    app: Litestar, settings: Settings, host: str, port: int, loop: str = "auto"
) -> NotifyServer:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        loop=loop,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
        ws=NotifyWebSocketProtocol,
        ws_per_message_deflate=False,  # deflate state: ~KiBs/socket
        ws_max_size=settings.ws_max_frame,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_interval,
    )
    return NotifyServer(config, app)
