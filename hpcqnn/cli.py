"""Command line: ``hpcqnn bench ...`` (``hpcqnn train`` lands with the training issue)."""

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
    bench.add_argument("--seed", type=int, default=1234)
    bench.add_argument("--device", choices=["auto", "CPU", "GPU"], default="auto")
    bench.add_argument("--json", type=Path, help="write the report as JSON here")
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

    if max(args.cuts) > args.layers:
        print(f"hpcqnn: note: layers raised to {max(args.cuts)} for the largest cut count", file=sys.stderr)
    print(HEADER, flush=True)
    report = run_bench(
        qubits=args.qubits,
        cuts=args.cuts,
        shots=args.shots,
        queries=args.queries,
        rows=args.rows,
        layers=args.layers,
        reference_queries=args.reference_queries,
        seed=args.seed,
        device=args.device,
        progress=lambda line: print(line, flush=True),
    )
    print()
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
