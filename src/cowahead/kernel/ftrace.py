"""Where a COW fault's instructions go: ftrace's function_graph in the guest, under -icount shift=0.

``python -m cowahead.kernel.ftrace [--source 6.12] [--pattern P] [--window N …] [--large-destinations]``
boots the built kernel once and, for every setting (pattern × window, with and without large
destinations), traces ``handle_mm_fault`` and chosen functions below it while ``cow_workload`` runs
the pattern (validate.workload: the same setup, streams and THP knobs as the page-for-page check),
and prints instructions per COW-broken page per function, for the workload's child only. Under
icount the trace clock counts instructions, so a function's duration is the instructions it ran,
*including the tracer's own entry/exit code for every traced function below it*: each group traces
functions none of which calls another, so each duration holds the tracer's in-bracket overhead once,
calibrated on ``_raw_spin_unlock`` (a handful of instructions) and subtracted. The untraced run of
the same setting gives the real total; ``account`` splits it into steps (issue 23): the trap (what
is outside handle_mm_fault), allocation, charge, the copy, rmap/LRU, the TLB flush, and the rest
(page-table walk, PTE lock and set, checks: inlined code no function boundary separates), with
``overhead`` = everything but the copy.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from .check import metadata
from .guestprogs import compile_programs
from .kbuild import SOURCES, built_kernel, image_key
from .validate import DEFAULT_PAGES, KHUGEPAGED_SLEEP_MS, THP_CONFIGS, workload, workload_argv
from .vm import SYSCTL_LARGE, run_in_guest

ROOT = "handle_mm_fault"
LINE = re.compile(r"^\s*\d+\)\s+(?P<proc>\S+)\s+\|\s*(?:[+!#*@$]\s*)?(?P<dur>[\d.]+ us)?\s*\|\s(?P<body>.*)$")
# One workload run per group. Within each, only the root and the group's functions are traced, and no
# group function calls another, so each one's duration is its own instructions plus the tracer's
# in-bracket overhead once (calibrated on _raw_spin_unlock, a handful of instructions).
GROUPS = {
    "6.1": {
        "fault": ["do_wp_page"],
        "wp": ["wp_page_copy", "cow_ahead"],
        "ahead": ["cow_ahead_collect", "cow_ahead_prepare", "cow_ahead_install"],
        "alloc": ["vma_alloc_folio"],
        "copy": ["copy_mc_to_kernel"],
        "clear": ["ptep_clear_flush"],
        "install": ["flush_tlb_mm_range", "page_add_new_anon_rmap", "lru_cache_add_inactive_or_unevictable",
                    "page_remove_rmap", "free_swap_cache", "vm_normal_page", "lru_add_drain"],
        "small": ["__cond_resched", "_raw_spin_lock", "_raw_spin_unlock"],
    },
    # 6.12: the patch's noinline steps; allocation under memory-allocation profiling is *_noprof.
    "6.12": {
        "fault": ["do_wp_page"],
        "wp": ["wp_page_copy"],
        "ahead": ["cow_ahead_plan", "cow_ahead_fault_block", "cow_ahead_run"],
        "alloc": ["vma_alloc_folio_noprof"],
        "charge": ["__mem_cgroup_charge"],
        "copy": ["copy_mc_to_kernel"],
        "clear": ["ptep_clear_flush"],
        "install": ["flush_tlb_mm_range", "folio_add_new_anon_rmap", "folio_add_lru_vma",
                    "folio_remove_rmap_ptes", "free_swap_cache", "vm_normal_page"],
        "small": ["__cond_resched", "_raw_spin_lock", "_raw_spin_unlock"],
    },
}
CALIBRATE = "_raw_spin_unlock"
# Issue 23's steps: function(s) whose per-page instructions make each one. The flush counts every
# flush_tlb_mm_range, the one inside the fault's ptep_clear_flush too; "rest" is handle_mm_fault
# less the named steps, "trap" the untraced total less handle_mm_fault.
STEPS = {"alloc": ["vma_alloc_folio_noprof", "vma_alloc_folio"], "charge": ["__mem_cgroup_charge"],
         "copy": ["copy_mc_to_kernel"],
         "rmap_lru": ["folio_add_new_anon_rmap", "folio_add_lru_vma", "folio_remove_rmap_ptes",
                      "page_add_new_anon_rmap", "lru_cache_add_inactive_or_unevictable", "page_remove_rmap",
                      "free_swap_cache"],
         "flush": ["flush_tlb_mm_range"]}
THP = "/sys/kernel/mm/transparent_hugepage"


def tracer_lines(workload_cmd: str, groups: dict[str, list[str]], root: str = ROOT) -> list[str]:
    """One traced run of the workload per group, each printing GROUP, its report, OVERRUN and the trace."""
    t = "/sys/kernel/tracing"
    lines = [f"echo 0 > {t}/tracing_on", f"echo 65536 > {t}/buffer_size_kb", f"echo {root} > {t}/set_graph_function"]
    for name, funcs in {"root": [], **groups}.items():
        lines += [f"echo nop > {t}/current_tracer", f"echo {root} > {t}/set_ftrace_filter"]
        lines += [f"echo {f} >> {t}/set_ftrace_filter 2>/dev/null || echo MISSING {f}" for f in funcs]
        lines += [f"echo function_graph > {t}/current_tracer",  # its options exist only while it is current
                  f"echo funcgraph-proc > {t}/trace_options", f"echo funcgraph-tail > {t}/trace_options",
                  f"echo nofuncgraph-irqs > {t}/trace_options",
                  f"echo > {t}/trace", f"echo 1 > {t}/tracing_on",
                  f"echo GROUP {name}", workload_cmd, f"echo 0 > {t}/tracing_on",
                  f"echo OVERRUN $(grep -h overrun {t}/per_cpu/cpu*/stats | tr -d ' ' | tr '\\n' ' ')",
                  "echo TRACE", f"cat {t}/trace", "echo ENDTRACE"]
    return lines + [f"echo nop > {t}/current_tracer"]


def setting_lines(setting: dict, workload_cmd: str, groups: dict[str, list[str]]) -> list[str]:
    """Knobs for one setting, its untraced run, then the traced runs; knobs back to off after."""
    lines = [f"echo SETTING {setting['index']}"]  # the setting itself stays on the host (no shell quoting)
    lines += [f"echo {value} > {THP}/{key}" for key, value in setting["thp"].items()]
    if setting["large_destinations"]:
        lines.append(f"echo 1 > {SYSCTL_LARGE}")
    lines += [f"echo {setting['policy']} > /proc/sys/vm/cow_ahead_policy",
              f"echo {setting['window']} > /proc/sys/vm/cow_ahead_pages",
              "echo UNTRACED", workload_cmd, "echo ENDUNTRACED"]  # what tracing adds is measured against it
    lines += tracer_lines(workload_cmd, groups)
    lines += ["echo 0 > /proc/sys/vm/cow_ahead_pages"]
    if setting["large_destinations"]:
        lines.append(f"echo 0 > {SYSCTL_LARGE}")
    return lines


COPY_LOOP_ITERATIONS = 2000


def guest_script(settings: list[tuple[dict, str]], groups: dict[str, list[str]], copy_loop: str | None = None) -> str:
    t = "/sys/kernel/tracing"
    lines = [f"mountpoint -q {t} || mount -t tracefs nodev {t}",
             f"echo {KHUGEPAGED_SLEEP_MS} > {THP}/khugepaged/scan_sleep_millisecs"]  # no collapse mid-run
    if copy_loop:  # the copy alone (guest/copy_loop.c), untraced, before any setting
        lines += ["echo COPYLOOP", f"{copy_loop} {COPY_LOOP_ITERATIONS}", "echo ENDCOPYLOOP"]
    for setting, workload_cmd in settings:
        lines += setting_lines(setting, workload_cmd, groups)
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


def thp_knobs(config: str) -> dict[str, str]:
    """The configuration's knobs, every mTHP size any configuration sets included (never if it does not
    say), so that a setting never inherits the one before it."""
    keys = {key for knobs in THP_CONFIGS.values() for key in knobs}
    return {key: THP_CONFIGS[config].get(key, "never") for key in sorted(keys)}


def workload_command(work: Path, programs: dict[str, Path], pattern: str, pages: int) -> tuple[str, dict]:
    """``cow_workload -s`` for the pattern, as validate.make_plan runs it; and its THP configuration."""
    w = workload(pattern, pages, 0)
    return " ".join(workload_argv(work, programs, w)), {"thp_config": w.config, "thp": thp_knobs(w.config),
                            "large_destinations": int(w.large_destinations), "pages_written": len(set(w.child))}


def report_line(text: str) -> dict:
    """The workload's JSON report: its last line that starts with '{'."""
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def parse_setting(chunk: str, setting: dict, copy_loop: float | None = None) -> dict:
    """One setting's output (after its SETTING line): the untraced report, then each group's report and trace."""
    untraced = report_line(chunk.split("UNTRACED\n", 1)[1].split("ENDUNTRACED")[0])
    during = untraced["during"]
    broken = sum(during[k] for k in ("cow_fault_copy", "cow_ahead_copy", "cow_ahead_reuse"))
    out_groups = {}
    for part in chunk.split("GROUP ")[1:]:
        name, rest = part.split("\n", 1)
        before, trace = rest.split("\nTRACE\n", 1)
        traced = report_line(before.split("OVERRUN", 1)[0])
        per_proc = parse(trace.split("ENDTRACE")[0])
        child = child_of(per_proc)
        funcs = per_proc.get(child, {})
        out_groups[name] = {"child_process": child, "ring_buffer_overrun": before.split("OVERRUN", 1)[1].split("\n")[0].strip(),
                            "child_instructions_traced": traced["child_ns"],
                            "functions": {f: {"calls": int(v[0]), "measured_total": round(v[1]),
                                              "measured_min": round(v[2], 1), "nested_traced_calls": int(v[3])}
                                          for f, v in funcs.items()}}
    mins = [g["functions"][CALIBRATE]["measured_min"] for g in out_groups.values() if CALIBRATE in g["functions"]]
    inner = min(mins) if mins else 0.0
    table = {}
    for gname, g in out_groups.items():
        for f, v in g["functions"].items():
            if f == ROOT and gname != "root":
                continue  # its duration holds the traced functions below it
            if f != ROOT and v["nested_traced_calls"]:
                continue  # holds another traced function's overhead: not comparable
            table[f] = {"group": gname, "calls_per_page": round(v["calls"] / broken, 3),
                        "instructions_per_page": round((v["measured_total"] - v["calls"] * inner) / broken, 1)}
    missing = sorted({line.split()[1] for line in chunk.splitlines() if line.startswith("MISSING ")})
    total = (untraced["child_ns"] - untraced["rewrite_ns"]) / broken
    return {**setting, "cow_broken_pages": broken, "faults": during["pgfault"],
            "cow_fault_copy": during["cow_fault_copy"], "cow_ahead_copy": during["cow_ahead_copy"],
            "cow_large_alloc": during.get("cow_large_alloc"),
            "kernel_instructions_per_page_untraced": round(total, 1),
            "tracer_inner_overhead_per_call": inner, "not_traceable": missing,
            "per_page": table, "groups": out_groups,
            "account": account(total, table, (during["cow_fault_copy"] + during["cow_ahead_copy"]) / broken, copy_loop)}


def account(total: float, table: dict, copies_per_page: float = 1.0, copy_loop: float | None = None) -> dict:
    """Issue 23's per-page steps from the untraced total and the traced functions (instructions per page).

    ``overhead`` is everything but the copy. With ``copy_loop`` (a 4 KiB ``rep movsb``'s own count in
    the same guest) the copy is that times the copies per broken page, exact where ftrace's figure for
    copy_mc_to_kernel carries the tracer calibration's error once per call; ``overhead_ftrace_copy``
    keeps the other figure beside it."""
    steps = {name: round(sum(table[f]["instructions_per_page"] for f in funcs if f in table), 1)
             for name, funcs in STEPS.items()}
    inside = table.get(ROOT, {}).get("instructions_per_page")
    out = {"total": round(total, 1), "trap": round(total - inside, 1) if inside is not None else None, **steps}
    if inside is not None:
        out["rest"] = round(inside - sum(steps.values()), 1)
    out["overhead_ftrace_copy"] = round(total - steps["copy"], 1)
    copy = copy_loop * copies_per_page if copy_loop is not None else steps["copy"]
    out["overhead"] = round(total - copy, 1)  # everything but the copy itself
    return out


def breakdown(kernel: Path, source: str, patterns: list[str], windows: list[int], policy: str = "fixed",
              pages: int = DEFAULT_PAGES, work: Path | None = None) -> dict:
    """Every pattern × window in one boot; a JSON-ready dict with ``settings``."""
    groups = GROUPS[source]
    work = Path(work or tempfile.mkdtemp(prefix="cowahead-ftrace-"))
    programs = compile_programs(work / "bin")
    settings = []
    for pattern in patterns:
        cmd, knobs = workload_command(work, programs, pattern, pages)
        for window in windows:
            settings.append(({"index": len(settings), "pattern": pattern, "policy": policy, "window": window,
                              "pages": pages, **knobs}, cmd))
    script = work / "trace.sh"  # a file: vng passes the command on the kernel command line, which is short
    script.write_text(guest_script(settings, groups, str(programs["copy_loop"])) + "\n")
    result = run_in_guest(kernel, ["sh", str(script)], icount=True, memory="2G", timeout=3 * 3600)
    text = result.stdout
    (work / "guest-stdout.txt").write_text(text)  # kept: a parse that fails loses no guest time
    loop = report_line(text.split("COPYLOOP\n", 1)[1].split("ENDCOPYLOOP")[0]) if "ENDCOPYLOOP" in text else None
    copy = loop["instructions_per_page"] if loop else None
    chunks = [c.split("\n", 1)[1] for c in text.split("SETTING ")[1:]]
    if len(chunks) != len(settings) or "ENDTRACE" not in chunks[-1].rsplit("GROUP ", 1)[-1]:
        raise RuntimeError(f"guest run failed ({result.returncode}): {text[-1500:]} {result.stderr[-1500:]}")
    return {"kernel_image": str(kernel), "source": source, "icount": "shift=0", "root": ROOT, "groups": groups,
            "steps": STEPS, "copy_loop": loop,
            "settings": [parse_setting(c, s, copy) for c, (s, _) in zip(chunks, settings)],
            "guest_returncode": result.returncode, "dmesg": result.dmesg_problems,
            "stderr_tail": result.stderr[-1500:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=sorted(GROUPS), default="6.12")
    ap.add_argument("--no-debug", action="store_true", help="the 6.12 build without the debug options")
    ap.add_argument("--build-dir", type=Path, default=None)
    ap.add_argument("--policy", default="fixed")
    ap.add_argument("--pattern", action="append", help="repeatable; default sequential (6.1), "
                    "mthp-sequential and ld-mthp-sequential (6.12: 64 KiB mTHP, large destinations off, on)")
    ap.add_argument("--window", type=int, action="append", help="repeatable; default 0 and 16 (6.1), "
                    "0, 16, 64 and 512 (6.12)")
    ap.add_argument("--pages", type=int, default=DEFAULT_PAGES)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    source = SOURCES[f"{args.source}-nodebug" if args.no_debug else args.source]
    kernel = built_kernel(args.build_dir or source.build_dir, source)
    if kernel is None:
        print(f"no built kernel in {args.build_dir or source.build_dir}", file=sys.stderr)
        return 1
    six = args.source == "6.12"
    patterns = args.pattern or (["mthp-sequential", "ld-mthp-sequential"] if six else ["sequential"])
    windows = args.window or ([0, 16, 64, 512] if six else [0, 16])
    doc = {**metadata(kernel, source.patch), "kernel_sha256_16": image_key(kernel),
           "command": "python -m cowahead.kernel.ftrace " + " ".join(argv if argv is not None else sys.argv[1:]),
           **breakdown(kernel, args.source, patterns, windows, args.policy, args.pages)}
    text = json.dumps(doc, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    for s in doc["settings"]:
        print(f"{s['pattern']:22} {s['policy']}:{s['window']:<4} " + "  ".join(f"{k} {v}" for k, v in s["account"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
