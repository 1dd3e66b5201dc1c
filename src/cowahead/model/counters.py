"""Counters one replay produces, named after the kernel paths they count."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class Counters:
    events: int = 0
    zero_fill: int = 0      # do_anonymous_page on write, or a new shmem page: a new zeroed frame
    zero_page: int = 0      # do_anonymous_page on read: the shared zero page is mapped
    map: int = 0            # an existing page-cache or shmem page is mapped (do_read_fault, do_shared_fault)
    cow_copy: int = 0       # wp_page_copy / do_cow_fault: a copy on demand
    reuse: int = 0          # wp_page_reuse: made writable without a copy (PGREUSE)
    outside_vma: int = 0    # accesses no VMA covers: counted, never replayed
    ahead_copies: int = 0   # pages COW-ahead copied
    ahead_reuses: int = 0   # exclusive pages COW-ahead made writable without a copy
    ahead_batches: int = 0  # COW faults whose window broke COW on at least one more page
    ahead_hits: int = 0     # ahead copies later written without a fault
    ahead_waste: int = 0    # ahead copies dropped (unmap, exec, exit, fork, end of trace) unwritten
    extra_pages: int = 0    # ahead copies now resident and unwritten: memory `none` would not use
    extra_pages_peak: int = 0
    extra_pages_final: int = 0
    resident: int = 0       # frames alive now (anon, shmem, file; not the zero page)
    resident_peak: int = 0
    # Faults and pages apart: one fault on a large folio zero-fills, copies or reuses many pages.
    zero_fill_pages: int = 0  # pages the zero_fill faults allocated (a PMD THP fault: 512)
    cow_copy_pages: int = 0   # pages the cow_copy faults copied
    reuse_pages: int = 0      # pages the reuse faults made writable (a whole PMD: 512)
    thp_fault_alloc: int = 0  # faults that mapped a new PMD THP (vmstat thp_fault_alloc)
    mthp_fault_alloc: int = 0  # faults that mapped a new PTE-mapped large folio (mTHP anon_fault_alloc)
    huge_zero_page: int = 0   # read faults that mapped the huge zero page by PMD
    thp_split_pmd: int = 0    # PMD mappings split into 512 PTEs (vmstat thp_split_pmd)
    thp_collapse_alloc: int = 0  # THPs MADV_COLLAPSE made of 4 KiB pages (vmstat thp_collapse_alloc)
    # Large destinations (model/large_destination.py): the folios a COW fault's copy allocated for aligned
    # blocks of shared pages, and the pages copied into them, the faulting page's included where its block
    # was one. Those pages are in cow_copy_pages (the faulting page) and ahead_copies (the rest) too.
    cow_large_alloc: int = 0
    cow_large_pages: int = 0

    @property
    def faults(self) -> int:
        return self.zero_fill + self.zero_page + self.map + self.cow_copy + self.reuse

    def as_dict(self) -> dict[str, int]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra_pages", "resident")}
        d["faults"] = self.faults
        return d


FIELD_NAMES = [f.name for f in fields(Counters)]

# COW faults by their batch: a 4 KiB COW copy on demand (wp_page_copy, do_cow_fault) and the pages its window
# then broke, as (ahead copies, ahead reuses) -> faults. A histogram, not a list: a fault's stall follows
# from its batch under a cost profile (results/stalls.py). A window of more pages counts in the last bin.
# Copies of 512 pages at one fault (thp-cow, a write to the huge zero page) have no window and are not in
# it: (cow_copy_pages - cow_copy) / 511 of them, from the counters.
BATCH_BINS = 1024


def batch_bin(pages: int) -> int:
    return min(pages, BATCH_BINS)


__all__ = ["Counters", "FIELD_NAMES", "BATCH_BINS", "asdict", "batch_bin"]
