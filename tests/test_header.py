"""One header for every document: traces, results, validation runs, calibrations, kernel checks."""

from __future__ import annotations

import pytest

from cowahead.errors import CowaheadError
from cowahead.results.document import new_results
from cowahead.results.header import HISTORY, check_header, current_version, header
from cowahead.trace import TraceFile, write_trace
from cowahead.trace.generators import generate
from cowahead.trace.parquet import base_metadata


@pytest.mark.parametrize("kind", list(HISTORY))
def test_every_kind_gets_the_same_fields(kind):
    doc = header(kind)
    assert set(doc) == {"format", "version", "created", "command", "machine", "versions"}
    assert doc["format"] == f"cowahead-{kind}" and doc["version"] == max(HISTORY[kind])
    assert {"kernel", "cpu", "thp"} <= set(doc["machine"]) and doc["versions"]["cowahead"]
    check_header(doc, kind, "here")  # a document reads back as what it is


def test_the_producers_use_it(tmp_path):
    assert header("results").keys() <= new_results({}).keys()
    assert header("trace").keys() <= base_metadata("test").keys()
    write_trace(generate("sequential", 8), tmp_path / "t.parquet")
    written = TraceFile(tmp_path / "t.parquet").metadata
    assert written["format"] == "cowahead-trace" and written["machine"]["kernel"] and written["versions"]["numpy"]


def test_a_foreign_or_old_document_is_one_line_naming_what_changed():
    with pytest.raises(CowaheadError, match="not a cowahead results file"):
        check_header({"format": "cowahead-trace", "version": 1}, "results", "x.json")
    with pytest.raises(CowaheadError, match="not a cowahead results file"):
        check_header(["not", "a", "dict"], "results", "x.json")
    old = {"format": "cowahead-validate", "version": 1}
    with pytest.raises(CowaheadError) as error:
        check_header(old, "validate", "v.json")
    message = str(error.value)
    assert "\n" not in message and "version 1" in message and HISTORY["validate"][1] in message
    assert f"reads version {current_version('validate')}" in message
