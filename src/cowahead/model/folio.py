"""Large folios: which sizes a fault may allocate, and the folio's own counts (mm/huge_memory.c).

A *folio* of order k is 2**k frames allocated, mapped and freed together: a
PMD THP (order 9, 2 MiB, mapped by one PMD until split) or an mTHP
(orders 1–8, 8 KiB–1 MiB, mapped by PTEs). ``FolioSettings`` holds the knobs
of ``/sys/kernel/mm/transparent_hugepage`` a trace was made under and the
kernel version, since versions differ (``Kernel.wp_can_reuse``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..errors import CowaheadError
from ..trace.events import HPAGE_PMD_ORDER, LARGE_DESTINATIONS_KEY

MODES = ("always", "inherit", "madvise", "never")
TOP_MODES = ("always", "madvise", "never")
# The kernel the model follows when a trace does not say (the host this project measures on).
DEFAULT_KERNEL = (6, 18)


def order_of_size(kb: int) -> int:
    """hugepages-<kb>kB → the folio order (pages = 2**order)."""
    pages = kb // 4
    if kb % 4 or pages < 2 or pages & (pages - 1) or pages > 1 << HPAGE_PMD_ORDER:
        raise CowaheadError(f"hugepages-{kb}kB is not a folio size (8 kB … 2048 kB, a power of two)")
    return pages.bit_length() - 1


def kernel_version(release: str) -> tuple[int, int]:
    """'6.18.44-fc-v657' → (6, 18); the default kernel if the string says nothing."""
    found = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(found.group(1)), int(found.group(2))) if found else DEFAULT_KERNEL


@dataclass(frozen=True)
class FolioSettings:
    """THP's top-level ``enabled``, each folio order's ``hugepages-*/enabled``, ``use_zero_page``, the kernel,
    and whether that kernel's COW-ahead copies into large destination folios.

    The default is a kernel allocating 4 KiB pages only (THP ``never``): what every generated trace and
    every version-1 trace without settings replays under. ``large_destinations`` is the patched kernel's
    option (model/large_destination.py has the rule), off by default; a trace's metadata turns it on with
    ``LARGE_DESTINATIONS_KEY`` beside its ``thp`` words and its ``kernel``, as the kernel version is given.
    """
    enabled: str = "never"
    orders: dict[int, str] = field(default_factory=lambda: {HPAGE_PMD_ORDER: "inherit"})
    use_zero_page: bool = True
    kernel: tuple[int, int] = DEFAULT_KERNEL
    large_destinations: bool = False

    def __post_init__(self) -> None:
        if self.enabled not in TOP_MODES:
            raise CowaheadError(f"THP enabled={self.enabled!r}: expected one of {', '.join(TOP_MODES)}")
        for order, mode in self.orders.items():
            if mode not in MODES or not 1 <= order <= HPAGE_PMD_ORDER:
                raise CowaheadError(f"folio order {order} mode {mode!r}: expected one of {', '.join(MODES)}")

    @classmethod
    def from_thp(cls, thp: dict[str, str], kernel: str = "") -> "FolioSettings":
        """From ``machine.thp_settings()``'s words, as the recorder and the trace metadata keep them."""
        orders = {HPAGE_PMD_ORDER: "inherit"}
        for key, mode in thp.items():
            sized = re.fullmatch(r"hugepages-(\d+)kB/enabled", key)
            if sized:
                orders[order_of_size(int(sized.group(1)))] = mode
        return cls(thp.get("enabled", "never"), orders, str(thp.get("use_zero_page", "1")) != "0",
                   kernel_version(kernel))

    @classmethod
    def from_metadata(cls, metadata: dict) -> "FolioSettings":
        """A trace's settings: its ``thp`` words (absent: 4 KiB only), its ``kernel`` release and whether that
        kernel's COW-ahead has large destinations (``LARGE_DESTINATIONS_KEY``, absent: off)."""
        thp = metadata.get("thp")
        kernel = str(metadata.get("kernel", ""))
        settings = cls.from_thp(thp, kernel) if isinstance(thp, dict) else cls(kernel=kernel_version(kernel))
        return replace(settings, large_destinations=metadata.get(LARGE_DESTINATIONS_KEY) is True)

    def as_thp(self) -> dict[str, str]:
        """The inverse of ``from_thp``: the words a trace's metadata keeps."""
        words = {"enabled": self.enabled, "use_zero_page": "1" if self.use_zero_page else "0"}
        for order, mode in sorted(self.orders.items()):
            words[f"hugepages-{4 << order}kB/enabled"] = mode
        return words

    def anon_orders(self, hugepage: bool) -> list[int]:
        """__thp_vma_allowable_orders for an anonymous VMA at a fault, highest first: an order is allowed
        when its knob is ``always``, ``madvise`` in a VM_HUGEPAGE VMA, or ``inherit`` and the top-level
        knob allows it (``always``, or ``madvise`` in a VM_HUGEPAGE VMA)."""
        top = self.enabled == "always" or (self.enabled == "madvise" and hugepage)
        allowed = [order for order, mode in self.orders.items()
                   if mode == "always" or (mode == "madvise" and hugepage) or (mode == "inherit" and top)]
        return sorted(allowed, reverse=True)

    @property
    def large_folios_possible(self) -> bool:
        """Could any fault allocate a large folio under some VMA flag? (If not, 4 KiB pages only.)"""
        return bool(self.anon_orders(hugepage=True))

    @property
    def reuses_large_folios(self) -> bool:
        """COW reuse of PTE-mapped large anonymous folios, 1da190f4d0a6 (Linux 6.15, with CONFIG_MM_ID, as DESIGN.md
        dates it; not checked against a 6.15 tree). The version gates here rest on the commits' merge windows."""
        return self.kernel >= (6, 15)

    @property
    def reclaims_page_tables(self) -> bool:
        """MADV_DONTNEED frees a page table it empties whole (CONFIG_PT_RECLAIM, Linux 6.14; on in this host's
        config): a later fault there may map a PMD THP again."""
        return self.kernel >= (6, 14)

    @property
    def huge_zero_write_allocates(self) -> bool:
        """A write to the huge zero page allocates a THP (do_huge_zero_wp_pmd, Linux 6.13) instead of
        splitting the PMD and copying one 4 KiB page."""
        return self.kernel >= (6, 13)


