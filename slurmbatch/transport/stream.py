"""The output of a long-running remote command, line by line, usable from asyncio and trio.

`LineStream` is what `SSHPool.stream` yields: the standard output of one command on one channel of the
pool, as an async iterator of lines, for commands that report as they go (a watcher, a log tail).

Limits:

* Lines are buffered on the client until read; the channel's window stops the server from sending more
  once about a window's worth waits unread.
* One task reads at a time; a second concurrent reader raises `anyio.BusyResourceError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable

import anyio
import asyncssh

from slurmbatch._errors import ConnectionLost

from ._bridge import AsyncioBridge
from ._connect import Target
from .framing import ScriptFrame

__all__ = ["LineStream"]

_CHUNK = 65536  # bytes per read: one read takes whatever has arrived, up to this
_EXIT_TIMEOUT = 5.0  # seconds to wait, after the output ended, for the exit status


class LineStream:
    """The lines a remote command prints on standard output, as an async iterator.

    Obtain one with ``async with pool.stream(command) as lines:``; it is valid only inside that block::

        async with pool.stream("tail -F job.log") as lines:
            async for line in lines:
                print(line)

    Each item is one line, decoded as UTF-8 (undecodable bytes become U+FFFD), without its line ending; a
    last line without one is yielded too. Iteration stops when the command closes its output.

    Cancellation: cancelling a wait for the next line loses no output; that line is returned by the next
    call. A wait may therefore be bounded with `anyio.move_on_after` to notice a command gone quiet.

    Raises (while iterating):
        ConnectError: the connection dropped while the command ran.
        SessionClosedError: the pool was closed meanwhile.
    """

    def __init__(
        self,
        bridge: AsyncioBridge,
        process: asyncssh.SSHClientProcess[bytes],
        command: str,
        target: Target,
        *,
        frame: ScriptFrame | None = None,
    ) -> None:
        self._bridge = bridge
        self._reader = _LineReader(process, frame)
        self._process = process
        self._command = command
        self._target = target
        self._reading = False

    @property
    def exit_status(self) -> int | None:
        """The command's exit status once it has exited, else None (also when a signal ended it).

        For a framed script (`SSHPool.stream_script`), the body's exit status from its end marker.
        """
        if self._reader.frame is not None:
            return self._reader.framed_status
        return self._process.exit_status

    @property
    def exit_signal(self) -> str | None:
        """The name of the signal that ended the command (``"TERM"``), if one did."""
        signal = self._process.exit_signal
        return signal[0] if signal else None

    def __aiter__(self) -> LineStream:
        return self

    async def __anext__(self) -> str:
        reader = self._reader
        if not reader.lines and not reader.ended:
            if self._reading:
                raise anyio.BusyResourceError("reading from")
            self._reading = True
            try:
                # Under trio this runs on the asyncio thread; nothing else touches the reader meanwhile.
                await self._bridge.call(reader.fill)
            finally:
                self._reading = False
        else:
            # Lines already buffered: still honour a pending cancellation, before taking one.
            await anyio.lowlevel.checkpoint_if_cancelled()
        if reader.lines:
            return reader.lines.popleft()
        if reader.frame is not None and reader.framed_status is None and reader.error is None:
            raise ConnectionLost(
                f"the script {self._command!r} on {self._target.address} stopped before its end marker "
                f"(exit status {self._process.exit_status}, signal {self.exit_signal})",
                host=self._target.alias,
            )
        if reader.error is not None or (self.exit_status is None and self.exit_signal is None):
            raise ConnectionLost(
                f"the connection to {self._target.address} was lost while {self._command!r} was "
                f"running{f' ({reader.error})' if reader.error else ''}",
                host=self._target.alias,
                cause=reader.error,
            )
        raise StopAsyncIteration


class LineSplitter:
    """Splits a command's output into lines, and a framed script's into the body's lines. Pure.

    Feed it chunks with `feed` and `finish`; whole lines gather in `lines`.
    """

    def __init__(self, frame: ScriptFrame | None) -> None:
        #: Lines before the frame's begin marker are the login shell's, and skipped.
        self.frame = frame
        self._begun = frame is None
        #: The body's exit status, once the frame's end marker arrived.
        self.framed_status: int | None = None
        self._held_empty = False
        self._partial = b""
        self.lines: deque[str] = deque()
        self.ended = False

    def feed(self, chunk: bytes) -> None:
        """Take one chunk of output."""
        *whole, self._partial = (self._partial + chunk).split(b"\n")
        self._take(_decode(line) for line in whole)

    def finish(self) -> None:
        """The output ended: a last line without its line ending is a line too."""
        if self._partial:
            self._take([_decode(self._partial)])
            self._partial = b""

    def _take(self, lines: Iterable[str]) -> None:
        if self.frame is None:
            self.lines.extend(lines)
            return
        for line in lines:
            if self.framed_status is not None:
                continue  # after the end marker: not the body's
            if not self._begun:
                self._begun = self.frame.begins(line)
                continue
            status = self.frame.ending(line)
            if status is not None:
                # The frame puts a newline before its end marker: an empty line just before it is ours.
                self._held_empty = False
                self.framed_status = status
                continue
            if self._held_empty:
                self.lines.append("")
            # An empty line is held back until the next line tells whether it was the body's.
            self._held_empty = line == ""
            if line:
                self.lines.append(line)


class _LineReader(LineSplitter):
    """Reads an asyncssh process's output into lines (runs on the asyncio side of the bridge)."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes], frame: ScriptFrame | None) -> None:
        super().__init__(frame)
        self._process = process
        self.error: BaseException | None = None

    async def fill(self) -> None:
        """Wait until at least one whole line is buffered, or the output has ended.

        Safe to cancel: `asyncssh.SSHReader.read` consumes nothing while it waits, and what it returned
        is split into `lines` before the next await.
        """
        while not self.lines and not self.ended:
            try:
                chunk = await self._process.stdout.read(_CHUNK)
            except (asyncssh.Error, OSError) as error:  # the connection was lost under the channel
                self.error = error
                self.ended = True
                return
            if chunk:
                self.feed(chunk)
                continue
            self.finish()
            # The exit status travels just before the channel closes; without it the connection died.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._process.wait_closed(), _EXIT_TIMEOUT)
            self.ended = True


def _decode(line: bytes) -> str:
    return line.removesuffix(b"\r").decode("utf-8", errors="replace")
