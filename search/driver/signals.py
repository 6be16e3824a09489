"""Signals while hpsearch runs a search: one scope that installs a handler for SIGINT and SIGTERM
and puts the previous ones back (``handled``), the search's graceful stop (``GracefulStop``), and
the Ray Client side's note-and-relay (``signals_kept``).

SIGINT and SIGTERM stop a search gracefully: Tune saves its state and stops the trials, run.json
says ``interrupted``, the exit code is 130 / 143 and the last line says how to resume. A second
signal stops at once (the state saved at the last step stands).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def handled(handler: Callable[[int, Any], Any]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM inside the block, the previous handlers after it. Off the
    main thread (where Python allows no handler) the block runs with the handlers as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before if before is not None else signal.SIG_DFL)


class GracefulStop:
    """The SIGINT / SIGTERM handler while hpsearch runs a search.

    Inside ``Tuner.fit()`` the first signal asks Tune to stop, as Tune's own Ctrl-C handler does:
    Tune saves its experiment state, stops the trials and returns. Outside fit(), and on a second
    signal, it raises KeyboardInterrupt at once. ``signum`` keeps the first signal (exit code
    128 + signum)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._in_fit = False
        self._tune_before: Any = None
        self._relayed: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        relayed, self._relayed = self._relayed, []   # two relayed kills may arrive as one call
        if relayed:
            signum = relayed[0]
        first = self.signum is None and len(relayed) < 2
        if self.signum is None:
            self.signum = signum
        tune_stop = signal.getsignal(signal.SIGUSR1)   # installed by Tune for the run in progress
        if first and self._in_fit and callable(tune_stop) and tune_stop is not self._tune_before:
            print(f"hpsearch: {signal.Signals(signum).name}: saving the search state and stopping the trials "
                  "(send the signal again to stop at once)", file=sys.stderr, flush=True)
            tune_stop(signum, frame)
            return
        raise KeyboardInterrupt

    def relay(self, signum: int) -> None:
        """Deliver ``signum`` from another thread (hpsearch.driver.client relays the client's signals): raised
        here as SIGTERM, handled as ``signum``. In a Ray worker SIGINT never reaches Python (Ray
        keeps it for task cancellation); SIGTERM does, once this handler holds it."""
        self._relayed.append(signum)
        os.kill(os.getpid(), signal.SIGTERM)

    @contextlib.contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        """The handler for SIGINT and SIGTERM in this block (main thread only), the previous ones
        after it."""
        with handled(self):
            yield self

    def arm(self) -> None:
        """(Re)install the handler: ray.init installs its own SIGTERM handler, which aborts."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self)

    @contextlib.contextmanager
    def tune_running(self) -> Iterator[None]:
        self._tune_before, self._in_fit = signal.getsignal(signal.SIGUSR1), True
        try:
            yield
        finally:
            self._in_fit = False

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextlib.contextmanager
def signals_kept() -> Iterator[list[int]]:
    """SIGINT and SIGTERM noted (the loop in ``remote`` relays them) instead of ending this process."""
    got: list[int] = []
    with handled(lambda signum, frame: got.append(signum)):
        yield got


__all__ = ["STOP_SIGNALS", "GracefulStop", "handled", "signals_kept"]
