"""``cowahead kernel build|run|check|costs``: COW-ahead in Linux's own fault path, in a TCG guest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import CowaheadError
from ..kernel.check import RESULTS_DIR, check, metadata
from ..kernel.costs import kernel_profile
from ..kernel import repro, selftests
from ..kernel.kbuild import VERSIONS, build, built_kernel, source_of, stock_built, tree_of
from ..kernel.validate import MEASURE_LARGE_SETTINGS, measure
from ..kernel.vm import POLICIES, run_in_guest, stock_kernel
from ..output import output_file, write_atomically, write_dated_results

build_dir_option = click.option("--build-dir", type=click.Path(file_okay=False, path_type=Path),
                                default=None,
                                help="Where the kernel tree, its config and build.log live (never the repo); "
                                     "default ~/.cache/cowahead/kernel-6.12 (6.12), ~/.cache/cowahead/kernel (6.1).")
source_option = click.option("--source", "version", type=click.Choice(sorted(VERSIONS)), default="6.12",
                             show_default=True, help="Which Debian linux-source package (and patch).")
thp_off_option = click.option("--thp-off", is_flag=True,
                              help="6.12 with CONFIG_TRANSPARENT_HUGEPAGE off (debug options kept), in its own "
                                   "build directory, default ~/.cache/cowahead/kernel-6.12-nothp.")

no_debug_option = click.option("--no-debug", is_flag=True,
                               help="6.12 without the debug options (DEBUG_VM, PAGE_TABLE_CHECK, lockdep): "
                                    "costs as a distribution kernel has them, ~/.cache/cowahead/kernel-6.12-nodebug.")


@click.group("kernel")
def command() -> None:
    """Build, boot and check the COW-ahead kernel (Debian linux-source-6.12 or 6.1) under QEMU TCG."""


@command.command("build")
@build_dir_option
@source_option
@click.option("--patch", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Default: the source's own (kernel/cow-ahead-6.12.patch, kernel/cow-ahead.patch for 6.1).")
@click.option("--stock", is_flag=True, help="Build the same tree and config without the patch (bzImage-stock).")
@click.option("--jobs", "-j", type=int, default=None, help="make -j; default: every CPU (run under nice -n 19).")
@thp_off_option
@no_debug_option
def build_command(build_dir: Path | None, version: str, patch: Path | None, stock: bool, jobs: int | None,
                  thp_off: bool, no_debug: bool) -> None:
    """Extract, patch, configure (vng --kconfig) and build bzImage; incremental."""
    result = build(build_dir, patch, jobs, source=source_of(version, thp_off, no_debug), stock=stock)
    click.echo(f"{result.bzimage}  ({result.seconds:.0f} s, {len(result.warnings)} warnings, log {result.log})")


@command.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--kernel", "kernel", type=click.Path(exists=True, path_type=Path), default=None,
              help="bzImage or vmlinuz; default: the built one in --build-dir, else /boot's stock kernel.")
@build_dir_option
@source_option
@click.option("--cow-ahead", type=int, default=None, help="vm.cow_ahead_pages to set first (0 … 512).")
@click.option("--policy", type=click.Choice(POLICIES), default=None, help="vm.cow_ahead_policy to set first.")
@click.option("--large-destinations", is_flag=True, default=None,
              help="vm.cow_ahead_large_destinations=1 first (issue 23: COW-ahead into large folios).")
@click.option("--icount", is_flag=True, help="QEMU -icount shift=0: guest ns count instructions (1 vCPU).")
@click.option("--memory", default="1G", show_default=True)
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds for one boot (retried once).")
@thp_off_option
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED, required=True)
def run_command(kernel: Path | None, build_dir: Path | None, version: str, cow_ahead: int | None, policy: str | None,
                large_destinations: bool | None, icount: bool, memory: str, timeout: float, thp_off: bool,
                cmd: tuple[str, ...]) -> None:
    """Boot a kernel and run CMD in it (after --); print its output and exit with its status."""
    kernel = kernel or built_kernel(build_dir, source_of(version, thp_off)) or stock_kernel()
    if kernel is None:
        raise CowaheadError("no kernel: build one (cowahead kernel build) or install linux-image-amd64")
    result = run_in_guest(kernel, list(cmd), cow_ahead, policy, icount=icount, memory=memory, timeout=timeout,
                          large_destinations=large_destinations or None)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.dmesg_problems and result.returncode == 0:
        click.echo(f"cowahead: the kernel log has {len(result.dmesg_problems)} BUG/WARNING/Bad page lines", err=True)
        sys.exit(1)
    sys.exit(result.returncode)


@command.command("check")
@build_dir_option
@source_option
@click.option("--skip-build", is_flag=True, help="Use the kernel already built in --build-dir.")
@click.option("--skip-measure", is_flag=True, help="No icount measurement (a debug kernel's counts say little).")
@click.option("--skip-reproducers", is_flag=True, help="No issue 19 reproducers (6.12).")
@click.option("--skip-selftests", is_flag=True, help="No upstream mm selftests (6.12; hours under TCG).")
@thp_off_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for kernel-<date>.json; default benchmarks/results.")
def check_command(build_dir: Path | None, version: str, skip_build: bool, skip_measure: bool,
                  skip_reproducers: bool, skip_selftests: bool, thp_off: bool, out_dir: Path | None) -> None:
    """Build, boot, validate against the model, vmsplice, integrity, issue 19's reproducers, upstream's mm
    selftests against stock (6.12), icount measurement; write the JSON."""
    source = source_of(version, thp_off)
    try:
        path = check(build_dir or source.build_dir, skip_build, out_dir or RESULTS_DIR,
                     log=lambda m: click.echo(m, err=True), source=source, skip_measure=skip_measure,
                     skip_reproducers=skip_reproducers, skip_selftests=skip_selftests)
    except FileNotFoundError as e:
        raise CowaheadError(str(e)) from None
    click.echo(str(path))


@command.command("measure")
@build_dir_option
@source_option
@click.option("--kernel", "kernel", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The patched image; default BUILD_DIR/bzImage-cow-ahead.")
@click.option("--large-destinations", is_flag=True,
              help="Issue 23's settings: 64 KiB mTHP sources, large destinations off and on, sequential "
                   "(fixed 0/16/64/512) and random writes (fixed 0/16, adaptive 16/32/64).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for kernel-6.12[-nodebug]-icount[-large-destinations]-<date>.json; "
                   "default benchmarks/results.")
@no_debug_option
def measure_command(build_dir: Path | None, version: str, kernel: Path | None, large_destinations: bool,
                    out_dir: Path | None, no_debug: bool) -> None:
    """Instructions per COW-broken page under -icount shift=0, and predicted µs per page (one boot)."""
    source = source_of(version, no_debug=no_debug)
    kernel = kernel or built_kernel(build_dir, source)
    if kernel is None:
        raise CowaheadError("no kernel built: cowahead kernel build")
    doc = measure(kernel, settings=MEASURE_LARGE_SETTINGS if large_destinations else None)
    name = f"kernel-{source.name}-icount" + ("-large-destinations" if large_destinations else "")
    path = write_dated_results(out_dir or RESULTS_DIR, name,
                               {**metadata(kernel, source.patch), "source": source.version, **doc})
    for r in doc["predicted"]["rows"]:
        click.echo(f"{r['pattern']:22} {r['policy']}:{r['window']:<4} faults/page {r['faults_per_page']:.4f}  "
                   f"instructions x{r['instructions_ratio']:.3f}  predicted {r['predicted_us_per_page']:.3f} µs "
                   f"({r['vs_window_0']:+.1%} vs window 0)")
    if not doc["guest"]["dmesg_clean"]:
        raise CowaheadError(f"the kernel log has problems: {doc['guest']['dmesg'][:3]}")
    click.echo(str(path))


@command.command("reproduce")
@click.option("--kernel", "kernel", type=click.Path(exists=True, path_type=Path), default=None,
              help="bzImage; default: the patched one built in --build-dir.")
@build_dir_option
@source_option
@click.option("--stock", is_flag=True, help="The kernel has no COW-ahead: run each case once, nothing set.")
@click.option("--case", "cases", multiple=True, help="Only these cases (repeatable); default: all.")
@click.option("--large-destinations", is_flag=True,
              help="vm.cow_ahead_large_destinations=1 and 16+64 KiB mTHP in every run (issue 23).")
@click.option("--repeat", "repeats", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Rounds of every case and setting in the one boot.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for kernel-6.12-issue19-<date>.json; default benchmarks/results.")
@thp_off_option
def reproduce_command(kernel: Path | None, build_dir: Path | None, version: str, stock: bool,
                      cases: tuple[str, ...], large_destinations: bool, repeats: int, out_dir: Path | None,
                      thp_off: bool) -> None:
    """Issue 19's reproducers (guest/issue19.c) in one boot; write the results file."""
    source = source_of(version, thp_off)
    unknown = sorted(set(cases) - set(repro.CASES))
    if unknown:
        raise CowaheadError(f"unknown case {', '.join(unknown)}; cases: {', '.join(repro.CASES)}")
    kernel = kernel or (stock_built(build_dir, source) if stock else built_kernel(build_dir, source))
    if kernel is None:
        raise CowaheadError("no kernel built: cowahead kernel build" + (" --stock" if stock else ""))
    if stock and large_destinations:
        raise CowaheadError("--large-destinations needs the patched kernel, not --stock")
    doc = repro.reproduce(kernel, patched=not stock, cases=list(cases) or None,
                          large_destinations=large_destinations, repeats=repeats)
    name = f"kernel-{source.name}-issue19" + ("-stock" if stock else "") + (
        "-large-destinations" if large_destinations else "")
    path = repro.write_results(doc, out_dir or RESULTS_DIR, name)
    for run in doc["runs"]:
        setting = "unset" if run["window"] is None else f"{run['policy']}:{run['window']}"
        click.echo(f"{run['case']:18} {setting:14} {run['status'].upper():4}  {json.dumps(run['report'])}"
                   + (f"  dmesg: {run['dmesg'][:2]}" if run["dmesg"] else ""))
    s = doc["summary"]
    click.echo(f"{s['passed']}/{s['runs']} passed, {s['skipped']} skipped (reason in each), {s['failed']} failed"
               f" ({s['planned']} planned); {path}")


