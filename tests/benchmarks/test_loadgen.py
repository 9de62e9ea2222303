"""The serving benchmark's load generator against a small in-test HTTP server: every
request answered, in a closed loop, and what it cannot read is an error, not a guess."""

import asyncio
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "loadgen", Path(__file__).resolve().parents[2] / "benchmarks" / "loadgen.py"
)
loadgen = importlib.util.module_from_spec(_spec)
sys.modules["loadgen"] = loadgen  # dataclasses look their module up there
_spec.loader.exec_module(loadgen)


class EchoServer:
    """Answers each request with its own path and body; ``chunked`` answers without a
    Content-Length. Counts the requests in flight at once."""

    def __init__(self, chunked: bool = False):
        self.chunked = chunked
        self.in_flight = self.most_in_flight = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    async def _main(self):
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        async with server:
            await self.stop.wait()

    async def _conn(self, reader, writer):
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ")
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":")[1])
            body = await reader.readexactly(length)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await asyncio.sleep(0.002)  # long enough for the other clients to send theirs
            self.in_flight -= 1
            out = json.dumps({"method": method, "path": path, "body": body.decode()}).encode()
            if self.chunked:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nServer-Timing: model;dur=1.5\r\n"
                    + f"Content-Length: {len(out)}\r\n\r\n".encode()
                    + out
                )
            await writer.drain()

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


@pytest.fixture
def server():
    s = EchoServer()
    yield s
    s.close()


def test_every_request_is_answered_on_kept_connections(server):
    reqs = [("POST", f"/r/{i}", {"history": [i]}) for i in range(40)]
    reqs += [("GET", "/health", None)]
    got = {}
    load = loadgen.Load("127.0.0.1", server.port, 4, time.monotonic() + 30)
    load.run(reqs, on_answer=lambda req, a: got.__setitem__(req[1], a.json()))
    assert len(load.outcomes) == len(reqs) and not [o for o in load.outcomes if o.error]
    assert got["/r/7"] == {"method": "POST", "path": "/r/7", "body": '{"history": [7]}'}
    assert got["/health"]["body"] == ""
    assert load.outcomes[0].answer.headers["server-timing"] == "model;dur=1.5"
    assert all(o.ms > 0 for o in load.outcomes) and load.wall_s > 0
    # closed loop: at most one request a connection at a time, and the 4 overlap
    assert server.most_in_flight == 4


def test_an_answer_it_cannot_read_is_an_error():
    s = EchoServer(chunked=True)
    try:
        load = loadgen.Load("127.0.0.1", s.port, 1, time.monotonic() + 30)
        load.run([("GET", "/a", None), ("GET", "/b", None)])
    finally:
        s.close()
    assert len(load.outcomes) == 1  # the connection is given up after the error
    assert "without Content-Length" in load.outcomes[0].error
