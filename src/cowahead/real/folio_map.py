"""Which folio each page of a process's span belongs to, in the model and on the kernel, in one comparable form.

Per span page (an offset into the span):

- ``kind``: not mapped, an anonymous page, the 4 KiB zero page, or the huge
  zero page;
- ``size``: pages in the page's folio (1 for an order-0 page and the 4 KiB
  zero page, 16 for a 64 KiB mTHP, 512 for a PMD THP and the huge zero page);
- ``first``: the lowest span offset at which *this process* maps the same
  folio. It names the folio without PFNs, which the model does not share
  with the kernel: two pages are in one folio exactly when their ``first``
  agree. For the huge zero page (one compound page behind every 2 MiB that
  maps it) it is the first page of the 2 MiB;
- ``pmd``: a PMD maps the page (not split into 512 PTEs).

The model's side is read from ``Mm`` (its PTEs, PMDs and each frame's
folio); the kernel's from pagemap, kpageflags and PAGEMAP_SCAN
(``folios.read_folios``). ``differences`` says, page range by page range,
where they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ..model.memory import FrameKind, Mm
from ..trace.events import HPAGE_PMD_ORDER
from .folios import read_folios

HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER


class PageKind(IntEnum):
    NONE = 0
    ANON = 1
    ZERO_PAGE = 2
    HUGE_ZERO_PAGE = 3


@dataclass
class FolioMap:
    kind: np.ndarray   # uint8, PageKind
    size: np.ndarray   # int32
    first: np.ndarray  # int64, -1 where not mapped
    pmd: np.ndarray    # bool

    @classmethod
    def empty(cls, pages: int) -> FolioMap:
        return cls(np.zeros(pages, np.uint8), np.zeros(pages, np.int32), np.full(pages, -1, np.int64),
                   np.zeros(pages, bool))

    def describe(self, page: int) -> str:
        """One page as a reader would say it: 'a 16-page folio from +32', 'the huge zero page (PMD)'."""
        kind = PageKind(int(self.kind[page]))
        pmd = ", PMD-mapped" if self.pmd[page] else ""
        if kind == PageKind.NONE:
            return "not mapped"
        if kind == PageKind.ZERO_PAGE:
            return "the zero page"
        if kind == PageKind.HUGE_ZERO_PAGE:
            return f"the huge zero page{pmd}"
        size = int(self.size[page])
        return f"a {size}-page folio from +{int(self.first[page])}{pmd}" if size > 1 else "a 4 KiB page"


def model_folio_map(mm: Mm | None, span_start: int, span_pages: int) -> FolioMap:
    """The model's pages of ``[span_start, span_start + span_pages)`` in ``mm`` (None: nothing mapped)."""
    out = FolioMap.empty(span_pages)
    if mm is None:
        return out
    first_of: dict[int, int] = {}  # id(folio or frame) -> lowest offset mapping it
    offsets: list[tuple[int, int]] = []
    for page, pte in mm.ptes.items():
        offset = page - span_start
        if not 0 <= offset < span_pages:
            continue
        frame = pte.frame
        if frame.kind == FrameKind.ZERO:
            out.kind[offset], out.size[offset], out.first[offset] = PageKind.ZERO_PAGE, 1, offset
            continue
        key = id(frame.folio) if frame.folio is not None else id(frame)
        out.kind[offset] = PageKind.ANON
        out.size[offset] = frame.folio.nr_pages if frame.folio is not None else 1
        first_of[key] = min(first_of.get(key, offset), offset)
        offsets.append((offset, key))
    for index, pmd in mm.pmds.items():
        base = (index << HPAGE_PMD_ORDER) - span_start
        lo, hi = max(base, 0), min(base + HPAGE_PMD_NR, span_pages)
        if lo >= hi:
            continue
        out.pmd[lo:hi] = True
        out.size[lo:hi] = HPAGE_PMD_NR
        if pmd.folio is None:
            out.kind[lo:hi], out.first[lo:hi] = PageKind.HUGE_ZERO_PAGE, base
            continue
        out.kind[lo:hi] = PageKind.ANON
        key = id(pmd.folio)
        first_of[key] = min(first_of.get(key, lo), lo)
        offsets.extend((offset, key) for offset in range(lo, hi))
    for offset, key in offsets:
        out.first[offset] = first_of[key]
    return out


def kernel_folio_map(pid: int | str, address: int, pages: int) -> FolioMap:
    """The kernel's pages of ``pages`` pages from ``address`` (2 MiB aligned where the span is) of ``pid``."""
    folios = read_folios(pid, address, pages)
    out = FolioMap.empty(pages)
    huge_zero = folios.is_zero_page & folios.is_thp
    zero = folios.is_zero_page & ~folios.is_thp
    anon = folios.present & ~folios.is_zero_page
    offsets = np.arange(pages, dtype=np.int64)
    out.kind[anon] = PageKind.ANON
    out.kind[zero] = PageKind.ZERO_PAGE
    out.kind[huge_zero] = PageKind.HUGE_ZERO_PAGE
    out.size[anon] = folios.folio_pages[anon]
    out.size[zero] = 1
    out.size[huge_zero] = HPAGE_PMD_NR
    out.first[zero] = offsets[zero]
    out.first[huge_zero] = offsets[huge_zero] // HPAGE_PMD_NR * HPAGE_PMD_NR
    if anon.any():
        heads = folios.head_pfn[anon]
        unique, first_at = np.unique(heads, return_index=True)  # the lowest offset of each head
        out.first[anon] = offsets[anon][first_at][np.searchsorted(unique, heads)]
    if folios.pmd_mapped is not None:
        out.pmd[:] = folios.pmd_mapped & folios.present
    return out


def differences(model: FolioMap, kernel: FolioMap) -> np.ndarray:
    """The span offsets where the two maps disagree on kind, folio size, folio or PMD mapping."""
    differ = (model.kind != kernel.kind) | (model.size != kernel.size) | (model.first != kernel.first) \
        | (model.pmd != kernel.pmd)
    return np.flatnonzero(differ)


def compared_pages(model: FolioMap, kernel: FolioMap) -> int:
    """Pages either side maps: the pages a comparison counts (both unmapped says nothing)."""
    return int(((model.kind != PageKind.NONE) | (kernel.kind != PageKind.NONE)).sum())


def describe_differences(model: FolioMap, kernel: FolioMap, offsets: np.ndarray, span_start: int,
                         limit: int = 4) -> list[str]:
    """Runs of disagreeing pages that disagree the same way, as 'pages 0x..-0x..: model X, kernel Y'."""
    lines: list[str] = []
    run: list[int] = []
    last = None
    for offset in offsets.tolist() + [None]:
        said = None if offset is None else (_shape(model, offset), _shape(kernel, offset))
        if run and (offset is None or offset != run[-1] + 1 or said != last):
            what_model, what_kernel = model.describe(run[0]), kernel.describe(run[0])
            pages = f"page {run[0] + span_start:#x}" if len(run) == 1 else \
                f"pages {run[0] + span_start:#x}-{run[-1] + span_start:#x} ({len(run)})"
            lines.append(f"{pages}: model {what_model}, kernel {what_kernel}")
            run = []
            if len(lines) >= limit:
                break
        if offset is not None:
            run.append(offset)
            last = said
    return lines


def _shape(m: FolioMap, offset: int) -> tuple:
    """What a run groups by: the pages of one large folio share their ``first``; 4 KiB pages group by kind."""
    size = int(m.size[offset])
    return int(m.kind[offset]), size, bool(m.pmd[offset]), int(m.first[offset]) if size > 1 else None
