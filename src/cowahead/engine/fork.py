"""fork: ``dup_mmap`` of the model, with the policy's look at the parent first."""

from __future__ import annotations

import numpy as np

from .layout import (B_USERS, HIT, MAPPED, PENDING, PRESENT, SHARED_ANON, S_FORKED, S_VMA_HEAD, V_ANON,
                     V_BACKING, V_DHI, V_DLO, V_END, V_KIND, V_NEXT, V_START, WRITABLE, ZAP_AHEAD, ZERO_FRAME,
                     frame_of, jit)
from .mm import do_exit, far_state, mm_of, settle_ahead, vma_new
from .prefetch import prefetch_item
from .windows import on_fork


@jit
def copy_pte_range(st, sp, sc, dlo, dhi):
    """Private pages become shared and write-protected in both; ahead states end."""
    ptes = st.ptes
    far = far_state(st)
    up, uc = np.uintp(sp), np.uintp(sc)
    for d in range(dlo, dhi):
        e = np.uintp(d)
        if far and d + ZAP_AHEAD < dhi:
            prefetch_item(st.frames, frame_of(ptes[up, np.uintp(d + ZAP_AHEAD)]))
        pte = ptes[up, e]
        if pte & PRESENT:
            settle_ahead(st, sp, d)
            shared = pte & ~(WRITABLE | PENDING | HIT)
            ptes[up, e] = shared
            ptes[uc, e] = shared
            f = frame_of(pte)
            if f != ZERO_FRAME:
                st.frames[np.uintp(f)] += MAPPED


@jit
def do_fork(st, parent, child):
    """dup_mmap: copy VMAs; private pages become shared and write-protected."""
    sp = mm_of(st, parent)
    if child == parent:
        # The model exits the pid and leaves it a fresh, empty address space.
        do_exit(st, child)
        mm_of(st, child)
        return
    if st.slot_of[child] >= 0:
        do_exit(st, child)  # the pid was reused without an exit event
    on_fork(st, sp)
    st.slots[sp, S_FORKED] = 1
    sc = mm_of(st, child)
    vm = st.vmas
    v = st.slots[sp, S_VMA_HEAD]
    while v >= 0:
        b = vm[v, V_BACKING]
        if b >= 0:
            st.backings[b, B_USERS] += 1
        c = vma_new(st, sc, vm[v, V_START], vm[v, V_END], vm[v, V_KIND], b, vm[v, V_ANON], -1)
        if vm[v, V_KIND] != SHARED_ANON and vm[v, V_ANON]:
            copy_pte_range(st, sp, sc, vm[c, V_DLO], vm[c, V_DHI])
        v = vm[v, V_NEXT]
