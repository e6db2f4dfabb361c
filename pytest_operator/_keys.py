"""Key presses from the terminal, for ``operator demo``.

The terminal goes into cbreak mode (each key arrives as it is pressed, without Enter;
Ctrl-C still raises SIGINT), and the event loop's reader callback reads what arrives, so
waiting for a key never blocks the loop. The terminal's settings come back on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO


class Keys:
    """Key presses from a terminal in cbreak mode (each key as it is pressed, Ctrl-C still
    a signal), read by the event loop's reader callback so nothing blocks. A ``q``
    anywhere calls ``on_quit`` at once; other keys wait in a queue for :meth:`next`.
    Input that is not a terminal is read as it comes; at its end, the demo goes on by
    itself (as ``--auto``)."""

    def __init__(self, stream: TextIO, on_quit: Callable[[], None]) -> None:
        self._stream = stream
        self._on_quit = on_quit
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._fd: int | None = None
        self._saved: list[Any] | None = None  # termios' attribute list
        self.ended = False

    def __enter__(self) -> Keys:
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError):
            self.ended = True
            return self
        if os.isatty(fd):
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd, termios.TCSANOW)
        self._fd = fd
        try:
            asyncio.get_running_loop().add_reader(fd, self._readable)
        except (OSError, ValueError, PermissionError):  # a regular file: no reader
            self._fd = None
            self.ended = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
        if self._saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self._stream.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 64)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
            self.ended = True
            self._queue.put_nowait("")
            return
        for key in data.decode(errors="replace"):
            if key in "qQ":
                self._on_quit()
            else:
                self._queue.put_nowait(key)

    def drain(self) -> None:
        """Forget keys pressed while the demo was busy (they answer no question)."""
        while not self._queue.empty():
            self._queue.get_nowait()

    async def next(self, timeout: float | None) -> str | None:
        """The next key (``""`` when the input ended), or None after ``timeout`` s."""
        if self.ended and self._queue.empty():
            await asyncio.sleep(timeout or 0)
            return None
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None
