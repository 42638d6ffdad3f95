"""Debouncing and coalescing for widget events: a burst of slider moves computes only the latest state.

Widget events arrive on the kernel's asyncio loop; ``Coalescer`` waits for ``delay_s`` of quiet,
computes the newest value on the loop itself (no threads: the model is never used by two computations
at once) and drops results that were superseded while they were computed. Nothing here knows about
models or widgets, so it is tested with a hand-driven loop, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

_NOTHING = object()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Coalescer:
    """Run ``compute`` on the latest submitted value only, after ``delay_s`` of quiet; hand it to ``deliver``.

    Inside a running asyncio loop (a Jupyter kernel, where widget events arrive) ``submit``
    returns at once and (re)starts a timer; when it fires, the newest pending value is computed
    and delivered. Values superseded before their turn are never computed, and a result whose
    value was superseded while it was computed is not delivered. Computing happens on the loop
    itself (no threads): the model is never used by two computations at once, and events
    that arrive during a computation wait in the kernel's queue and then only replace the
    pending value. Without a running loop (plain Python, tests) ``submit`` computes at once.

    Counters: ``submitted``, ``computed``, ``delivered``, ``superseded``.

    Example:
        >>> c = Coalescer(lambda x: x * 2, print, delay_s=0.0)
        >>> c.submit(3)
        6
    """

    def __init__(
        self,
        compute: Callable[[Any], Any],
        deliver: Callable[[Any], None],
        delay_s: float = 0.15,
        on_error: Callable[[BaseException, Any], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}.")
        self.compute, self.deliver, self.delay_s = compute, deliver, float(delay_s)
        self.on_error = on_error
        self.loop = loop
        self._pending: Any = _NOTHING
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self.submitted = self.computed = self.delivered = self.superseded = 0

    @property
    def idle(self) -> bool:
        """True when nothing is pending, scheduled or being computed."""
        return self._pending is _NOTHING and self._timer is None and not self._busy

    def submit(self, value: Any) -> None:
        """Ask for ``value`` to be computed; replaces any value still waiting."""
        if self._pending is not _NOTHING:
            self.superseded += 1
        self._pending = value
        self.submitted += 1
        loop = self.loop or _running_loop()
        if loop is None:
            self._drain()
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(self.delay_s, self._fire)

    def flush(self) -> None:
        """Compute and deliver the pending value now (if any), cancelling the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._drain()

    def _fire(self) -> None:
        self._timer = None
        self._drain()

    def _drain(self) -> None:
        if self._busy:  # re-entered from inside compute/deliver: the running drain picks the value up
            return
        self._busy = True
        try:
            while self._pending is not _NOTHING:
                value, self._pending = self._pending, _NOTHING
                try:
                    result = self.compute(value)
                except Exception as exc:
                    self.computed += 1
                    if self.on_error is None:
                        raise
                    self.on_error(exc, value)
                    continue
                self.computed += 1
                if self._pending is not _NOTHING:  # superseded while it was computed: drop it
                    continue
                self.deliver(result)
                self.delivered += 1
        finally:
            self._busy = False


__all__ = ["Coalescer"]
