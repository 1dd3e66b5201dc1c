"""COW-ahead policies: one file each, collected here into the registry.

Every module of this package that defines ``POLICY`` (a ``Policy`` class)
is a policy; its class owns its syntax, parser, name, engine parameters,
default-list entries and documentation. Adding a policy is adding a file
(and its compiled window in engine/windows.py, and its tests).
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import CowaheadError
from .adaptive import AdaptivePolicy
from .around import AroundPolicy
from .base import DEFAULT_LISTS, MAX_WINDOW, Policy
from .ccow import CcowPolicy
from .fixed import FixedPolicy
from .none import NonePolicy
from .oracle import OraclePolicy


def _discover() -> dict[str, type[Policy]]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        policy = getattr(module, "POLICY", None)
        if policy is not None:
            found.append(policy)
    return {cls.family: cls for cls in sorted(found, key=lambda cls: (cls.position, cls.family))}


POLICIES: dict[str, type[Policy]] = _discover()
SYNTAX = ", ".join(cls.syntax for cls in POLICIES.values())


def parse_policy(text: str | Policy) -> Policy:
    """Build a policy from its string (a Policy is returned as it is); a bad string raises one clear
    CowaheadError."""
    if isinstance(text, Policy):
        return text
    name, _, args = text.strip().partition(":")
    cls = POLICIES.get(name.lower())
    if cls is None:
        raise CowaheadError(f"unknown policy '{text}'; policies are {SYNTAX}")
    return cls.parse(text.strip(), args)


def parse_policies(texts) -> list[Policy]:
    """Each string parsed once; the specs travel on from here."""
    return [parse_policy(text) for text in texts]


def default_policies(which: str) -> list[str]:
    """A default list (``DEFAULT_LISTS``): every policy's entries there, in registry order."""
    if which not in DEFAULT_LISTS:
        raise ValueError(f"no default list {which!r}")
    return [entry for cls in POLICIES.values() for entry in cls.defaults.get(which, ())]


def colours() -> dict[str, str]:
    """Family -> plot colour, for the families that are drawn."""
    return {family: cls.colour for family, cls in POLICIES.items() if cls.colour}


def family_of(name: str) -> str:
    """The family of a policy string: ``fixed:16`` → ``fixed``."""
    return name.partition(":")[0]


def realizable(family: str) -> bool:
    """Can a kernel run it (False for the oracle, which sees the future)? Unknown families count as realizable."""
    cls = POLICIES.get(family)
    return cls.realizable if cls else True


def markdown_table() -> str:
    """The README's policy table, from the policy files."""
    lines = ["| string | what it does | anchor |", "| --- | --- | --- |"]
    lines += [f"| `{cls.syntax}` | {cls.summary} | {cls.anchor} |" for cls in POLICIES.values()]
    return "\n".join(lines)


__all__ = ["Policy", "POLICIES", "parse_policy", "parse_policies", "default_policies", "colours",
           "family_of", "realizable", "markdown_table", "SYNTAX", "MAX_WINDOW", "NonePolicy", "FixedPolicy",
           "AroundPolicy", "AdaptivePolicy", "CcowPolicy", "OraclePolicy"]
