"""Running the boot service: ``BootService`` (a server thread: tests, embedding) and
``serve`` (block until an event is set: ``metalctl boot serve``)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import TracebackType

from metalctl.boot.config import BootConfig
from metalctl.boot.http import BootApp, BootHTTPServer
from metalctl.errors import HostSetupError, ProvisionError, UsageError
from metalctl.store import Store

_LOG = logging.getLogger("metalctl.boot")
# A library does not configure logging; without a handler of the caller's, say nothing.
_LOG.addHandler(logging.NullHandler())

_STOP_SECONDS = 15.0


class BootService:
    """The boot HTTP service on ``address``:``port`` (0: any free port), in a thread."""

    def __init__(
        self,
        store_path: Path,
        *,
        address: str = "127.0.0.1",
        port: int = 0,
        files_dir: Path | None = None,
        config: BootConfig | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._app = BootApp(store_path, files_dir, config or BootConfig(), logger or _LOG)
        self._bind = (address, port)
        self._server: BootHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> BootService:
        if self._server is not None:
            raise UsageError("this boot service is already started")
        # Open the store once now: a bad path or a broken file fails here, not on the
        # first machine that boots.
        Store(self._app.store_path).close()
        try:
            server = BootHTTPServer(self._bind, self._app)
        except OSError as exc:
            raise HostSetupError(
                f"boot service cannot listen on {self._bind[0]}:{self._bind[1]}: "
                f"{exc.strerror or exc}",
                hint="another process may hold the port; pick another with --port",
            ) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.25},
            name=f"metalctl-boot-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def address(self) -> str:
        return str(self._require().server_address[0])

    @property
    def port(self) -> int:
        return int(self._require().server_address[1])

    @property
    def url(self) -> str:
        host = self.address
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop accepting, wait for requests in flight (bounded), release the port."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        if thread.is_alive():
            server.shutdown()  # returns once serve_forever has left its loop
        server.server_close()
        thread.join(_STOP_SECONDS)
        self._server = self._thread = None

    def _require(self) -> BootHTTPServer:
        if self._server is None:
            raise UsageError("the boot service is not started")
        return self._server

    def __enter__(self) -> BootService:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    store_path: Path,
    address: str,
    port: int,
    files_dir: Path | None,
    stop_event: threading.Event,
    *,
    config: BootConfig | None = None,
    logger: logging.Logger | None = None,
) -> None:
    """Serve until ``stop_event`` is set (the CLI sets it on SIGINT/SIGTERM)."""
    log = logger or _LOG
    with BootService(
        store_path, address=address, port=port, files_dir=files_dir, config=config, logger=log
    ) as service:
        log.info("boot service listening on %s (files: %s)", service.url, files_dir or "none")
        # Wake now and then to notice a server thread that died, rather than hang.
        while not stop_event.wait(0.5):
            if not service.alive():
                raise ProvisionError("the boot service stopped unexpectedly; see its log")
        log.info("boot service stopping")
