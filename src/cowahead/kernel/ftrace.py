"""Where a COW fault's instructions go: ftrace's function_graph in the guest, under -icount shift=0.

``python -m cowahead.kernel.ftrace [--window N --policy P --depth D]`` boots the built kernel once
per setting, traces ``handle_mm_fault`` and what it calls down to ``--depth`` levels while
``cow_workload`` runs the sequential pattern, and prints instructions per COW-broken page per call
path, for the workload's child only. Under icount the trace clock counts instructions, so a
function's duration is the instructions it ran, *including the tracer's own entry/exit code for
every traced function below it*: the overhead per traced call is measured (traced minus untraced
child instructions over traced calls) and reported, and every figure is inclusive of it. Read the
figures as shares and differences between settings, not as exact costs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from .guestprogs import compile_programs
from .kbuild import DEFAULT_BUILD_DIR, built_kernel
from .validate import DEFAULT_PAGES, workload_streams
from .vm import run_in_guest

ROOT = "handle_mm_fault"
LINE = re.compile(r"^\s*\d+\)\s+(?P<proc>\S+)\s+\|\s*(?:[+!#*@$]\s*)?(?P<dur>[\d.]+ us)?\s*\|\s(?P<body>.*)$")
# One workload run per group. Within each, only the root and the group's functions are traced, and no
# group function calls another, so each one's duration is its own instructions plus the tracer's
# in-bracket overhead once (calibrated on _raw_spin_unlock, a handful of instructions).
GROUPS = {
    "fault": ["do_wp_page"],
    "wp": ["wp_page_copy", "cow_ahead"],
    "ahead": ["cow_ahead_collect", "cow_ahead_prepare", "cow_ahead_install"],
    "alloc": ["vma_alloc_folio"],
    "copy": ["copy_mc_to_kernel"],
    "clear": ["ptep_clear_flush"],
    "install": ["flush_tlb_mm_range", "page_add_new_anon_rmap", "lru_cache_add_inactive_or_unevictable",
                "page_remove_rmap", "free_swap_cache", "vm_normal_page", "lru_add_drain"],
    "small": ["__cond_resched", "_raw_spin_lock", "_raw_spin_unlock"],
}
CALIBRATE = "_raw_spin_unlock"


def guest_script(workload: list[str], policy: str, window: int, root: str = ROOT) -> str:
    t = "/sys/kernel/tracing"
    w = " ".join(workload)
    lines = [
        f"mountpoint -q {t} || mount -t tracefs nodev {t}",
        f"echo {policy} > /proc/sys/vm/cow_ahead_policy", f"echo {window} > /proc/sys/vm/cow_ahead_pages",
        f"echo UNTRACED; {w}",  # the same run with the tracer off: what tracing adds
        f"echo 0 > {t}/tracing_on", f"echo 65536 > {t}/buffer_size_kb",
        f"echo {root} > {t}/set_graph_function",
    ]
    for name, funcs in {"root": [], **GROUPS}.items():
        lines += [f"echo nop > {t}/current_tracer", f"echo {root} > {t}/set_ftrace_filter"]
        lines += [f"echo {f} >> {t}/set_ftrace_filter 2>/dev/null || echo MISSING {f}" for f in funcs]
        lines += [f"echo function_graph > {t}/current_tracer",  # its options exist only while it is current
                  f"echo funcgraph-proc > {t}/trace_options", f"echo funcgraph-tail > {t}/trace_options",
                  f"echo nofuncgraph-irqs > {t}/trace_options",
                  f"echo > {t}/trace", f"echo 1 > {t}/tracing_on",
                  f"echo GROUP {name}", w, f"echo 0 > {t}/tracing_on",
                  f"echo OVERRUN $(grep -h overrun {t}/per_cpu/cpu*/stats | tr -d ' ' | tr '\\n' ' ')",
                  "echo TRACE", f"cat {t}/trace", "echo ENDTRACE"]
    return "\n".join(lines)


def parse(trace: str) -> dict[str, dict[str, list[float]]]:
    """process → function → [calls, total instructions, smallest, traced calls nested below it]."""
    out: dict[str, dict[str, list[float]]] = defaultdict(dict)
    stacks: dict[str, list[list]] = defaultdict(list)

    def add(proc, name, dur, nested):
        item = out[proc].setdefault(name, [0, 0.0, float("inf"), 0])
        item[0] += 1
        item[1] += dur
        item[2] = min(item[2], dur)
        item[3] += nested

    for line in trace.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        proc, body = m["proc"], m["body"].strip()
        dur = float(m["dur"].split()[0]) * 1000 if m["dur"] else None  # us → ns = instructions
        stack = stacks[proc]
        if body.endswith("{"):
            for frame in stack:
                frame[1] += 1
            stack.append([body[:-1].strip().rstrip("()").strip(), 0])
        elif body.startswith("}"):
            name, nested = stack.pop() if stack else (body.split("/*")[-1].strip(" */"), 0)
            if dur is not None:
                add(proc, name, dur, nested)
        elif body.endswith(";") and dur is not None:
            for frame in stack:
                frame[1] += 1
            add(proc, body[:-1].strip().rstrip("()").strip(), dur, 0)
    return out


def child_of(per_proc: dict) -> str | None:
    """The workload's child: the cow_workload process with the highest pid (forked after the parent)."""
    procs = [p for p in per_proc if p.startswith("cow_wor")]
    return max(procs, key=lambda p: int(p.rsplit("-", 1)[1])) if procs else None


