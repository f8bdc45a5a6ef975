"""Real servers for the integration tests, each in a thread with its own event loop.

A test talks to them as a browser would: over real TCP WebSocket connections. ``call``
runs a coroutine function inside the server's loop (to publish on the memory broker, or
read the broadcaster's stats) and returns its result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from tests.support.redis_server import free_port, scaled

T = TypeVar("T")


class ServerThread:
    """Base: a server running in a daemon thread until ``stop()``."""

    name = "server"

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.http_url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.leftover_tasks: list[str] = []

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(scaled(15)):
            raise RuntimeError(f"{self.name} did not start in time")
        if self._error is not None:
            raise RuntimeError(f"{self.name} failed to start") from self._error
        return self

    def _main(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _AsyncioServer(ServerThread):
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def run() -> T:
            return await fn(*args)

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return future.result(scaled(15))

    async def acall(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Like ``call`` but awaitable from another event loop."""

        async def run() -> T:
            return await fn(*args)

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), scaled(15))

    def _record_leftovers(self) -> None:
        current = asyncio.current_task()
        self.leftover_tasks = [
            repr(t) for t in asyncio.all_tasks() if t is not current and not t.done()
        ]


class UvicornServer(_AsyncioServer):
    """An ASGI app on uvicorn (asyncio), lifespan on."""

    name = "uvicorn"

    def __init__(self, app: Any, *, bridge: dict[str, Any] | None = None, **config: Any) -> None:
        super().__init__(app)
        import uvicorn

        options: dict[str, Any] = {
            "log_level": "warning",
            "lifespan": "on",
            "ws": "websockets-sansio",
        }
        options.update(config)
        uvicorn_config = uvicorn.Config(app, host="127.0.0.1", port=self.port, **options)
        if bridge is None:
            self.server = uvicorn.Server(uvicorn_config)
        else:  # wsbridge.uvicorn.Server, with these keyword arguments
            from wsbridge.uvicorn import Server

            self.server = Server(uvicorn_config, **bridge)

    def _main(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            task = asyncio.create_task(self.server.serve())
            try:
                for _ in range(int(scaled(15) / 0.01)):
                    if self.server.started or task.done():
                        break
                    await asyncio.sleep(0.01)  # polls uvicorn's flag; bounded
                if task.done():
                    task.result()
            except BaseException as exc:
                self._error = exc
            finally:
                self._ready.set()
            await task
            self._record_leftovers()

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced through start()/stop()
            self._error = self._error or exc
            self._ready.set()

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(scaled(20))
            assert not self._thread.is_alive(), "uvicorn did not stop in time"


class AiohttpServer(_AsyncioServer):
    """An aiohttp ``web.Application`` on aiohttp's own server."""

    name = "aiohttp"

    def _main(self) -> None:
        from aiohttp import web

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            runner = web.AppRunner(self.app, shutdown_timeout=scaled(5))
            try:
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", self.port)
                await site.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()
            self._record_leftovers()

        asyncio.run(main())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(scaled(20))
            assert not self._thread.is_alive(), "aiohttp did not stop in time"


class HypercornTrioServer(ServerThread):
    """An ASGI app on hypercorn's trio worker: the same endpoint under trio."""

    name = "hypercorn-trio"

    def _main(self) -> None:
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.loglevel = "WARNING"
        config.graceful_timeout = scaled(5)

        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:

                async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    await serve(
                        self.app, config, shutdown_trigger=self._stop.wait, task_status=task_status
                    )

                try:
                    await nursery.start(run)
                except BaseException as exc:
                    self._error = exc
                    self._ready.set()
                    raise
                self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = self._error or exc
            self._ready.set()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        import trio

        return trio.from_thread.run(fn, *args, trio_token=self.token)

    async def acall(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await asyncio.wait_for(asyncio.to_thread(self.call, fn, *args), scaled(15))

    def stop(self) -> None:
        import trio

        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        if self._thread is not None:
            self._thread.join(scaled(20))
            assert not self._thread.is_alive(), "hypercorn did not stop in time"


class BridgeServer(_AsyncioServer):
    """wsbridge's own standalone server (``wsbridge.server.Server``)."""

    name = "wsbridge-server"

    def __init__(self, endpoint: Any, **options: Any) -> None:
        super().__init__(endpoint)
        from wsbridge.server import Server

        self.server = Server(endpoint, host="127.0.0.1", port=self.port, path="/ws", **options)

    def _main(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            task = asyncio.create_task(self.server.serve())
            started = asyncio.create_task(self.server.started())
            await asyncio.wait(
                {task, started}, timeout=scaled(15), return_when=asyncio.FIRST_COMPLETED
            )
            if task.done():
                self._error = task.exception()
                started.cancel()
            self._ready.set()
            await task
            self._record_leftovers()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = self._error or exc
            self._ready.set()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.shutdown)
        if self._thread is not None:
            self._thread.join(scaled(20))
            assert not self._thread.is_alive(), "wsbridge server did not stop in time"
