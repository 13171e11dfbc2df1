"""Shared helpers of the benchmarks: interleaved timing, medians, tables.

Every benchmark compares variants side by side in one process. The machine
is shared (2 cores, other jobs come and go), so the variants are run in
turns (A, B, A, B, ... with the order rotated every round) and compared by
the median of the per-round ratios, which cancels slow drifts of the load.
The spread printed is the interquartile range of those per-round ratios.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SHARED_TFDS = os.path.abspath(
    os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "tensorflow_datasets"
    )
)
if os.path.isdir(_SHARED_TFDS):
    os.environ.setdefault("TFDS_DATA_DIR", _SHARED_TFDS)
sys.path.insert(
    0, os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
)


def parser(description):
    """An argument parser with the options every benchmark shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--full", action="store_true", help="the sizes of issue 8 (slower)"
    )
    p.add_argument("--reps", type=int, default=None, help="timed rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    return p


def load():
    """The 1/5/15-minute load averages and the core count, as text."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def interleave(fns, reps, warmup=2, inner=1, progress=True):
    """Times each callable of `fns` (name -> fn) in turns.

    Every round calls each function `inner` times in a row and records the
    mean seconds per call; the order of the functions rotates from one round
    to the next so that none always runs first. Returns name -> list of
    per-round seconds, rounds aligned across names.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = Times({name: [] for name in names})
    times.cpu = {name: [] for name in names}
    for r in range(reps):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(inner):
                fns[name]()
            times[name].append((time.perf_counter() - start) / inner)
            times.cpu[name].append((time.process_time() - cpu) / inner)
        if progress:
            shown = "  ".join(
                f"{n} {times[n][-1] * 1e3:.1f}ms (cpu "
                f"{times.cpu[n][-1] * 1e3:.1f})"
                for n in names
            )
            print(f"  round {r + 1}/{reps}: {shown}", flush=True)
    return times


class Times(dict):
    """name -> per-round wall seconds; `.cpu`: the same in process CPU time.

    Process CPU time (all threads of this process) counts only the work this
    process did, so it is far less disturbed by other jobs on the machine
    than wall time; both are reported.
    """

    cpu = None


def quartiles(values):
    """`(q1, median, q3)` of a list of numbers."""
    values = sorted(values)
    if len(values) < 4:
        m = statistics.median(values)
        return values[0], m, values[-1]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def ratio(times, name, baseline):
    """`(q1, median, q3)` of the per-round ratios `name / baseline`."""
    return quartiles([a / b for a, b in zip(times[name], times[baseline])])


def table(headers, rows):
    """Prints rows (lists of str) as an aligned text table."""
    widths = [
        max(len(str(x)) for x in [h] + [r[i] for r in rows])
        for i, h in enumerate(headers)
    ]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))


def timing_table(times, baseline, unit="ms"):
    """Median time and per-round ratio (IQR) per variant, wall and CPU."""
    scale = {"ms": 1e3, "us": 1e6, "s": 1.0}[unit]
    rows = []
    for name in times:
        row = [name]
        for kind in (times, times.cpu) if times.cpu else (times,):
            q1, med, q3 = ratio(kind, name, baseline)
            t = quartiles(kind[name])
            row += [
                f"{t[1] * scale:.2f} ({t[0] * scale:.2f}-{t[2] * scale:.2f})",
                f"{med:.3f} ({q1:.3f}-{q3:.3f})",
            ]
        rows.append(row)
    headers = ["variant", f"wall {unit} (IQR)", "wall ratio (IQR)"]
    if times.cpu:
        headers += [f"CPU {unit} (IQR)", "CPU ratio (IQR)"]
    print(f"ratios: median of per-round ratios to {baseline}")
    table(headers, rows)


def sub(times, names):
    """The rows of `times` (and of its CPU times) for `names` only."""
    out = Times({n: times[n] for n in names})
    out.cpu = {n: times.cpu[n] for n in names} if times.cpu else None
    return out


def both(times, name, baseline):
    """`(cpu, wall)`: median per-round ratios of CPU and of wall time."""
    return (
        ratio(times.cpu, name, baseline)[1],
        ratio(times, name, baseline)[1],
    )


def result(label, value, target, higher_is_better=False, fmt="{:.3f}"):
    """Prints the one-line result: the figure, its target, met or not."""
    met = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    shown = fmt.format(value)
    print(
        f"RESULT {label}: {shown} (target {sign} {fmt.format(target)}) "
        f"{'MET' if met else 'NOT MET'} [{load()}]",
        flush=True,
    )
    return met
