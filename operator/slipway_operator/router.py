"""The local backend's Service: one loopback URL for a ModelDeployment, traffic split by weight between its
tracks (stable and canary), as a Kubernetes Service splits it by ready replicas.

`python -m slipway_operator.router --routes routes.json --ready-file ready.json [--port 0]`
routes.json: `{"backends": [{"url": "http://127.0.0.1:40123", "weight": 90}, ...]}`, rewritten by the local
backend whenever a track changes; the router reads it again when its modification time moves. It answers 503
while no backend is listed, 502 when the chosen one does not answer (after trying another), 413 above
--max-body-bytes. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Routes:
    """The routes file, read again when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mtime = -1.0
        self.backends: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def current(self) -> list[tuple[str, float]]:
        with self.lock:
            try:
                mtime = self.path.stat().st_mtime
            except FileNotFoundError:
                return []
            if mtime != self.mtime:
                try:
                    data = json.loads(self.path.read_text())
                except (OSError, json.JSONDecodeError):
                    return self.backends  # being rewritten: keep the last good routes
                self.backends = [(str(b["url"]), float(b.get("weight", 1))) for b in data.get("backends", [])]
                self.mtime = mtime
            return self.backends


def choose(backends: list[tuple[str, float]], exclude: set[str]) -> str | None:
    """A backend by weight; all weights zero means equal shares."""
    left = [(url, w) for url, w in backends if url not in exclude]
    if not left:
        return None
    weights = [w for _, w in left]
    if sum(weights) <= 0:
        weights = [1.0] * len(left)
    return random.choices([url for url, _ in left], weights=weights)[0]


def make_handler(routes: Routes, max_body: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the servers behind keep the request metrics and logs

        def _answer(self, code: int, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_body:
                self._answer(413, f"request body of {length} bytes is above the limit of {max_body}")
                return
            body = self.rfile.read(length) if length else b""
            tried: set[str] = set()
            while True:
                url = choose(routes.current(), tried)
                if url is None:
                    if tried:
                        self._answer(502, "no model server answered")
                    else:
                        self._answer(503, "no model server is ready yet")
                    return
                tried.add(url)
                target = urllib.parse.urlsplit(url)
                connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    answer = connection.getresponse()
                    data = answer.read()
                except OSError:
                    connection.close()
                    continue
                connection.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return

        do_GET = do_POST = do_PUT = do_DELETE = _forward

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slipway_operator.router", description=__doc__)
    parser.add_argument("--routes", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Routes(args.routes), args.max_body_bytes))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    tmp = args.ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": server.server_address[1], "pid": os.getpid()}))
    tmp.replace(args.ready_file)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
