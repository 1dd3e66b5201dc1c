"""The engine's layout: how the reference model's state is laid out in numpy arrays.

The compiled engine is the one sanctioned duplicate of the reference model
(model/kernel.py). Its modules follow the model's seams: this layout; ``mm``
(frames, large folios' counts, VMAs, backing objects, address spaces);
``huge_memory`` (the PMD paths and the folio a fault allocates, as
model/huge_memory.py); ``mmap`` (mmap, munmap, madvise, exit, exec); ``cow``
(breaking COW on a range of pages); ``windows`` (one compiled window per
policy file, and the dispatch); ``fork``; ``fault`` (the fault path);
``replay`` (the event loop).
Every function mirrors one in the model, under the same name, and must count
exactly what it counts; tests/test_engine.py holds the two equal. Differences
are only of representation:

* pages are *dense indices* into the trace's page space (``page_space``):
  only pages a read or write touches (and, where large folios may be, the
  rest of their 2 MiB) can ever be present, so PTEs live in
  ``ptes[slot, d]``: one uint32 each, the frame index above FRAME_SHIFT and
  the flags below, so a fault finds its flags and its frame in one cache line;
* an address space is a *slot* (reused after exit); VMAs, backing objects
  (shmem, page cache), frames and policy states live in pools with free
  lists. Splitting a VMA edits it in place: counters never depend on which
  VMA object survives;
* every frame is mapped at one page only (fork maps at the same address, a
  backing object's offset is fixed to its first mapping), so a backing
  object's frames are a segment indexed by dense page.

Large folios are possible in a trace whose folio settings or MADV_COLLAPSE
can make one (prepass.large_folios_possible); only then (``State.large``)
does a fault leave the 4 KiB path for ``fault.handle_mm_fault_large`` (PMD
THP, the huge zero page, mTHP, folio-aware reuse and copies; huge_memory.py),
and only then does the page space hold whole 2 MiB blocks: a THP or mTHP
maps pages the trace never names, a split PMD leaves 512 PTEs a window may
copy ahead, and each must have its PTE. A folio is one frame, its *head*,
whatever its size: every PTE of the folio holds the head's index,
``frame_kind`` is LARGE, the folio's own counts (model/folio.py's refcount,
entire mapcount, CONFIG_MM_ID slots) sit in ``folios[head]`` (F_*), and it
counts 2**order resident pages from its allocation to its free. No count of
the model reads a folio page's own map count, and contents are not
modelled, so one frame stands for them all. A PMD mapping keeps its 512
PTEs filled in too (the head, the PMD's protection), so that the hot loop's
reads and writes through it need no test of their own and a split writes no
PTE; which 2 MiB of an address space a PMD maps, and which have a page
table, is ``pmds[slot, block]`` (BLK_*), the block of dense page d being
d >> 9 in both kinds of page space.

A pool that might overflow during an event is checked before the event;
``replay_chunk`` then stops and returns the event's index so the caller can
grow the pools (state.py) and call again from there.

The kinds and counter positions below come from the model's own enums and
fields, so that they cannot drift from them; numba freezes them into the
compiled code as constants (engine/cache.py keys the cache on those files too).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..model.counters import FIELD_NAMES
from ..model.memory import FrameKind
from ..trace.events import HPAGE_PMD_ORDER, PAGE_SHIFT, Advice, EventKind, VmaKind
from . import cache  # noqa: F401  (before any @jit: keys numba's cache on all engine sources)

# Event kinds and VMA kinds.
MMAP, MUNMAP, DONTNEED = int(EventKind.MMAP), int(EventKind.MUNMAP), int(EventKind.DONTNEED)
READ, WRITE = int(EventKind.READ), int(EventKind.WRITE)
FORK, EXEC, EXIT = int(EventKind.FORK), int(EventKind.EXEC), int(EventKind.EXIT)
MADVISE, THP_DISABLE = int(EventKind.MADVISE), int(EventKind.THP_DISABLE)
MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE = int(Advice.HUGEPAGE), int(Advice.NOHUGEPAGE), int(Advice.COLLAPSE)
PRIVATE_ANON, SHARED_ANON, PRIVATE_FILE = int(VmaKind.PRIVATE_ANON), int(VmaKind.SHARED_ANON), int(VmaKind.PRIVATE_FILE)

# Frame kinds; frame 0 is the shared zero page.
ANON, ZERO, FILE, SHMEM = int(FrameKind.ANON), int(FrameKind.ZERO), int(FrameKind.FILE), int(FrameKind.SHMEM)
# The engine's own kind: the head frame of a large folio, standing for all its pages (the model keeps a
# Frame per page, each pointing at its Folio). Its frame word is ONE_REF and stays so: never MAPPED, never
# 0, so no 4 KiB path reuses or frees it; the folio's counts are in ``folios``.
LARGE = max(int(k) for k in FrameKind) + 1
ZERO_FRAME = 0
# A frame's counts, the ones every fault reads, in one uint32: mappings in the low 16 bits, references
# in the high 16, so mapping or unmapping a frame is one add; the kind (read only to reuse) lies apart.
# A mapping is also a reference, so references >= mappings >= 0, and a frame is free when the word is 0.
# 4 bytes rather than 8 halve the frame memory a random fault reaches into. A/B in one sitting, random
# over 5M pages, medians of 3, events/s: touched state none 53–58M → 63–67M, fixed:16 44–50M → 55–57M;
# fresh state none 47–52M → 59M, fixed:16 42–44M → 52–53M.
ONE_MAP, ONE_REF = 1, 1 << 16
MAPPED = ONE_MAP + ONE_REF  # what mapping a frame adds
# Every frame but the zero page (never counted) is mapped at one page, so at most once per address
# space, and referenced by those mappings and at most one page cache or shmem object: its counts fit
# in 16 bits while no more address spaces than this live at once.
MAX_SLOTS = (1 << 16) - 2

# PTE flag bits. A PTE is a uint32: (frame << FRAME_SHIFT) | flags, as Linux keeps the pfn and the flags
# in one pte_t. PENDING and HIT are the model's Ahead states (its waste bookkeeping): what a kernel sees,
# and so what a policy may read, is "copied ahead" (PENDING | HIT) and DIRTY.
PRESENT, WRITABLE, DIRTY, PENDING, HIT = 1, 2, 4, 8, 16
FRAME_SHIFT = 5
FLAGS_MASK = (1 << FRAME_SHIFT) - 1
MAX_FRAMES = 1 << (32 - FRAME_SHIFT)  # 2^27 frames (512 GiB of 4 KiB pages) fit in a PTE

# Counters: positions of model/counters.py's fields (a renamed field fails here, at import).
_COUNTER = {name: i for i, name in enumerate(FIELD_NAMES)}
(C_EVENTS, C_ZERO_FILL, C_ZERO_PAGE, C_MAP, C_COW_COPY, C_REUSE, C_OUTSIDE_VMA, C_AHEAD_COPIES,
 C_AHEAD_REUSES, C_AHEAD_BATCHES, C_AHEAD_HITS, C_AHEAD_WASTE, C_EXTRA_PAGES, C_EXTRA_PAGES_PEAK,
 C_EXTRA_PAGES_FINAL, C_RESIDENT, C_RESIDENT_PEAK) = (_COUNTER[name] for name in (
    "events", "zero_fill", "zero_page", "map", "cow_copy", "reuse", "outside_vma", "ahead_copies",
    "ahead_reuses", "ahead_batches", "ahead_hits", "ahead_waste", "extra_pages", "extra_pages_peak",
    "extra_pages_final", "resident", "resident_peak"))
C_ZERO_FILL_PAGES, C_COW_COPY_PAGES, C_REUSE_PAGES = (_COUNTER[name] for name in (
    "zero_fill_pages", "cow_copy_pages", "reuse_pages"))
C_THP_FAULT_ALLOC, C_MTHP_FAULT_ALLOC, C_HUGE_ZERO_PAGE, C_THP_SPLIT_PMD, C_THP_COLLAPSE_ALLOC = (
    _COUNTER[name] for name in ("thp_fault_alloc", "mthp_fault_alloc", "huge_zero_page", "thp_split_pmd",
                                "thp_collapse_alloc"))
C_COW_LARGE_ALLOC, C_COW_LARGE_PAGES = (_COUNTER[name] for name in ("cow_large_alloc", "cow_large_pages"))
N_COUNTERS = len(FIELD_NAMES)

# The policy's fields (state.policy): its engine kind (windows.py's POL_*), window pages (N, MAX, ccow's
# region), threshold pages (ccow), and log2 of the window where it is a power of two, else -1.
PP_KIND, PP_WINDOW, PP_THRESHOLD, PP_SHIFT = range(4)
N_POLICY_FIELDS = 4

# Slot (address space) fields; S_THP_DISABLED: prctl(PR_SET_THP_DISABLE), kept across fork and exec.
S_VMA_HEAD, S_VMA_CACHE, S_FORKED, S_NVMAS, S_THP_DISABLED = range(5)
N_SLOT_FIELDS = 5

# VMA fields: raw page range, dense range, kind, backing, anon_vma, policy state, list link, and
# V_HUGE: 0, VM_HUGEPAGE or VM_NOHUGEPAGE (madvise sets one and clears the other).
V_START, V_END, V_DLO, V_DHI, V_KIND, V_BACKING, V_ANON, V_PSTATE, V_NEXT, V_HUGE = range(10)
N_VMA_FIELDS = 10
VM_HUGEPAGE, VM_NOHUGEPAGE = 1, 2

# Large folios. HPAGE_PMD_NR pages in a 2 MiB block (one PMD, one page table): dense page d lies in
# block d >> HPAGE_PMD_ORDER when the page space holds whole blocks (State.large).
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
# pmds[slot, block]: a page table is installed (the model's Mm.page_tables), a PMD maps the block
# (Mm.pmds: a THP, or the huge zero page when its PTEs hold ZERO_FRAME). Never both.
BLK_TABLE, BLK_PMD = 1, 2
# folios[head, field], model/folio.py's Folio: order; refcount (= large_mapcount: the model takes no
# other references); entire_mapcount (PMD mappings); CONFIG_MM_ID's two slots (slot + 1 of the address
# space, 0 when free, and its mappings); maybe_shared.
F_ORDER, F_REF, F_ENTIRE, F_MM0, F_N0, F_MM1, F_N1, F_SHARED = range(8)
N_FOLIO_FIELDS = 8
# state.thp: the folio settings (model/folio.py FolioSettings): the orders a fault may allocate as bit
# masks (bit k: order k) outside and inside a VM_HUGEPAGE VMA, use_zero_page, and the rules that differ
# by kernel version (reuses_large_folios, huge_zero_write_allocates, reclaims_page_tables), and whether
# COW-ahead copies into large destination folios (large_destinations).
(TH_ORDERS, TH_ORDERS_HUGEPAGE, TH_ZERO_PAGE, TH_REUSE_LARGE, TH_ZERO_WRITE_ALLOC, TH_RECLAIM_PT,
 TH_LARGE_DEST) = range(7)
N_THP = 7

# Backing object fields: users, dense range of its first mapping, frame segment.
B_USERS, B_DLO, B_DHI, B_SEG = range(4)
N_BACKING_FIELDS = 4

# Policy state fields (adaptive RampState and ccow Coverage share one pool).
P_REF, P_NEXT_EXPECTED, P_WINDOW, P_MISS, P_LAST_DLO, P_LAST_DHI, P_SEG, P_RLO, P_RLEN, P_ROLLED = range(10)
N_PSTATE_FIELDS = 10

# Scalars: free-stack tops, bump pointers, live counts, what the caller must grow.
(SC_FRAMES_FREE, SC_VMAS_FREE, SC_BACKINGS_FREE, SC_PSTATES_FREE, SC_SLOTS_FREE, SC_BK_BUMP, SC_COV_BUMP,
 SC_BK_LIVE_FRAMES, SC_FORKS, SC_NEED_FRAMES, SC_NEED_VMAS, SC_NEED_BACKINGS, SC_NEED_BK_FRAMES,
 SC_NEED_PSTATES, SC_NEED_COV, SC_NEED_SLOTS, SC_FEW_FAULTS, SC_PREFETCH_MIN_BYTES, SC_LOG_LEN, SC_WITNESS) = range(20)
N_SCALARS = 20
# What the witness saw (SC_WITNESS bits; windows.witness_window): a COW fault where some adaptive:MAX could
# ramp, and one where some ccow:REGION could copy.
WITNESS_ADAPTIVE, WITNESS_CCOW = 1, 2

# Events ahead whose PTE and frame the replay loop prefetches (when pages jump about). A PTE 32 ahead
# rather than 16: hotcold none 61M → 65M events/s, random unchanged (touched state).
PTE_AHEAD, FRAME_AHEAD = 32, 8
# What the replay loop prefetches: nothing, PTEs only (a chunk after one where few events faulted),
# PTEs and the frames they map, or (an oracle whose future has a rank table) those and the future's
# entries its window reads first. Each mode prefetches what the one before it does, and more.
PREFETCH_NONE, PREFETCH_PTES, PREFETCH_PTES_AND_FRAMES, PREFETCH_WITH_FUTURE = 0, 1, 2, 3
# Events ahead whose next write of the page after the access's the oracle's stage prefetches (its
# rank entry PTE_AHEAD on, its pair's key and cursor FRAME_AHEAD on, then the write itself).
FUTURE_AHEAD = 4
NEAR_PAGES = 8  # an access this close to the last one is "in order": the hardware prefetcher follows it
ZAP_AHEAD = 32  # PTEs ahead whose frame fork's copy and exit's zap prefetch: each step is short
# Below this much PTE and frame memory the state stays in cache and prefetching is pure overhead.
# Measured on the 2-vCPU benchmark VM (random, none): without prefetching 52M vs 43M events/s over 50K
# pages (2.6 MB), 39M vs 37M over 200K (10 MB); with it 33M vs 28M over 500K (26 MB).
# new_state puts it in sc[SC_PREFETCH_MIN_BYTES], so that a test can set it to 0.
PREFETCH_MIN_STATE_BYTES = 16 << 20

# Compiled without numba's reference counting: every function takes the whole State tuple, and
# counting references to its arrays on each call cost ~1 µs per call. Nothing here allocates an
# array, so nothing needs counting. Without the GIL (nogil): a replay runs while a thread reads and
# decodes the next chunk (engine/__init__.py: one_ahead).
jit = njit(cache=True, _nrt=False, nogil=True)
jit_inline = njit(cache=True, _nrt=False, inline="always")

# ----- pools -------------------------------------------------------------------------


@jit_inline
def _pop(free, sc, top):
    sc[top] -= 1
    return free[sc[top]]


@jit_inline
def _push(free, sc, top, item):
    free[sc[top]] = item
    sc[top] += 1


# ----- PTEs -----------------------------------------------------------------------

# Hot paths index with np.uintp(...): numba then skips its fix-up of negative indices (none is).


@jit_inline
def pte_at(s, d):
    """The index of slot ``s``'s PTE for dense page ``d`` in ptes, unsigned (above)."""
    return np.uintp(s), np.uintp(d)


@jit_inline
def frame_of(pte):
    """The frame a PTE value maps (meaningful when PRESENT)."""
    return np.int64(pte >> FRAME_SHIFT)


@jit_inline
def set_flags(st, pte, flags):
    """Replace the flags of PTE ``pte`` (an index), keeping its frame."""
    st.ptes[pte] = (st.ptes[pte] & ~FLAGS_MASK) | flags


# ----- page space -----------------------------------------------------------------


@jit_inline
def page_range(address, length):
    """The pages [first, end) that ``length`` bytes at ``address`` touch: at least one."""
    a = np.int64(address)
    return a >> PAGE_SHIFT, ((a + max(np.int64(length), 1) - 1) >> PAGE_SHIFT) + 1


@jit
def dense_index(pages, direct_base, page):
    """First dense index whose page is >= ``page`` (searchsorted, or an offset when dense)."""
    n = pages.shape[0]
    if direct_base >= 0:
        d = page - direct_base
        return 0 if d < 0 else (n if d > n else d)
    return np.searchsorted(pages, page)
