"""Sockets inside the real node's network namespace, made from a process that stays outside it.

The real node's pods, Services and kubelet have addresses that exist only inside the network namespace the
test bed made (``tests/cluster/node.py``). A thread that ``setns``-es into that namespace makes sockets there;
a socket keeps the namespace it was made in, so the rest of the process (on the host's loopback) can use it.
The test bed uses this to check the node's components, tests use it to reach pod and ClusterIP addresses, and
``nodeproxy.py`` uses it to join the two sides.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import socket
from concurrent.futures import ThreadPoolExecutor

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _enter(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into the real node's network namespace: {os.strerror(err)}")


class NodeNet:
    """Makes sockets in the network namespace at ``ns_path`` (e.g. ``/proc/<pid>/ns/net``)."""

    def __init__(self, ns_path: str) -> None:
        self.fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
        # One thread lives in the namespace for the object's lifetime; only that thread changes namespace.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="nodenet", initializer=_enter, initargs=(self.fd,))

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        return self._thread.submit(socket.socket, family, kind).result()

    def listen(self, host: str, port: int) -> socket.socket:
        sock = self.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        return sock

    def connect(self, host: str, port: int, timeout: float = 5.0) -> socket.socket:
        sock = self.socket()
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def http_get(self, host: str, port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
        """A plain HTTP GET to an address inside the node's network (a pod, a ClusterIP, the node)."""
        return self.http("GET", host, port, path, timeout=timeout)

    def http(
        self, method: str, host: str, port: int, path: str, body: bytes | None = None, timeout: float = 5.0
    ) -> tuple[int, str]:
        """One HTTP request on a new connection (a ClusterIP balances per connection) inside the node's network."""
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = self.connect(host, port, timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        os.close(self.fd)