@dataclass(eq=False)
class Folio:
    """A large folio's counts, as the kernel keeps them on the folio, not on its pages.

    ``refcount``: one reference per PTE and per PMD mapping it (folio_ref_count). ``large_mapcount``:
    PTE mappings plus PMD mappings, a PMD counting once (folio_large_mapcount). ``entire_mapcount``: PMD
    mappings. ``mm_slots``: CONFIG_MM_ID's two (mm, mappings) slots and ``maybe_shared``, the bit set once
    a second mm maps it and cleared when one slot holds every mapping again
    (folio_add/sub_return_large_mapcount); COW reuse of a PTE-mapped large folio reads them.
    """
    order: int
    frames: list = field(default_factory=list)   # the Frame of each page, in address order
    refcount: int = 0
    large_mapcount: int = 0
    entire_mapcount: int = 0
    mm_slots: list = field(default_factory=lambda: [[None, 0], [None, 0]])
    maybe_shared: bool = False

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    def add_mappings(self, mm: object, n: int) -> None:
        """n more mappings by ``mm`` (PTEs, or 1 for a PMD): refcount and large mapcount, per-mm slots."""
        self.refcount += n
        self.large_mapcount += n
        for slot in self.mm_slots:
            if slot[0] is mm:
                slot[1] += n
                return
        for i, slot in enumerate(self.mm_slots):
            if slot[0] is None:
                slot[0], slot[1] = mm, n
                if self.large_mapcount != n or i == 1:  # other mappings exist: maybe mapped shared
                    self.maybe_shared = True
                return
        self.maybe_shared = True  # a third mm: no slot, so no telling any more

    def remove_mappings(self, mm: object, n: int) -> None:
        self.refcount -= n
        self.large_mapcount -= n
        for slot in self.mm_slots:
            if slot[0] is mm:
                slot[1] -= n
                if slot[1] > 0:
                    return
                slot[0], slot[1] = None, 0
                break
        if any(slot[0] is not None and slot[1] == self.large_mapcount for slot in self.mm_slots) \
                or self.large_mapcount == 0:
            self.maybe_shared = False  # one mm holds every mapping: exclusively mapped again

    def exclusive_to(self, mm: object) -> bool:
        """__wp_can_reuse_large_anon_folio (6.15+): more than one page mapped, not maybe mapped shared, and
        every reference a mapping (so all of them in this mm)."""
        if self.large_mapcount <= 1:
            return False  # a single page left: copy it and let the large folio go
        if self.maybe_shared or self.large_mapcount != self.refcount:
            return False
        return any(slot[0] is mm for slot in self.mm_slots)
