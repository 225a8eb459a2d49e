"""A small paper matrix on this workstation, then the report.

``python -m analysis.sweep --out DIR`` runs, each under ``mpiexec`` (``DIR/runs/<step>``):

- strong scaling (``--repeats`` times each, round robin): ``hpcqnn bench`` of a cut QNN query
  (``--qubits``, ``--cuts``, ``--rows``), static at every ``--ranks``, dynamic at every rank count
  above 1, and dynamic with ``rows / 16`` rows at the two most rank counts above 1 (tiles of a few
  experiments: the fixed cost of a simulator call);
- weak scaling: static with ``rows x ranks / max ranks`` rows at the smaller rank counts;
- stragglers: static and dynamic at the most ranks with rank 1 slowed down ``--slowdown`` times;
- cuts: the bench query at 0..``--cuts`` cuts on ``--cut-ranks`` ranks;
- training: ``jobs/iris_cut0..3`` (``--train-cuts``) and their uncut baselines for a short budget.

Then ``python -m analysis.report DIR/runs --out DIR/report``. Steps whose directory exists are
skipped, so an interrupted sweep continues where it stopped. ``DIR/sweep.json`` records each
step's seconds and the other work on the host meanwhile (cores busy with processes not of the
sweep): timings taken beside other work are noisy, so each step waits (``--patience``) for
the host to be quiet, and one measured beside more than 0.2 cores of other work is run again
(``--retries`` times), keeping the quietest attempt. The defaults take a few minutes on
2 cores; ``--ranks 1,2,4,8 --queries 20 --rows 32 --train-epochs 3`` scales it up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hpcqnn.cli import float_at_least, int_at_least, parse_int_list, parse_positive_int_list

from . import report

JOBS = Path(__file__).resolve().parents[1] / "jobs"
QUIET = 0.2  # cores of other work on the host above which a step is run again (``--retries``)


@dataclass(frozen=True)
class Step:
    """One run of the matrix: ``hpcqnn ARGS`` under ``mpiexec -n ranks``, writing ``name``."""

    name: str
    ranks: int
    args: tuple[str, ...]


def plan(args: argparse.Namespace, runs: Path) -> list[Step]:
    """Every step of the matrix for the parsed command line."""
    top = max(args.ranks)
    bench = (
        "bench",
        "--qubits",
        str(args.qubits),
        "--queries",
        str(args.queries),
        "--modes",
        "exact",
        "--reference-queries",
        "0",
    )

    def bench_step(name: str, ranks: int, cuts: str, rows: int, *extra: str) -> Step:
        return Step(name, ranks, (*bench, "--cuts", cuts, "--rows", str(rows), *extra, "--out", str(runs / name)))

    settings = [(f"static-r{p}-rows{args.rows}", p, args.rows) for p in args.ranks]
    settings += [(f"dynamic-r{p}-rows{args.rows}", p, args.rows, "--schedule", "dynamic") for p in args.ranks if p > 1]
    small = max(1, args.rows // 16)  # tiles of a few experiments: the fixed cost of a simulator call
    if small != args.rows:  # at two rank counts, so that leaving one out keeps small calls calibrated
        settings += [(f"dynamic-r{p}-rows{small}", p, small, "--schedule", "dynamic") for p in args.ranks if p > 1][-2:]
    settings += [
        (f"static-r{p}-rows{args.rows * p // top}", p, args.rows * p // top)
        for p in args.ranks if p < top and args.rows * p % top == 0
    ]
    straggler = ("--straggler-ranks", "1", "--straggler-slowdown", str(args.slowdown))
    settings += [
        (f"{s}-r{top}-rows{args.rows}-straggler", top, args.rows, "--schedule", s, *straggler)
        for s in ("static", "dynamic") if top > 1
    ]
    steps = [  # round robin, so that a change of the host's load hits every setting alike
        bench_step(f"bench-{name}-rep{k}", ranks, str(args.cuts), rows, *extra)
        for k in range(1, args.repeats + 1) for name, ranks, rows, *extra in settings
    ]
    steps.append(
        bench_step(f"bench-cuts-r{args.cut_ranks}-rows{args.rows}", args.cut_ranks, f"0..{args.cuts}", args.rows)
    )
    budget = (
        "--set", f"training.epochs={args.train_epochs}", "--set", f"data.max_train={args.train_max}",
        "--set", "evaluation.gaussian_draws=1",
    )
    for c in args.train_cuts:
        for cutting in ("true", "false") if c else ("true",):
            name = f"train-iris_cut{c}" + ("" if cutting == "true" else "-uncut")
            config = str(JOBS / f"iris_cut{c}.toml")
            command = ("train", config, "--out", str(runs / name), *budget, "--set", f"execution.cutting={cutting}")
            steps.append(Step(name, args.cut_ranks, command))
    return steps


def run_step(step: Step, runs: Path, retries: int = 0, quiet: float = QUIET, patience: float = 0.0) -> dict | None:
    """Run one step (None if its directory exists): its seconds and the other work on the host
    meanwhile (CPU cores busy with processes not of this sweep; Linux only, else NaN).

    Each attempt first waits up to ``patience`` seconds for the host to be quiet (other work
    below ``quiet`` cores); a run beside more other work than that is run again, up to
    ``retries`` times; the quietest attempt is kept (the others go to ``runs/../loaded``, out
    of the report)."""
    if (runs / step.name).exists():
        print(f"{step.name}: exists, skipped", flush=True)
        return None
    attempts = []
    for attempt in range(retries + 1):
        wait_for_quiet(quiet, patience)
        record = _run_once(step)
        attempts.append(record)
        if not record["other_cores"] > quiet:  # NaN (not Linux) counts as quiet
            break
        if attempt < retries:
            _move(runs / step.name, runs.parent / "loaded" / f"{step.name}-{attempt}")
            print(f"{step.name}: other work {record['other_cores']:.2f} cores, run again", flush=True)
    best = min(range(len(attempts)), key=lambda k: attempts[k]["other_cores"])
    if best != len(attempts) - 1:
        _move(runs / step.name, runs.parent / "loaded" / f"{step.name}-{len(attempts) - 1}")
        _move(runs.parent / "loaded" / f"{step.name}-{best}", runs / step.name)
    return {**attempts[best], "attempts": len(attempts)}


def wait_for_quiet(quiet: float, patience: float, window: float = 1.0) -> float:
    """Wait until the host's busy cores over ``window`` seconds drop below ``quiet`` (nothing of
    this sweep runs meanwhile), at most ``patience`` seconds; the last busy cores seen (NaN off Linux)."""
    deadline = time.monotonic() + patience
    while True:
        busy = host_busy_seconds()
        if math.isnan(busy) or patience <= 0:
            return math.nan
        time.sleep(window)
        load = (host_busy_seconds() - busy) / window
        if load < quiet or time.monotonic() >= deadline:
            return load


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    source.rename(target)


def _run_once(step: Step) -> dict:
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("analysis.sweep: no mpiexec found (install hpcqnn: it brings MPICH)")
    command = [mpiexec, "-n", str(step.ranks), sys.executable, "-m", "hpcqnn.cli", *step.args]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_"))}
    busy, ours, start = host_busy_seconds(), children_seconds(), time.monotonic()
    done = subprocess.run(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False)
    seconds = time.monotonic() - start
    other = (host_busy_seconds() - busy - (children_seconds() - ours)) / seconds
    if done.returncode != 0:
        raise SystemExit(f"analysis.sweep: {' '.join(command)} failed ({done.returncode}):\n{done.stdout}")
    print(f"{step.name}: {step.ranks} ranks, {seconds:.1f} s, other work on the host {other:.2f} cores", flush=True)
    return {"step": step.name, "ranks": step.ranks, "seconds": seconds, "other_cores": other}


def host_busy_seconds() -> float:
    """CPU seconds every process of this host has used so far (/proc/stat; NaN elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_seconds() -> float:
    """CPU seconds used by this process's finished children (the mpiexec jobs and their ranks)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_train_cuts(text: str) -> list[int]:
    """Cut counts C whose ``jobs/iris_cutC.toml`` exists."""
    cuts = parse_int_list(text)
    missing = [c for c in cuts if not (JOBS / f"iris_cut{c}.toml").is_file()]
    if missing:
        have = sorted(p.name for p in JOBS.glob("iris_cut[0-9].toml"))
        raise argparse.ArgumentTypeError(
            f"no job {', '.join(f'jobs/iris_cut{c}.toml' for c in missing)}; there are {', '.join(have)}"
        )
    return cuts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="sweep directory (runs/ and report/ inside)")
    parser.add_argument("--ranks", type=parse_positive_int_list, default=[1, 2, 4], help="rank counts (default 1,2,4)")
    parser.add_argument("--qubits", type=int_at_least(2), default=6, help="bench circuit width (default 6)")
    parser.add_argument(
        "--cuts", type=int_at_least(0), default=3, help="cuts of the scaling runs; the cut sweep: 0..CUTS (default 3)"
    )
    parser.add_argument("--rows", type=int_at_least(1), default=16, help="parameter rows per bench query (default 16)")
    parser.add_argument("--queries", type=int_at_least(1), default=10, help="bench queries per run (default 10)")
    parser.add_argument("--repeats", type=int_at_least(1), default=2,
                        help="runs of each scaling/straggler setting (default 2)")
    parser.add_argument("--slowdown", type=float_at_least(1), default=4.0,
                        help="straggler slowdown of rank 1 (default 4)")
    parser.add_argument("--cut-ranks", type=int_at_least(1), default=2,
                        help="ranks of the cut sweep and training (default 2)")
    parser.add_argument("--train-cuts", type=parse_train_cuts, default=[0, 1, 2, 3],
                        help="iris_cutC jobs (default 0..3)")
    parser.add_argument("--train-epochs", type=int_at_least(1), default=1, help="training epochs (default 1)")
    parser.add_argument("--train-max", type=int_at_least(0), default=16,
                        help="training examples (data.max_train, default 16; 0: all)")
    parser.add_argument("--retries", type=int_at_least(0), default=2,
                        help=f"runs again of a step measured beside more than {QUIET} cores of other work (default 2)")
    parser.add_argument("--patience", type=float_at_least(0), default=120.0,
                        help="seconds to wait before each run for other work on the host to stop (default 120)")
    parser.add_argument("--cores", type=int_at_least(1), default=len(os.sched_getaffinity(0)),
                        help="cores of this host (default: all this process may use)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file: give a directory for the sweep's runs and report")
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    steps = plan(args, runs)
    records = (run_step(step, runs, args.retries, patience=args.patience) for step in steps)
    done = [record for record in records if record is not None]
    (args.out / "sweep.json").write_text(json.dumps({"cores": args.cores, "steps": done}, indent=2))
    other = statistics.median(r["other_cores"] for r in done) if done else math.nan
    print(f"{len(done)} of {len(steps)} steps run, {sum(r['seconds'] for r in done):.1f} s; "
          f"median other work on the host {other:.2f} cores", flush=True)
    if other > QUIET:
        print("analysis.sweep: other work loaded the host; timings and the replay validation are noisy", flush=True)
    return report.main([str(runs), "--out", str(args.out / "report"), "--cores", str(args.cores)])


if __name__ == "__main__":
    raise SystemExit(main())
