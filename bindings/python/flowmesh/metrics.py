"""Prometheus exposition of a client's metrics.

``client.metrics()`` returns the text; ``start_http_server(client, port)``
serves it on ``http://addr:port/metrics`` from a daemon thread, for
applications without a web framework of their own (with one, add a route
returning ``client.metrics()`` with ``CONTENT_TYPE``, see
examples/fastapi_metrics.py).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Tuple

from ._errors import FlowMeshError

if TYPE_CHECKING:
    from .client import FlowMesh

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer:
    """A running exporter; ``close()`` stops it (also as a context manager)."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def address(self) -> Tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_http_server(client: "FlowMesh", port: int = 0, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve ``client.metrics()`` on ``GET /metrics`` (port 0 picks a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?", 1)[0] != "/metrics":
                self._reply(404, "text/plain", b"not found: GET /metrics\n")
                return
            try:
                body = client.metrics().encode("utf-8")
            except FlowMeshError as e:  # e.g. the client was closed
                self._reply(503, "text/plain", f"{e}\n".encode())
                return
            self._reply(200, CONTENT_TYPE, body)

        def _reply(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="flowmesh-metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
