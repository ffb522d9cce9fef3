"""SIGINT/SIGTERM during training: stop after the current update and save; before training
begins (start-up): stop at once, cleanly."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from types import FrameType

logger = logging.getLogger(__name__)

SIGTERM_EXIT = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


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


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Inside the block SIGTERM raises SystemExit(143), so cleanup (the run lock) runs; by
    default it would end the process on the spot. Training replaces this with `Interrupt`."""

    def stop(signum: int, frame: FrameType | None) -> None:
        logger.warning("stopped by SIGTERM during start-up, before the first update")
        raise SystemExit(SIGTERM_EXIT)

    try:
        old = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
