"""The shared part of the scripted test servers: an aiohttp app on 127.0.0.1 (a free port)
run by its own event loop in a background thread, as a context manager.

A server subclasses :class:`LoopbackServer`, calls ``super().__init__()`` and adds its
handlers in :meth:`routes`; ``url`` (set on entering) is ``http://127.0.0.1:PORT`` plus
:attr:`url_path`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from aiohttp import web


class LoopbackServer:
    """Run :meth:`routes` on 127.0.0.1 in a background thread while entered."""

    url_path = ""
    """Appended to the base URL (``/v1`` for servers whose clients take an API base)."""
    client_max_size = 1024**2
    """Largest request body aiohttp accepts (aiohttp's default)."""

    def __init__(self) -> None:
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        """Add the server's handlers to ``app``."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        app = web.Application(client_max_size=self.client_max_size)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}{self.url_path}"