def breakdown(kernel: Path, policy: str, window: int, pages: int = DEFAULT_PAGES, work: Path | None = None) -> dict:
    work = Path(work or tempfile.mkdtemp(prefix="cowahead-ftrace-"))
    programs = compile_programs(work / "bin")
    _, stream, _ = workload_streams("sequential", pages, 0)
    (work / "stream.txt").write_text("\n".join(map(str, stream)) + "\n")
    workload = [str(programs["cow_workload"]), str(pages), str(work / "stream.txt")]
    script = work / "trace.sh"  # a file: vng passes the command on the kernel command line, which is short
    script.write_text(guest_script(workload, policy, window) + "\n")
    result = run_in_guest(kernel, ["sh", str(script)], icount=True, memory="2G")
    text = result.stdout
    if "ENDTRACE" not in text:
        raise RuntimeError(f"guest run failed ({result.returncode}): {text[-1500:]} {result.stderr[-1500:]}")
    untraced = json.loads(text.split("UNTRACED\n", 1)[1].split("\n")[0])
    broken = sum(untraced["during"][k] for k in ("cow_fault_copy", "cow_ahead_copy", "cow_ahead_reuse"))
    groups = {}
    for chunk in text.split("GROUP ")[1:]:
        name, rest = chunk.split("\n", 1)
        traced = json.loads(rest.split("\n", 1)[0])
        overrun = rest.split("OVERRUN", 1)[1].split("\n")[0].strip()
        per_proc = parse(rest.split("\nTRACE\n", 1)[1].split("ENDTRACE")[0])
        child = child_of(per_proc)
        funcs = per_proc.get(child, {})
        groups[name] = {"child_process": child, "ring_buffer_overrun": overrun,
                        "child_instructions_traced": traced["child_ns"],
                        "functions": {f: {"calls": int(v[0]), "measured_total": round(v[1]),
                                          "measured_min": round(v[2], 1), "nested_traced_calls": int(v[3])}
                                      for f, v in funcs.items()}}
    mins = [g["functions"][CALIBRATE]["measured_min"] for g in groups.values() if CALIBRATE in g["functions"]]
    inner = min(mins) if mins else 0.0
    table = {}
    for gname, g in groups.items():
        for f, v in g["functions"].items():
            if f == ROOT and gname != "root":
                continue  # its duration holds the traced functions below it
            if f != ROOT and v["nested_traced_calls"]:
                continue  # holds another traced function's overhead: not comparable
            table[f] = {"group": gname, "calls_per_page": round(v["calls"] / broken, 3),
                        "instructions_per_page": round((v["measured_total"] - v["calls"] * inner) / broken, 1)}
    missing = sorted({line.split()[1] for line in text.splitlines() if line.startswith("MISSING ")})
    return {"policy": policy, "window": window, "pages": pages, "cow_broken_pages": broken,
            "faults": untraced["during"]["pgfault"],
            "kernel_instructions_per_page_untraced": round((untraced["child_ns"] - untraced["rewrite_ns"]) / broken, 1),
            "tracer_inner_overhead_per_call": inner, "not_traceable": missing,
            "per_page": table, "groups": groups,
            "guest_returncode": result.returncode, "stderr_tail": result.stderr[-1500:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    ap.add_argument("--policy", default="fixed")
    ap.add_argument("--window", type=int, action="append", help="repeatable; default 0 and 16")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    kernel = built_kernel(args.build_dir)
    if kernel is None:
        print(f"no built kernel in {args.build_dir}", file=sys.stderr)
        return 1
    doc = {"kernel_image": str(kernel), "icount": "shift=0", "root": ROOT, "groups": GROUPS,
           "settings": [breakdown(kernel, args.policy, w) for w in (args.window or [0, 16])]}
    text = json.dumps(doc, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
