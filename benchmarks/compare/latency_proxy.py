"""A TCP proxy that adds round-trip time: the WAN between a laptop and its cluster, on loopback.

The kernel here has no netem, so delay is added in user space. Every chunk read from one side is
stamped when it arrives and written to the other side half the RTT later; a reader never waits for
the writer, so chunks stay in order and in flight together (the link adds latency, not a bandwidth
cap). Each direction of each connection has its own queue, as a network path has.

It runs on its own asyncio loop in a background thread, so that a synchronous harness can start it
once per RTT and hand its port to every contender that connects over SSH.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHUNK = 64 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, every chunk ``delay`` seconds after it was read, in order."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not chunk:  # end of stream, after everything before it
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    delivering = asyncio.ensure_future(deliver())
    try:
        while True:
            chunk = await reader.read(CHUNK)
            queue.put_nowait((time.monotonic() + delay, chunk))
            if not chunk:
                break
        await delivering
    finally:
        delivering.cancel()


class LatencyProxy:
    """Listens on ``127.0.0.1:<port>`` and forwards to ``target_host:target_port`` with ``rtt`` added.

    ``rtt`` is in seconds; each direction gets half of it. Use as a context manager
    (:meth:`running`), which starts the listener and stops it with every connection.
    """

    def __init__(self, target_host: str, target_port: int, rtt: float) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.rtt = rtt
        self.port = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.close()
            return
        self._open |= {client_w, server_w}
        one_way = self.rtt / 2
        try:
            await asyncio.gather(
                _pump(client_r, server_w, one_way), _pump(server_r, client_w, one_way), return_exceptions=True
            )
        finally:
            for writer in (client_w, server_w):
                self._open.discard(writer)
                writer.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.close()
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()
        await self._server.wait_closed()

    @contextmanager
    def running(self) -> Iterator[LatencyProxy]:
        """Serve in a background thread while the block runs; :attr:`port` is where to connect."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"latency-proxy-{self.rtt}", daemon=True)
        thread.start()
        self._loop = loop
        try:
            asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=10)
            yield self
        finally:
            if self._server is not None:
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
