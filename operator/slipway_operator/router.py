"""The local backend's Service: one loopback URL for a ModelDeployment, traffic split by weight between its
tracks (stable and canary), as a Kubernetes Service splits it by ready replicas.

`python -m slipway_operator.router --routes routes.json --ready-file ready.json [--port 0] [--grpc-port 0]`
routes.json: `{"backends": [{"url": "http://127.0.0.1:40123", "weight": 90, "grpc": "127.0.0.1:40124"}, ...]}`,
rewritten by the local backend whenever a track changes; the router reads it again when its modification time
moves. HTTP: it answers 503 while no backend is listed, 502 when the chosen one does not answer (after trying
another), 413 above --max-body-bytes. gRPC: each connection goes to one backend's gRPC port, chosen by weight
(as a ClusterIP Service balances connections), bytes relayed both ways. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import signal
import socket
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
        self.grpc: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def current(self, key: str = "url") -> list[tuple[str, float]]:
        """(address, weight) of each backend: its HTTP URL, or (`key="grpc"`) its gRPC host:port."""
        with self.lock:
            try:
                mtime = self.path.stat().st_mtime
            except FileNotFoundError:
                return []
            if mtime != self.mtime:
                try:
                    data = json.loads(self.path.read_text())
                except (OSError, json.JSONDecodeError):
                    return self.backends if key == "url" else self.grpc  # being rewritten: the last good routes
                listed = data.get("backends", [])
                self.backends = [(str(b["url"]), float(b.get("weight", 1))) for b in listed]
                self.grpc = [(str(b["grpc"]), float(b.get("weight", 1))) for b in listed if b.get("grpc")]
                self.mtime = mtime
            return self.backends if key == "url" else self.grpc


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


def _relay(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _grpc_connection(client: socket.socket, routes: Routes) -> None:
    """One client connection relayed to one backend's gRPC port (another is tried when one refuses)."""
    tried: set[str] = set()
    while (address := choose(routes.current("grpc"), tried)) is not None:
        tried.add(address)
        host, _, port = address.rpartition(":")
        try:
            backend = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            continue
        backend.settimeout(None)
        other = threading.Thread(target=_relay, args=(backend, client), daemon=True)
        other.start()
        _relay(client, backend)
        other.join()
        backend.close()
        break
    client.close()


def serve_grpc(listener: socket.socket, routes: Routes) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_grpc_connection, args=(client, routes), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slipway_operator.router", description=__doc__)
    parser.add_argument("--routes", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--grpc-port", type=int, default=None, help="also relay gRPC connections (0: any port)")
    args = parser.parse_args(argv)
    routes = Routes(args.routes)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(routes, args.max_body_bytes))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    ready: dict[str, Any] = {"port": server.server_address[1], "pid": os.getpid()}
    if args.grpc_port is not None:
        listener = socket.create_server(("127.0.0.1", args.grpc_port))
        threading.Thread(target=serve_grpc, args=(listener, routes), daemon=True).start()
        ready["grpcPort"] = listener.getsockname()[1]
    tmp = args.ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ready))
    tmp.replace(args.ready_file)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
