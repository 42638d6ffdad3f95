"""The one progress bar of the package (condition loops, scans, pre-training steps).

A tqdm bar (``tqdm.auto``: a widget in notebooks, text elsewhere); with ``enabled=False`` it is a disabled
bar whose ``update`` and ``close`` do nothing, so callers never test for None.

Example:
    >>> bar = progress_bar(3, enabled=False)
    >>> bar.update(1); bar.close()
"""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(
    total: int,
    enabled: bool = True,
    desc: str = "conditions",
    unit: str = "cond",
    initial: int = 0,
    **tqdm_options: Any,
):
    """A ``tqdm.auto.tqdm`` over ``total`` items starting at ``initial``; disabled (no output) unless ``enabled``.

    ``tqdm_options`` go to tqdm (e.g. ``mininterval=2.0, smoothing=0.05`` for pre-training steps).
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, **tqdm_options)
