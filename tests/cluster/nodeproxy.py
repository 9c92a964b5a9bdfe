"""The real node's network plumbing: one process with sockets on both sides of its namespace.

The control plane and the S3 store listen on the host's loopback; the real node's kubelet, kube-proxy,
CoreDNS and pods live in a network namespace of the test bed's own, with no route out. This process
joins the two without touching the host's network (no veth, no route, no firewall rule):

- ``--forward NODE_ADDR:PORT=HOST_ADDR:PORT``: listens inside the node's namespace and connects on the
  host's loopback (the API server for the kubelet, kube-proxy, CoreDNS and in-pod clients; the S3 store
  for workloads);
- ``--egress SOCKET``: an HTTP CONNECT proxy on a Unix socket, which the API server's egress selector
  (``cluster``) dials for kubelet and pod traffic (``kubectl logs/exec/port-forward``, the pod proxy). It
  connects only to the networks given by ``--allow``.

    python tests/cluster/nodeproxy.py --netns /proc/PID/ns/net \\
        --forward 10.88.0.1:6443=127.0.0.1:6443 --egress egress.sock --allow 10.88.0.0/16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nodenet import NodeNet

MAX_REQUEST = 8192


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _join(a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: socket.socket) -> None:
    reader, writer = a
    try:
        b_reader, b_writer = await asyncio.open_connection(sock=b)
    except OSError:
        writer.close()
        b.close()
        return
    await asyncio.gather(_pipe(reader, b_writer), _pipe(b_reader, writer))
    for w in (writer, b_writer):
        w.close()


async def _connect(sock: socket.socket, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


class Plumbing:
    def __init__(self, net: NodeNet, allow: list[ipaddress.IPv4Network]) -> None:
        self.net = net
        self.allow = allow

    async def forward(self, listen: tuple[str, int], target: tuple[str, int]) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                upstream = await _connect(socket.socket(), *target)  # made here: the host's loopback
            except (OSError, TimeoutError):
                writer.close()
                return
            await _join((reader, writer), upstream)

        return await asyncio.start_server(handle, sock=self.net.listen(*listen))

    async def egress(self, path: Path) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                writer.close()
                return
            status, upstream = await self._open(head)
            writer.write(f"HTTP/1.1 {status}\r\n\r\n".encode())
            await writer.drain()
            if upstream is None:
                writer.close()
                return
            await _join((reader, writer), upstream)

        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        server = await asyncio.start_unix_server(handle, path=str(path), limit=MAX_REQUEST)
        os.chmod(path, 0o600)
        return server

    async def _open(self, head: bytes) -> tuple[str, socket.socket | None]:
        try:
            method, authority, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
            host, port = authority.rsplit(":", 1)
            address = ipaddress.ip_address(host.strip("[]"))
            port_number = int(port)
        except ValueError:
            return "400 Bad Request", None
        if method != "CONNECT":
            return "405 Method Not Allowed", None
        if not any(address in net for net in self.allow):
            return "403 Forbidden", None
        try:
            upstream = await _connect(self.net.socket(), str(address), port_number)  # inside the node
        except (OSError, TimeoutError):
            return "502 Bad Gateway", None
        return "200 Connection established", upstream


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def main_async(args: argparse.Namespace) -> None:
    plumbing = Plumbing(NodeNet(args.netns), [ipaddress.ip_network(a) for a in args.allow])
    servers = []
    for spec in args.forward:
        listen, target = spec.split("=", 1)
        servers.append(await plumbing.forward(_address(listen), _address(target)))
    if args.egress:
        servers.append(await plumbing.egress(Path(args.egress)))
    print("nodeproxy ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--netns", required=True, help="the node's network namespace, e.g. /proc/PID/ns/net")
    parser.add_argument("--forward", action="append", default=[], help="NODE_ADDR:PORT=HOST_ADDR:PORT")
    parser.add_argument("--egress", help="Unix socket of the API server's CONNECT proxy into the node")
    parser.add_argument("--allow", action="append", default=[], help="a network the CONNECT proxy may reach")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
