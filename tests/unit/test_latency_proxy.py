"""The benchmark's latency proxy: bytes arrive intact and in order, both ways, never earlier than the RTT.

How much delay it adds under load is measured by the benchmark itself; here only what must always
hold: the bytes, their order, the half-close, and that a request and its answer take at least one RTT
(a lower bound that a loaded machine can only make longer).
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from benchmarks.compare.latency_proxy import LatencyProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _receive_all(sock: socket.socket) -> bytes:
    parts = []
    while data := sock.recv(65536):
        parts.append(data)
    return b"".join(parts)


@pytest.mark.parametrize("rtt", [0.0, 0.02])
def test_bytes_arrive_intact_and_in_order_both_ways(echo_port: int, rtt: float) -> None:
    # Many writes of uneven sizes, larger in total than any socket buffer: the proxy must not reorder
    # or lose a chunk while several are in flight.
    chunks = [os.urandom(size) for size in (1, 7, 1500, 65536, 3, 200_000, 40_000) * 4]
    with (
        LatencyProxy("127.0.0.1", echo_port, rtt).running() as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as sock,
    ):
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(_receive_all(sock)))
        reader.start()
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)  # the echo server sees the end only after every chunk
        reader.join(timeout=60)
    assert received == [b"".join(chunks)]


def test_an_answer_never_comes_back_before_one_rtt(echo_port: int) -> None:
    rtt = 0.05
    with (
        LatencyProxy("127.0.0.1", echo_port, rtt).running() as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as sock,
    ):
        for _ in range(3):
            started = time.monotonic()
            sock.sendall(b"ping")
            assert sock.recv(16) == b"ping"
            assert time.monotonic() - started >= rtt


def test_connections_are_independent_and_counted(echo_port: int) -> None:
    with LatencyProxy("127.0.0.1", echo_port, 0.0).running() as proxy:
        socks = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(3)]
        try:
            for i, sock in enumerate(socks):
                sock.sendall(bytes([i]) * 10)
            for i, sock in enumerate(socks):
                got = b""
                while len(got) < 10:
                    got += sock.recv(10 - len(got))
                assert got == bytes([i]) * 10
        finally:
            for sock in socks:
                sock.close()
        assert proxy.connections == 3
