"""The state one fault carries down the fault path, like ``struct vm_fault``.

``handle_mm_fault`` fills it in; each handler reads what it needs and
records its outcome (the counter it bumped), and the COW-ahead policy is
asked about the same object.
"""

from __future__ import annotations

from dataclasses import dataclass

from .folio import Folio
from .memory import Mm, Pmd, Pte, Vma


@dataclass(slots=True, eq=False)
class VmFault:
    pid: int
    mm: Mm
    vma: Vma
    page: int
    write: bool
    index: int              # the event's position in the trace; only the oracle may use it
    pte: Pte | None = None  # orig_pte before the fault; the PTE the access goes through after it
    pmd: Pmd | None = None  # the write-protected PMD a write faulted on (do_huge_pmd_wp_page)
    folio: Folio | None = None  # the large folio a COW copy copied from (None: a 4 KiB page)
    outcome: str = ""       # the Counters field the fault bumped: zero_fill, cow_copy, reuse, …
