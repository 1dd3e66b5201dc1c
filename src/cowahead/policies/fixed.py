"""``fixed:N``: the 2003 patch as intended.

"cow-ahead N pages for fault clustering" (linux-kernel, April 2003) looped
``handle_pte_fault`` over the pages after the faulting one inside
``handle_mm_fault``, stopping at ``vma->vm_end``. As posted the loop never
repeated (``i >= 0`` is always true); this is what it meant: after a COW
copy at page p, also break COW on p+1 … p+N−1, clipped to the VMA end only.
"""

from .base import Policy, WpFault


class FixedPolicy(Policy):
    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.name = f"fixed:{pages}"

    def window(self, fault: WpFault) -> range:
        return range(fault.page + 1, min(fault.page + self.pages, fault.vma.end))
