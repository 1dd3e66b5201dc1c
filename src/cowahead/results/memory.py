"""Memory over a trace's time: extra pages (copied ahead, not yet written), pages copied, pages resident.

COW-ahead moves COW memory earlier and makes it larger; a peak alone hides when. The replay keeps its
counters after a bounded number of evenly spaced events (the model's ``Kernel.samples``, the engine's
``State.samples``), and each row carries the series. ``evaluate`` keeps them for ``none`` and each
family's best window only.
"""

from __future__ import annotations

from typing import Sequence

from ..model.counters import Counters

MEMORY_SAMPLES = 64  # points per replay: enough for a plot, a few KB per row


def sample_points(events: int, n: int = MEMORY_SAMPLES) -> list[int]:
    """Up to ``n`` event counts, evenly spaced, the last the trace's end."""
    return sorted({max(1, round(events * k / n)) for k in range(1, n + 1)}) if events else []


def memory_series(points: Sequence[int], samples: Sequence[Counters]) -> dict[str, list[int]]:
    """The series a row carries: after ``events[i]`` events, the pages extra, copied and resident."""
    return {"events": list(points), "extra_pages": [c.extra_pages for c in samples],
            "pages_copied": [c.cow_copy_pages + c.ahead_copies for c in samples],
            "resident": [c.resident for c in samples]}
