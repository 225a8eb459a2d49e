"""Command line: ``hpcqnn bench ...`` (``hpcqnn train`` lands with the training issue).

Every command runs on all ranks when launched under mpiexec/srun; rank 0 prints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import HpcqnnError


def parse_int_list(text: str) -> list[int]:
    """``"1..3"`` -> [1, 2, 3]; ``"0,2"`` -> [0, 2]."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split("..", 1))
            values = list(range(lo, hi + 1))
        else:
            values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range like 1..3 or a list like 0,2; got {text!r}")
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def parse_modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes or any(m not in ("exact", "sampled") for m in modes):
        raise argparse.ArgumentTypeError(f"modes are exact and/or sampled, got {text!r}")
    return modes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcqnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="per-query phase timings, hpcqnn vs the addon pipeline")
    bench.add_argument("--qubits", type=positive_int, default=8, help="circuit width (default 8)")
    bench.add_argument("--cuts", type=parse_int_list, default=[1, 2, 3], help="cut counts, e.g. 1..3 (default)")
    bench.add_argument("--layers", type=positive_int, default=3, help="ansatz layers (default 3, at least the cuts)")
    bench.add_argument("--shots", type=positive_int, default=10_000, help="shots of sampled mode and the reference")
    bench.add_argument("--queries", type=positive_int, default=20, help="hpcqnn queries per setting (default 20)")
    bench.add_argument("--rows", type=positive_int, default=1, help="parameter rows per hpcqnn query (default 1)")
    bench.add_argument(
        "--reference-queries", type=int, default=1,
        help="addon-pipeline queries per setting (default 1; 0 skips it: it takes minutes at 3 cuts)",
    )
    bench.add_argument("--modes", type=parse_modes, default=("exact", "sampled"), help="exact,sampled (default both)")
    bench.add_argument("--seed", type=int, default=1234)
    bench.add_argument("--device", choices=["auto", "CPU", "GPU"], default="auto")
    bench.add_argument("--schedule", choices=["static", "dynamic"], default="static", help="MPI tile schedule")
    bench.add_argument("--straggler-ranks", type=parse_int_list, default=[], help="ranks to slow down, e.g. 1 or 1,3")
    bench.add_argument("--straggler-slowdown", type=float, default=1.0, help="factor on their execution time")
    bench.add_argument("--straggler-delay", type=float, default=0.0, help="extra seconds per tile batch")
    bench.add_argument("--out", type=Path, help="run directory root: per-setting timing/rank-*.h5 and results.json")
    bench.add_argument("--json", type=Path, help="write the report as JSON here (default OUT/bench.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "bench":
            return _bench(args)
    except HpcqnnError as exc:
        print(f"hpcqnn: error: {exc}", file=sys.stderr)
        return 2
    return 1


def _bench(args: argparse.Namespace) -> int:
    from .bench import HEADER, format_report, run_bench
    from .distributed import Straggler

    straggler = None
    if args.straggler_ranks or args.straggler_delay or args.straggler_slowdown != 1.0:
        straggler = Straggler(tuple(args.straggler_ranks), delay=args.straggler_delay, slowdown=args.straggler_slowdown)
    printed = []

    def progress(line: str) -> None:
        if not printed:
            printed.append(print(HEADER, flush=True))
        print(line, flush=True)

    report = run_bench(
        qubits=args.qubits,
        cuts=args.cuts,
        shots=args.shots,
        queries=args.queries,
        rows=args.rows,
        layers=args.layers,
        modes=args.modes,
        reference_queries=args.reference_queries,
        seed=args.seed,
        device=args.device,
        schedule=args.schedule,
        straggler=straggler,
        out=args.out,
        progress=progress,
    )
    if report is None:  # an MPI worker rank
        return 0
    print()
    print(format_report(report))
    destination = args.json or (args.out / "bench.json" if args.out else None)
    if destination:
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {destination}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
