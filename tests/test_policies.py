"""The policy registry: one file per policy owns its syntax, name, defaults and documentation."""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import pytest

import cowahead.policies as registry
from cowahead.errors import CowaheadError
from cowahead.policies import POLICIES, colours, default_policies, markdown_table, parse_policy, realizable
from cowahead.policies.base import DEFAULT_LISTS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_policy_file_is_registered_once_in_its_place():
    files = {info.name for info in pkgutil.iter_modules(registry.__path__)} - {"base"}
    assert {cls.__module__.rpartition(".")[2] for cls in POLICIES.values()} == files
    assert list(POLICIES)[0] == "none" and list(POLICIES)[-1] == "oracle"  # baseline first, the limit last


def test_the_readme_table_is_the_registrys():
    text = README.read_text()
    table = re.search(r"<!-- policies:[^>]*-->\n(.*?)\n<!-- /policies -->", text, re.S)
    assert table, "README.md lost its generated policy table markers"
    assert table.group(1) == markdown_table(), (
        "README's policy table differs from the policy files; regenerate it with "
        "python -c 'from cowahead.policies import markdown_table; print(markdown_table())'")


@pytest.mark.parametrize("which", DEFAULT_LISTS)
def test_default_lists_parse_and_start_with_the_baseline(which):
    from cowahead.sweep import expand_policies
    entries = default_policies(which)
    assert entries[0] == "none"
    assert len(expand_policies(entries)) >= len(entries)  # every entry (ranges too) is a valid policy


def test_the_lists_the_verbs_use_come_from_the_registry():
    from cowahead.cli import simulate  # noqa: F401  (its default list is built at import)
    from cowahead.real.validate import POLICIES as VALIDATED
    from cowahead.sweep import DEFAULT_POLICIES
    assert DEFAULT_POLICIES == default_policies("sweep")
    assert VALIDATED == default_policies("example")
    assert {"fixed:1..512", "around:1..512", "adaptive:1..512", "ccow:1..512", "oracle:1..512"} <= set(DEFAULT_POLICIES)


def test_names_are_canonical_and_a_spec_parses_to_itself():
    assert [parse_policy(t).name for t in ["NONE", " fixed:16", "ccow:512,0.7", "adaptive:32", "ccow:64,0.50"]] == \
        ["none", "fixed:16", "ccow", "adaptive", "ccow:64,0.5"]
    spec = parse_policy("around:16")
    assert parse_policy(spec) is spec and spec == parse_policy("around:16") and len({spec, parse_policy("around:16")}) == 1


@pytest.mark.parametrize("bad", ["none:3", "fixed", "fixed:0", "fixed:abc", "around:3", "ccow:512,2", "ccow:512,x",
                                 "adaptive:9999", "oracle:", "nonsense", ""])
def test_a_bad_string_is_one_clear_error(bad):
    with pytest.raises(CowaheadError) as error:
        parse_policy(bad)
    assert "\n" not in str(error.value) and (bad.strip() in str(error.value) or bad == "")


def test_only_the_oracle_is_unrealizable_and_every_drawn_family_has_its_colour():
    assert [family for family in POLICIES if not realizable(family)] == ["oracle"]
    drawn = colours()
    assert "none" not in drawn and len(set(drawn.values())) == len(drawn)
    assert set(drawn) == set(POLICIES) - {"none"}
