"""Traces: the event model, the Parquet file format, and the generators."""

from .events import PAGE_SHIFT, PAGE_SIZE, PTRS_PER_PTE, COLUMNS, Event, EventKind, VmaKind
from .parquet import TraceFile, read_trace, write_trace
from .trace import Trace

__all__ = ["PAGE_SHIFT", "PAGE_SIZE", "PTRS_PER_PTE", "COLUMNS", "Event", "EventKind", "VmaKind",
           "Trace", "TraceFile", "read_trace", "write_trace"]
