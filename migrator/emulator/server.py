"""Run an emulator and its image origin on 127.0.0.1, in a background thread.

``Emulator`` is the Python API the tests, the demo, the benchmarks and the
``migrator emulator`` command share: a context manager that binds its ports
(0 picks free ones), serves with uvicorn on its own event loop, and offers the
URLs, credentials and control calls (faults, reset, stats) a caller needs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from migrator.emulator.app import EmulatorApp
from migrator.emulator.faults import Faults
from migrator.emulator.origin import Origin
from migrator.emulator.settings import Settings

logger = logging.getLogger(__name__)

_START_TIMEOUT = 10.0


def _quiet_dropped_answers(record: logging.LogRecord) -> bool:
    """Keep uvicorn quiet about answers the drop fault cuts short on purpose."""
    return "without completing response" not in record.getMessage()


def _new_loop(speedups: bool) -> asyncio.AbstractEventLoop:
    if speedups:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _http_protocol(speedups: bool) -> str:
    if speedups:
        try:
            import httptools  # noqa: F401
        except ImportError:
            pass
        else:
            return "httptools"
    return "h11"


class Emulator:
    """An emulator (main and batch API) and an image origin, served in a thread.

    ``port=0`` and ``origin_port=0`` pick free ports. With ``batch_port`` set
    (0 for a free one) the batch API is also served on a port of its own, as
    Cloudflare serves it on its own host; both ports serve every route.
    ``speedups=False`` serves with uvicorn's pure-Python HTTP parser and event
    loop instead of httptools and uvloop (for comparison in benchmarks).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        faults: Faults | None = None,
        data: Path | None = None,
        origin_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        batch_port: int | None = None,
        origin_port: int = 0,
        speedups: bool = True,
    ) -> None:
        self.settings = settings or Settings()
        self.speedups = speedups
        self.host = host
        self.app = EmulatorApp(self.settings, faults, data)
        self.origin = Origin(origin_dir)
        self._ports = {"main": port, "origin": origin_port}
        if batch_port is not None:
            self._ports["batch"] = batch_port
        self._sockets: dict[str, socket.socket] = {}
        self._servers: list[uvicorn.Server] = []
        self._thread: threading.Thread | None = None
        self._control: httpx.Client | None = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The emulator's root: control routes and the direct-upload target."""
        return self._url("main")

    @property
    def main_url(self) -> str:
        """The main API's base, as the official SDK's ``base_url`` wants it."""
        return f"{self._url('main')}/client/v4"

    @property
    def batch_url(self) -> str:
        """The batch host's base (paths below it start ``/images/``)."""
        return self._url("batch" if "batch" in self._sockets else "main")

    @property
    def origin_url(self) -> str:
        return self._url("origin")

    @property
    def account_id(self) -> str:
        return self.settings.account_id

    @property
    def account_hash(self) -> str:
        return self.settings.account_hash

    @property
    def api_token(self) -> str:
        return self.settings.api_tokens[0]

    def start(self) -> Emulator:
        """Bind the ports and serve until ``stop``; return once every port answers."""
        try:
            for name, port in self._ports.items():
                self._sockets[name] = socket.create_server(
                    (self.host, port), backlog=2048
                )
        except OSError:
            self.stop()
            raise
        uvicorn_log = logging.getLogger("uvicorn.error")
        if _quiet_dropped_answers not in uvicorn_log.filters:
            uvicorn_log.addFilter(_quiet_dropped_answers)
        self._thread = threading.Thread(
            target=self._run, name="migrator-emulator", daemon=True
        )
        self._thread.start()

        deadline = time.monotonic() + _START_TIMEOUT
        while not self._started():
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("emulator did not start; see the log above")
            time.sleep(0.005)
        self._control = httpx.Client(base_url=self.base_url, timeout=30)
        logger.debug("emulator serving %s (batch %s)", self.main_url, self.batch_url)
        return self

    def stop(self) -> None:
        """Stop serving, close the ports and wait for the thread to end."""
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=_START_TIMEOUT)
            self._thread = None
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._servers.clear()
        if self._control is not None:
            self._control.close()
            self._control = None

    def set_faults(self, **values: Any) -> dict[str, Any]:
        """Replace the faults with these (unnamed ones off); return them all."""
        faults: dict[str, Any] = self._call("POST", "/_emulator/faults", values)
        return faults

    def reset(self) -> None:
        """Forget every image and counter; faults return to those given at start."""
        self._call("POST", "/_emulator/reset")

    def stats(self) -> dict[str, Any]:
        """Return what the emulator saw (see ``GET /_emulator/stats``)."""
        stats: dict[str, Any] = self._call("GET", "/_emulator/stats")
        return stats

    def batch_token(self) -> str:
        """Ask the main API for a batch token, as a client would."""
        response = httpx.get(
            f"{self.main_url}/accounts/{self.account_id}/images/v1/batch_token",
            headers={"Authorization": f"Bearer {self.api_token}"},
        )
        response.raise_for_status()
        return str(response.json()["result"]["token"])

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self._control is None:
            raise RuntimeError("the emulator is not running")
        response = self._control.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def _url(self, name: str) -> str:
        host, port = self._sockets[name].getsockname()[:2]
        return f"http://{host}:{port}"

    def _started(self) -> bool:
        return len(self._servers) == len(self._sockets) and all(
            server.started for server in self._servers
        )

    def _run(self) -> None:
        loop = _new_loop(self.speedups)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        serving = []
        for name, sock in self._sockets.items():
            app = self.origin if name == "origin" else self.app
            config = uvicorn.Config(
                app,
                http=_http_protocol(self.speedups),
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_keep_alive=30,
            )
            server = uvicorn.Server(config)
            self._servers.append(server)
            serving.append(server.serve(sockets=[sock]))
        try:
            await asyncio.gather(*serving)
        finally:
            await self.app.aclose()
