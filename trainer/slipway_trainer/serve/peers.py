"""The other servers of a deployment, for feedback that reached a replica which did not answer its request.

Behind a Service, a client's feedback lands on any replica (of the stable track or of a canary), and each
remembers only its own predictions. A replica that knows none of the requests a feedback body names asks its
peers, once each, and relays the first answer that is not "unknown" (the body is taken whole by the one replica
that answered those requests, or refused as before). A forwarded body carries `FORWARDED` and is never forwarded
again, so no loop forms. Peers are the A records of a headless Service (`dns://name:port`, on Kubernetes) or the
backends of `slipway run`'s router table (`file://.../routes.json`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

FORWARDED = "X-Slipway-Forwarded"
MAX_PEERS = 32  # asked at once; a deployment larger than this is asked in part
CACHE_SECONDS = 5.0
TIMEOUT_SECONDS = 3.0

log = logging.getLogger(__name__)


class Peers:
    def __init__(self, spec: str, missing_ok: bool = False) -> None:
        self.spec = spec
        self.missing_ok = missing_ok  # an address that resolves to nothing is normal (a shadow that is not running)
        self._urls: list[str] = []
        self._at = -CACHE_SECONDS
        self._session: aiohttp.ClientSession | None = None

    async def urls(self) -> list[str]:
        """The peers' base URLs (this server among them: it answers a forwarded body it does not know with 404)."""
        if time.monotonic() - self._at < CACHE_SECONDS:
            return self._urls
        try:
            self._urls = await self._resolve()
        except (OSError, ValueError) as err:
            log.log(logging.DEBUG if self.missing_ok else logging.WARNING, "cannot list %s: %s", self.spec, err)
            self._urls = []
        self._at = time.monotonic()
        return self._urls

    async def _resolve(self) -> list[str]:
        parts = urlsplit(self.spec)
        if parts.scheme == "file":
            routes = json.loads(Path(parts.path).read_text())
            return [str(b["url"]).rstrip("/") for b in routes.get("backends", [])][:MAX_PEERS]
        if parts.scheme != "dns" or not parts.hostname or not parts.port:
            raise ValueError("peers must be dns://<host>:<port> or file://<routes.json>")
        found = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
        hosts = sorted({str(info[4][0]) for info in found})
        return [f"http://{f'[{h}]' if ':' in h else h}:{parts.port}" for h in hosts][:MAX_PEERS]

    async def forward(self, path: str, body: bytes) -> tuple[int, bytes] | None:
        """POST the body to every peer at once; the first answer that is not 404 (a peer that knows the requests:
        accepted, or refused for its own reason), else None."""
        urls = await self.urls()
        if not urls:
            return None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))
        session = self._session
        headers = {FORWARDED: "1", "Content-Type": "application/json"}

        async def ask(url: str) -> tuple[int, bytes] | None:
            try:
                async with session.post(f"{url}{path}", data=body, headers=headers) as answer:
                    return answer.status, await answer.read()
            except (aiohttp.ClientError, TimeoutError) as err:
                log.debug("peer %s did not answer: %s", url, err)
                return None

        for done in asyncio.as_completed([ask(u) for u in urls]):
            answer = await done
            if answer is not None and answer[0] != 404:
                return answer
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
