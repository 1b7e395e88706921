"""Input lines for ``cohort run``, read lazily in a daemon thread.

Reading stdin (or a pipe) can block for as long as the writer likes, so a
thread does the reads and hands whole chunks of lines to the event loop; a
semaphore bounds how many chunks wait, so memory stays flat however long the
input. The thread reads the file descriptor with ``os.read`` rather than
through ``sys.stdin.buffer``: a daemon thread parked inside a buffered
object's lock at interpreter exit is a fatal error, a bare ``read(2)`` is not.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["InputError", "LineFeed"]

_CHUNK = 64 * 1024  # bytes per read(2)
_DEPTH = 8  # chunks of lines waiting for the pipeline at most

_Item = list[bytes] | BaseException | None  # a chunk of lines, a read error, or end of input


class InputError(ValueError):
    """An input line that cannot be decoded (not UTF-8, or not JSON under --json-lines)."""


class LineFeed:
    """The lines of file descriptor ``fd`` as an async iterator of str (or JSON values)."""

    def __init__(self, fd: int, *, json_lines: bool) -> None:
        self._fd = fd
        self._json = json_lines
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._slots = threading.Semaphore(_DEPTH)
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lines = 0

    async def __aiter__(self) -> AsyncIterator[Any]:
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name="cohort-input", daemon=True).start()
        try:
            while True:
                item = await self._queue.get()
                self._slots.release()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                for raw in item:
                    self.lines += 1
                    value = self._decode(raw)
                    if value is not _SKIP:
                        yield value
        finally:
            self._stop.set()

    def _decode(self, raw: bytes) -> Any:
        try:
            text = raw.removesuffix(b"\r").decode()
        except UnicodeDecodeError as exc:
            raise InputError(f"input line {self.lines} is not UTF-8: {exc.reason}") from None
        if not self._json:
            return text
        if not text.strip():
            return _SKIP
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"input line {self.lines} is not JSON: {exc.msg}") from None

    def _read(self) -> None:
        tail = b""
        try:
            while chunk := os.read(self._fd, _CHUNK):
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                if lines and not self._send(lines):
                    return
            if tail and not self._send([tail]):
                return
            self._send(None)
        except OSError as exc:
            self._send(InputError(f"reading the input failed: {exc.strerror or exc}"))

    def _send(self, item: _Item) -> bool:
        """Hand ``item`` to the loop once a slot is free; False when the reader has gone."""
        assert self._loop is not None
        while not self._stop.is_set():
            if self._slots.acquire(timeout=0.1):
                try:
                    self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
                except RuntimeError:  # the loop is closed: the run is over
                    return False
                return True
        return False


_SKIP: Any = object()
