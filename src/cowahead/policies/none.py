"""``none``: Linux today. One 4 KiB page per COW fault (mm/memory.c, do_wp_page)."""

from .base import Policy, WpFault


class NonePolicy(Policy):
    name = "none"

    def window(self, fault: WpFault) -> tuple[int, ...]:
        return ()
