"""SIGINT/SIGTERM during training: stop after the current update and save."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType


class Interrupt:
    """SIGINT/SIGTERM handler: the first signal asks the loop to stop after this update and
    save; a second SIGINT gives up at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupt]:
        """Handle SIGINT/SIGTERM inside the block (main thread only), then restore."""
        try:
            old = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: leave signals alone
            yield self
            return
        try:
            yield self
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