@command.command("selftests")
@build_dir_option
@source_option
@thp_off_option
@click.option("--test", "tests", multiple=True, help="Only these selftests (repeatable); default: issue 19's list.")
@click.option("--policy", "policies", multiple=True, type=click.Choice(selftests.CANDIDATE_POLICIES),
              help="Policies for the patched kernel (repeatable); default: every one the kernel's "
                   "vm.cow_ahead_policy takes (probed in the guest).")
@click.option("--window", "windows", multiple=True, type=int, help="Windows (repeatable); default 0, 16, 512.")
@click.option("--kernel", "kernel", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The patched image; default BUILD_DIR/bzImage-cow-ahead.")
@click.option("--stock-kernel", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The stock image; default BUILD_DIR/bzImage-stock.")
@click.option("--seed-from", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="An earlier results file of the SAME images: its rows of --seed-test tests fill the cache.")
@click.option("--seed-test", "seed_tests", multiple=True, help="Tests whose rows --seed-from may give.")
@click.option("--timeout", type=float, default=None,
              help="Seconds per selftest run; default each test's own (selftests.TIMEOUTS).")
@click.option("--cache", "cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Per-run cache, keyed by image sha256 (a re-run boots only what is missing); "
                   "default BUILD_DIR/selftests-cache.")
@click.option("--cached-only", is_flag=True, help="Boot nothing: the table of what the cache has.")
@click.option("--large-destinations", is_flag=True,
              help="Issue 23: both kernels under 16+64 KiB mTHP always (repro.LARGE_DESTINATIONS_THP), the patched "
                   "one with vm.cow_ahead_large_destinations=1 (window 0 too); cells cached apart, results in "
                   "kernel-6.12-selftests-large-destinations-<date>.json.")
@click.option("--stock-runs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs of each test on stock (same boot): a patched case equals stock when its status is one "
                   "any stock run gave; cases the stock runs disagree on are listed as flaky.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for kernel-6.12-selftests-<date>.json (and .md); default benchmarks/results.")
def selftests_command(build_dir: Path | None, version: str, thp_off: bool, tests: tuple[str, ...],
                      policies: tuple[str, ...], windows: tuple[int, ...], kernel: Path | None,
                      stock_kernel: Path | None, seed_from: Path | None, seed_tests: tuple[str, ...],
                      timeout: float | None, cache: Path | None, cached_only: bool, large_destinations: bool,
                      stock_runs: int, out_dir: Path | None) -> None:
    """Upstream mm selftests on the stock and the patched kernel: test × policy × window against stock."""
    if large_destinations and thp_off:  # no mTHP knobs to set: every run would fail setting them
        raise CowaheadError("--large-destinations needs THP (its 16 and 64 KiB mTHP knobs), not --thp-off")
    variant = selftests.LARGE_DESTINATIONS if large_destinations else selftests.DEFAULT
    source = source_of(version, thp_off)
    build_dir = Path(build_dir or source.build_dir)
    tests = tests or selftests.TESTS
    unknown = sorted(set(tests) - set(selftests.TESTS))
    if unknown:
        raise CowaheadError(f"unknown selftest {', '.join(unknown)}; known: {', '.join(selftests.TESTS)}")
    binaries = selftests.build_selftests(tree_of(build_dir, source), build_dir / "selftests-mm", tests)
    patched, stock_image = kernel or built_kernel(build_dir, source), stock_kernel or stock_built(build_dir, source)
    if patched is None or stock_image is None:
        raise CowaheadError("need both kernels: cowahead kernel build, and cowahead kernel build --stock")
    cache = cache or build_dir / "selftests-cache"
    if seed_from:
        n = selftests.seed_cache(seed_from, cache, {"stock": stock_image, "patched": patched}, seed_tests, variant)
        click.echo(f"{n} rows seeded from {seed_from}", err=True)
    settings = {"policies": policies or selftests.CANDIDATE_POLICIES, "windows": windows or selftests.WINDOWS}
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    click.echo("stock kernel …", err=True)
    stock = selftests.run_selftests(stock_image, binaries, False, tests, timeout, cache, log, not cached_only,
                                    repeats=stock_runs, variant=variant)
    click.echo("patched kernel …", err=True)
    result = selftests.run_selftests(patched, binaries, True, tests, timeout, cache, log, not cached_only,
                                     variant=variant, **settings)
    rows = selftests.table(stock, result)
    name = f"kernel-{source.name}-selftests" + ("" if variant is selftests.DEFAULT else f"-{variant.name}")
    path = selftests.write_results({**variant.describe(), "stock_runs": stock_runs, "stock": stock,
                                    "patched": result, "table": rows, "summary": selftests.summary(rows)},
                                   out_dir or RESULTS_DIR, name)
    path.with_suffix(".md").write_text(selftests.markdown(stock, rows))
    for r in rows:
        verdict = r["verdict"] if r["verdict"] != "differs" else "DIFFERS " + str((r["differs_from_stock"] or [])[:3])
        if r.get("flaky_in_stock"):
            verdict += f" (flaky in stock: {', '.join(map(selftests.case_label, r['flaky_in_stock']))})"
        click.echo(f"{r['test']:22} {r['policy']}:{r['window']:<4} pass {r['pass']:3} fail {r['fail']:3} "
                   f"skip {r['skip']:3} {r['outcome']:10} {verdict}")
    click.echo(str(path))


existing_file = click.Path(dir_okay=False, exists=True, path_type=Path)


@command.command("costs")
@click.argument("check_file", metavar="KERNEL_CHECK", type=existing_file)
@click.option("--ftrace", "ftrace_file", type=existing_file, required=True,
              help="The ftrace breakdown of the same kernel (python -m cowahead.kernel.ftrace): the copy's "
                   "instructions.")
@click.option("--calibration", "calibration_file", type=existing_file, required=True,
              help="This host's `cowahead calibrate` file: converts instructions to µs.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True)
def costs_command(check_file: Path, ftrace_file: Path, calibration_file: Path, output: Path) -> None:
    """Fit the kernel cost profile to a kernel check's measurements (docs/costs.md); write it for --costs."""
    output_file(output)
    doc = kernel_profile(check_file, ftrace_file, calibration_file)
    write_atomically(output, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))
    fit, costs = doc["fit"], doc["costs"]
    click.echo(f"instructions per COW fault {fit['instructions']['per_cow_fault']:,.1f}, per ahead copy "
               f"{fit['instructions']['per_ahead_copy']:,.1f}, per batch {fit['instructions']['per_batch']:,.1f} "
               f"(worst residual {fit['worst_residual_pct']:.2f}%)")
    click.echo(f"µs: cow_fault {costs['cow_fault_us']}, ahead_copy {costs['ahead_copy_us']}, "
               f"ahead_call {costs['ahead_call_us']}, ahead_reuse {costs['ahead_reuse_us']} (not measured)")
    click.echo(str(output))
