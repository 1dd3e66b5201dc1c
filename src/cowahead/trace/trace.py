"""An in-memory trace: numpy columns plus metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .events import COLUMNS, Event, EventKind


@dataclass
class Trace:
    """Columns named as in :data:`COLUMNS`, all of one length, and metadata."""

    columns: dict[str, np.ndarray]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths = {len(v) for v in self.columns.values()}
        if set(self.columns) != set(COLUMNS) or len(lengths) > 1:
            raise ValueError(f"a trace needs equal-length columns {list(COLUMNS)}")
        self.columns = {k: np.asarray(self.columns[k], dtype=COLUMNS[k]) for k in COLUMNS}

    def __len__(self) -> int:
        return len(self.columns["pid"])

    def events(self) -> Iterator[Event]:
        c = self.columns
        for i in range(len(self)):
            yield Event(int(c["time_ns"][i]), int(c["pid"][i]), EventKind(int(c["kind"][i])),
                        int(c["address"][i]), int(c["length"][i]), int(c["arg"][i]))

    @classmethod
    def from_events(cls, events: list[Event], metadata: dict | None = None) -> "Trace":
        columns = {name: np.array([getattr(e, name) for e in events], dtype=dtype)
                   for name, dtype in COLUMNS.items()}
        return cls(columns, dict(metadata or {}))
