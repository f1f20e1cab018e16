"""One ``ssh`` client process: feeding and draining it, ending it, and reading its output by lines.

The pieces of `OpenSSHTransport` that deal with a local process rather than with the master.
"""

from __future__ import annotations

from contextlib import suppress

import anyio
import anyio.abc

from slurmbatch._errors import ConnectionLost

from .framing import ScriptFrame
from .stream import LineSplitter

__all__ = ["ProcessLines", "communicate", "end_process"]

_CHUNK = 65536
_SSH_FAILED = 255  # ssh's own exit status for its own failures


class ProcessLines:
    """The lines an ``ssh`` process prints, as an async iterator, with `LineStream`'s contract."""

    def __init__(
        self, process: anyio.abc.Process, command: str, host: str, frame: ScriptFrame | None
    ) -> None:
        self._process = process
        self._command = command
        self._host = host
        self._splitter = LineSplitter(frame)
        self._stderr = b""

    @property
    def exit_status(self) -> int | None:
        """The body's exit status (framed), else the command's, once it has exited."""
        if self._splitter.frame is not None:
            return self._splitter.framed_status
        code = self._process.returncode
        return code if code is not None and code >= 0 else None

    @property
    def exit_signal(self) -> str | None:
        """Not known through ``ssh``: it reports a remote signal as exit status 255."""
        return None

    def __aiter__(self) -> ProcessLines:
        return self

    async def __anext__(self) -> str:
        splitter = self._splitter
        assert self._process.stdout is not None
        while not splitter.lines and not splitter.ended:
            try:
                chunk = await self._process.stdout.receive(_CHUNK)  # cancel-safe: nothing is lost
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                splitter.finish()
                splitter.ended = True
                await self._process.wait()
            else:
                splitter.feed(chunk)
        if splitter.lines:
            return splitter.lines.popleft()
        if splitter.frame is not None and splitter.framed_status is None:
            raise ConnectionLost(
                f"the script {self._command[:80]!r} on {self._host} stopped before its end marker (ssh exit "
                f"status {self._process.returncode}); the OpenSSH ControlMaster may have gone away",
                host=self._host,
            )
        if self._process.returncode == _SSH_FAILED:
            raise ConnectionLost(
                f"ssh to {self._host} failed while {self._command[:80]!r} ran (exit status 255)",
                host=self._host,
            )
        raise StopAsyncIteration


async def communicate(process: anyio.abc.Process, stdin: bytes) -> tuple[bytes, bytes]:
    out: list[bytes] = []
    err: list[bytes] = []

    async def feed() -> None:
        assert process.stdin is not None
        try:
            if stdin:
                await process.stdin.send(stdin)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the command stopped reading; its exit status tells the rest
        finally:
            await process.stdin.aclose()

    async def drain(stream: anyio.abc.ByteReceiveStream | None, into: list[bytes]) -> None:
        assert stream is not None
        async for chunk in stream:
            into.append(chunk)

    async with anyio.create_task_group() as tg:
        tg.start_soon(feed)
        tg.start_soon(drain, process.stdout, out)
        tg.start_soon(drain, process.stderr, err)
    return b"".join(out), b"".join(err)


async def end_process(process: anyio.abc.Process) -> None:
    """End an ssh process that may still run (cancelled, timed out) and reap it."""
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            with suppress(ProcessLookupError):
                process.terminate()
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        await process.aclose()
