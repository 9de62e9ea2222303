"""A closed-loop HTTP/1.1 load generator on asyncio streams, for `serve.py`.

Why not httpx: on a 2-core machine the clients share the server's cores, so their CPU
is part of what is measured. Eight httpx clients in threads spent about a millisecond
of CPU a request and queued behind their own GIL; a keep-alive socket per client in
one event loop writes a request and reads its answer for a fraction of that, the way
load tools such as wrk measure a server. `serve.py --client httpx` keeps the old way.

Only what `bstrec serve` answers is read: a status line, headers and a
Content-Length body (a chunked answer is an error, not silently misread).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


class LoadError(Exception):
    """The server answered something this generator cannot read."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Outcome:
    """What one request gave: latency, and either an answer or an error."""

    request: tuple
    ms: float
    answer: Answer | None = None
    error: str | None = None


def encode(host: str, method: str, path: str, body) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return (head + "\r\n").encode() + data


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise LoadError(f"not an HTTP/1.x status line: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise LoadError(f"an answer without Content-Length (headers: {sorted(headers)})")
    body = await reader.readexactly(int(headers["content-length"]))
    return Answer(int(parts[1]), headers, body)


@dataclass
class Load:
    """Send ``requests`` (method, path, JSON body or None) from ``clients`` connections,
    each sending its next request when its last one is answered, until the requests
    run out or ``deadline`` (time.monotonic) passes."""

    host: str
    port: int
    clients: int
    deadline: float
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0

    def run(self, requests: list[tuple], on_answer: Callable | None = None) -> Load:
        asyncio.run(self._run(iter(requests), on_answer))
        return self

    async def _run(self, todo: Iterator[tuple], on_answer) -> None:
        conns = [await asyncio.open_connection(self.host, self.port) for _ in range(self.clients)]
        t0 = time.perf_counter()
        try:
            await asyncio.gather(*(self._client(r, w, todo, on_answer) for r, w in conns))
        finally:
            self.wall_s = time.perf_counter() - t0
            for _, w in conns:
                w.close()

    async def _client(self, reader, writer, todo, on_answer) -> None:
        host = f"{self.host}:{self.port}"
        while time.monotonic() < self.deadline:
            req = next(todo, None)
            if req is None:
                return
            t = time.perf_counter()
            try:
                writer.write(encode(host, *req))
                await writer.drain()
                answer = await read_answer(reader)
            except (OSError, asyncio.IncompleteReadError, LoadError) as e:
                ms = (time.perf_counter() - t) * 1e3
                self.outcomes.append(Outcome(req, ms, error=f"{type(e).__name__}: {e}"))
                return  # this connection is unusable; the others go on
            ms = (time.perf_counter() - t) * 1e3
            self.outcomes.append(Outcome(req, ms, answer))
            if on_answer is not None:
                on_answer(req, answer)
