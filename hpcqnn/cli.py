"""Command line: ``hpcqnn train CONFIG ...``, ``hpcqnn plan CONFIG ...`` and ``hpcqnn bench ...``.

Every command runs on all ranks when launched under mpiexec/srun; rank 0 prints."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hpcqnn import __version__
from hpcqnn.errors import ExecutionConfigError, HpcqnnError, RunDirectoryError
from hpcqnn.execution.devices import DEVICES
from hpcqnn.options import MODES, SCHEDULES, SHOT_ALLOCATIONS


def parse_int_list(text: str) -> list[int]:
    """``"1..3"`` -> [1, 2, 3]; ``"0,2"`` -> [0, 2]."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split("..", 1))
            if hi < lo:
                raise argparse.ArgumentTypeError(
                    f"the range {text!r} runs backwards: write it low..high, e.g. {hi}..{lo}"
                )
            values = list(range(lo, hi + 1))
        else:
            values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range like 1..3 or a list like 0,2; got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def int_at_least(minimum: int):
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)


def parse_positive_int_list(text: str) -> list[int]:
    """``parse_int_list`` of integers >= 1 (rank counts)."""
    values = parse_int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def float_at_least(minimum: float, strict: bool = False):
    """argparse type: a finite float >= ``minimum`` (> with ``strict``)."""
    relation = ">" if strict else ">="

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        allowed = value > minimum if strict else value >= minimum
        if not allowed or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a finite number {relation} {minimum:g}, got {text}")
        return value

    return parse


def parse_modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes or any(m not in MODES for m in modes):
        raise argparse.ArgumentTypeError(f"modes are exact and/or sampled, got {text!r}")
    return modes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcqnn", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hpcqnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a QNN classifier from a TOML config (see jobs/)")
    train.add_argument("config", type=Path, help="TOML config, e.g. jobs/iris_cut3.toml")
    train.add_argument("--out", type=Path, help="run directory (default runs/<run.name>-<timestamp>)")
    train.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value"
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")

    plan = sub.add_parser(
        "plan", help="a config's cut plan, memory per rank and predicted query and epoch times, without training"
    )
    plan.add_argument("config", type=Path, help="TOML config, e.g. jobs/digits64.toml")
    plan.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value"
    )
    plan.add_argument(
        "--ranks", default="1", metavar="N[,M...]", help="rank counts to predict, e.g. 1,2,4 or 1..8 (default 1)"
    )
    plan.add_argument("--json", type=Path, help="write the plan as JSON here")

    bench = sub.add_parser("bench", help="per-query phase timings, hpcqnn vs the addon pipeline")
    bench.add_argument(
        "--qubits", type=parse_int_list, default=[8], help="circuit widths, e.g. 8 or 20,30,40 (default 8)"
    )
    bench.add_argument(
        "--piece-qubits",
        type=int_at_least(1),
        default=None,
        help="cut each circuit into pieces of this many qubits (default: two halves)",
    )
    bench.add_argument("--cuts", type=parse_int_list, default=[1, 2, 3], help="cut counts, e.g. 1..3 (default)")
    bench.add_argument("--layers", type=positive_int, default=3, help="ansatz layers (default 3, at least the cuts)")
    bench.add_argument("--shots", type=positive_int, default=10_000, help="shots of sampled mode and the reference")
    bench.add_argument(
        "--shot-allocation",
        choices=SHOT_ALLOCATIONS,
        default="proportional",
        help="sampled mode: split the shot budget by |QPD coefficient| (default) or uniformly",
    )
    bench.add_argument("--queries", type=positive_int, default=20, help="hpcqnn queries per setting (default 20)")
    bench.add_argument("--rows", type=positive_int, default=1, help="parameter rows per hpcqnn query (default 1)")
    bench.add_argument(
        "--reference-queries",
        type=int_at_least(0),
        default=1,
        help="addon-pipeline queries per setting (default 1; 0 skips it: it takes minutes at 3 cuts)",
    )
    bench.add_argument(
        "--reference-max-qubits",
        type=int_at_least(2),
        default=40,
        help="run the addon pipeline only up to this width (default 40)",
    )
    bench.add_argument("--modes", type=parse_modes, default=MODES, help="exact,sampled (default both)")
    bench.add_argument("--seed", type=int, default=1234)
    bench.add_argument("--device", choices=DEVICES, default="auto")
    bench.add_argument("--schedule", choices=SCHEDULES, default="static", help="MPI tile schedule")
    bench.add_argument("--straggler-ranks", type=parse_int_list, default=[], help="ranks to slow down, e.g. 1 or 1,3")
    bench.add_argument("--straggler-slowdown", type=float, default=1.0, help="factor on their execution time")
    bench.add_argument("--straggler-probability", type=float, default=0.0, help="chance that any tile is slowed")
    bench.add_argument("--straggler-delay", type=float, default=0.0, help="extra seconds per slowed tile")
    bench.add_argument("--out", type=Path, help="run directory root: per-setting timing/rank-*.h5 and results.json")
    bench.add_argument("--json", type=Path, help="write the report as JSON here (default OUT/bench.json)")
    shots = sub.add_parser(
        "bench-shots", help="sampled-mode error at equal total shots: uniform vs |coefficient|-proportional"
    )
    shots.add_argument("--qubits", type=int_at_least(2), default=8, help="width of the two-half problems (default 8)")
    shots.add_argument("--cuts", type=positive_int, default=3, help="cut gates of the two-half problems (default 3)")
    shots.add_argument(
        "--shots", type=positive_int, default=1000, help="mean shots per measurement setting (default 1000)"
    )
    shots.add_argument("--rows", type=positive_int, default=8, help="parameter rows per query (default 8)")
    shots.add_argument(
        "--repeats", type=positive_int, default=20, help="queries (fresh shots) per allocation (default 20)"
    )
    shots.add_argument("--seed", type=int, default=1234)
    shots.add_argument("--json", type=Path, help="write the results as JSON here")

    floor = sub.add_parser(
        "bench-floor", help="cut execution beside the uncut simulation (Aer EstimatorV2, StatevectorEstimator)"
    )
    floor.add_argument("--qubits", type=parse_int_list, default=[4, 8, 12], help="widths (default 4,8,12)")
    floor.add_argument("--cuts", type=parse_int_list, default=[1, 2, 3], help="cut counts (default 1..3)")
    floor.add_argument("--rows", type=parse_int_list, default=[1, 64], help="parameter rows per query (default 1,64)")
    floor.add_argument("--queries", type=positive_int, default=5, help="timed queries per pipeline (default 5)")
    floor.add_argument("--threads", type=positive_int, default=1, help="Aer threads of every pipeline (default 1)")
    floor.add_argument(
        "--modes", type=parse_modes, default=("exact",),
        help="comma-separated: exact (beside Aer EstimatorV2) and/or sampled (beside Aer SamplerV2; default exact)",
    )
    floor.add_argument("--shots", type=positive_int, default=1000, help="sampled: shots per setting (default 1000)")
    floor.add_argument("--seed", type=int, default=1234)
    floor.add_argument("--json", type=Path, help="write the results as JSON here")

    trainable = sub.add_parser(
        "bench-trainable", help="trainable RZZ cuts (one plan) against the same model with the angles bound"
    )
    trainable.add_argument("--qubits", type=int_at_least(2), default=8, help="width (default 8)")
    trainable.add_argument("--cuts", type=positive_int, default=3, help="trainable RZZ cuts (default 3)")
    trainable.add_argument("--rows", type=positive_int, default=64, help="parameter rows per query (default 64)")
    trainable.add_argument("--queries", type=positive_int, default=3, help="timed queries per pipeline (default 3)")
    trainable.add_argument("--modes", type=parse_modes, default=("exact", "sampled"), help="exact and/or sampled")
    trainable.add_argument("--shots", type=positive_int, default=1000, help="sampled: shots per setting (default 1000)")
    trainable.add_argument("--seed", type=int, default=1234)
    trainable.add_argument("--json", type=Path, help="write the results as JSON here")

    noise = sub.add_parser("bench-noise", help="query time with noise (depolarizing, a fake device, a sampler) vs none")
    noise.add_argument("--qubits", type=int_at_least(2), default=4, help="width, two pieces (default 4)")
    noise.add_argument("--cuts", type=positive_int, default=3, help="cut gates (default 3)")
    noise.add_argument("--rows", type=positive_int, default=16, help="parameter rows per query (default 16)")
    noise.add_argument("--queries", type=positive_int, default=3, help="timed queries per pipeline (default 3)")
    noise.add_argument("--modes", type=parse_modes, default=("exact", "sampled"), help="exact and/or sampled")
    noise.add_argument("--shots", type=positive_int, default=1000, help="sampled: shots per setting (default 1000)")
    noise.add_argument("--seed", type=int, default=1234)
    noise.add_argument("--json", type=Path, help="write the results as JSON here")

    width = sub.add_parser(
        "bench-noise-width", help="a mirrored QNN (ideal <Z...Z> = 1) cut and uncut under a device's noise, by width"
    )
    width.add_argument("--widths", type=parse_int_list, default=[4, 6, 8, 10, 12, 14, 16], help="qubits (even)")
    width.add_argument("--backend", default="FakeKolkataV2", help="fake device (default FakeKolkataV2, 27 qubits)")
    width.add_argument("--cuts", type=positive_int, default=1, help="cut gates between the two pieces (default 1)")
    width.add_argument("--shots", type=positive_int, default=4000, help="uncut beyond a density matrix: shots")
    width.add_argument("--seed", type=int, default=1234)
    width.add_argument("--json", type=Path, help="write the results as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {
            "bench": _bench, "bench-shots": _bench_shots, "bench-floor": _bench_floor,
            "bench-trainable": _bench_trainable, "bench-noise": _bench_noise,
            "bench-noise-width": _bench_noise_width, "plan": _plan, "train": _train,
        }
        return commands[args.command](args)
    except HpcqnnError as exc:
        if args.command.startswith("bench-") or args.command == "plan" or (
            _speaks_for_the_job()
        ):
            print(f"hpcqnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training handles it, or a second one: the user's stop
        print("\nhpcqnn: interrupted", file=sys.stderr)
        return 130


def _speaks_for_the_job() -> bool:
    """train and bench raise the errors that reach ``main`` alike on every rank, before any
    work: one process says them."""
    from hpcqnn.parallel.session import speaks_for_the_job

    return speaks_for_the_job()


def _train(args: argparse.Namespace) -> int:
    import time

    from hpcqnn.parallel.session import mpi_estimator, on_root, speaks_for_the_job
    from hpcqnn.run.config import config_differences, dump_config, load_config
    from hpcqnn.run.directory import (
        CHECKPOINT,
        create_run_directory,
        lock_run_directory,
        remove_if_empty,
        require_new_directory,
        run_state,
        saved_config,
    )
    from hpcqnn.run.runinfo import run_metadata, write_json
    from hpcqnn.run.timelog import set_aside
    from hpcqnn.training.loop import (
        Progress,
        StopRequest,
        build_qnn,
        check_noise,
        estimator_options,
        load_checkpoint,
        load_data,
        train,
    )

    config = load_config(args.config, args.set)  # every rank validates before any work
    text = dump_config(config)
    if args.resume and args.out is None:
        raise HpcqnnError("--resume needs --out: the run directory to continue")
    qnn = build_qnn(config)
    check_noise(config)
    kept: dict = {}  # rank 0 keeps the dataset, the checkpoint and the lock; only the run directory is broadcast

    def prepare() -> tuple[Path, int | None]:
        """Rank 0: the run directory (checked, created, locked for this job, never overwritten)
        and, when a checkpoint continues, the query it resumes at; loads the dataset and checks
        the checkpoint against it."""
        out = args.out or Path("runs") / f"{config.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not args.resume:
            require_new_directory(out)
            kept["data"] = load_data(config)
            if create_run_directory(out):
                kept["created"] = out
            kept["lock"] = lock_run_directory(out)
            require_new_directory(out)  # still new now that this job holds it (a run started meanwhile)
            return out, None
        if out.is_dir():  # before its state is read: a run still training holds the lock
            kept["lock"] = lock_run_directory(out)
        state = run_state(out)
        if state == "finished":
            raise RunDirectoryError(f"--resume: {out} already finished (results.json exists)")
        if state in ("new", "file", "occupied"):
            raise RunDirectoryError(f"--resume: {out} holds no run to continue (no config.toml)")
        changes = config_differences(saved_config(out), text)
        if changes:
            raise RunDirectoryError(
                f"--resume: the resolved config differs from {out / 'config.toml'} ({'; '.join(changes)}); "
                "a resumed run must keep its budget (same config file and --set values)"
            )
        kept["data"] = load_data(config)
        if state == "partial":  # stopped before its first checkpoint: start again, keep what it logged
            aside = set_aside(out / "timing", "incomplete")
            print(
                f"hpcqnn train: {out} has no checkpoint yet: starting it again"
                + (f" (its earlier timing logs are in {aside})" if aside else ""),
                flush=True,
            )
            return out, None
        kept["checkpoint"] = load_checkpoint(out / CHECKPOINT, config, qnn, kept["data"])
        return out, kept["checkpoint"].queries

    try:
        prepared, problem = on_root(prepare)
        if problem:  # the same on every rank
            raise HpcqnnError(problem)
        out, resume_at = prepared  # rank 0's choice, so every rank writes into the same run directory
        started = time.time()
        # on every rank: Slurm and mpiexec signal all tasks; workers serve until rank 0 stops
        with (
            StopRequest(announce=speaks_for_the_job()).installed() as stop,
            mpi_estimator(
                timing_dir=out, resume_at=resume_at, config_text=text, stop=stop, **estimator_options(config, qnn)
            ) as estimator,
        ):
            if estimator is None:
                return 0
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.toml").write_text(text)
            progress = Progress()
            devices = ", ".join(sorted(set(estimator.engine.rank_devices)))
            ranks = estimator.engine.size
            progress.line(f"hpcqnn train: {config.run.name} -> {out} ({ranks} rank{'s' * (ranks != 1)} on {devices})")
            results = train(config, qnn, kept["data"], estimator, out, kept.get("checkpoint"), stop, progress)
            stops = out / "stopped.json"  # every stop of the run, so that exit status 0 is not mistaken
            earlier = _earlier_stops(stops)
            if results is None:
                stopped = {"reason": stop.reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                write_json(stops, [*earlier, stopped])
                return 0
            results.update(run_metadata(config, estimator, time.time() - started), stops=earlier)
            write_json(out / "results.json", results)
            stops.unlink(missing_ok=True)  # its record now lives in results.json
            progress.line(f"test accuracy {results['final']['test_accuracy']:.3f}; wrote {out / 'results.json'}")
    finally:  # the lock goes with the process anyway; a caller of main in-process gets it back
        if kept.get("lock") is not None:
            os.close(kept["lock"])
        if "created" in kept:
            remove_if_empty(kept["created"])
    return 0


def _plan(args: argparse.Namespace) -> int:
    from hpcqnn.run.config import load_config
    from hpcqnn.run.runinfo import write_report
    from hpcqnn.tools.planner import format_report, plan_report

    config = load_config(args.config, args.set)
    try:
        ranks = parse_positive_int_list(args.ranks)
    except argparse.ArgumentTypeError as exc:
        raise ExecutionConfigError(f"--ranks: {exc}") from None
    report = plan_report(config, ranks)
    print(format_report(report), flush=True)
    write_report(args.json, report)
    return 0


def _earlier_stops(path: Path) -> list:
    """The stops recorded in ``path`` (stopped.json); a damaged record is set aside, not lost."""
    from hpcqnn.run.timelog import set_aside

    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        print(f"hpcqnn train: {path} could not be read: set aside as {set_aside(path, 'unreadable')}", flush=True)
        return []


def _bench(args: argparse.Namespace) -> int:
    from hpcqnn.execution.straggler import Straggler
    from hpcqnn.parallel.session import on_root
    from hpcqnn.run.directory import create_run_directory, require_new_directory
    from hpcqnn.run.runinfo import write_report
    from hpcqnn.tools.bench import HEADER, HEADER_NOTE, format_speedups, run_bench

    straggler = Straggler.unless_idle(
        args.straggler_ranks, args.straggler_probability, args.straggler_delay, args.straggler_slowdown, args.seed
    )

    def prepare(out: Path) -> None:
        require_new_directory(out)
        create_run_directory(out)  # now: a file system that refuses it is one message, not a traceback per rank

    _, problem = on_root(lambda: prepare(args.out) if args.out else None)
    if problem:  # the same on every rank
        raise HpcqnnError(problem)
    header = [HEADER_NOTE, HEADER]  # printed before the first row

    def progress(line: str) -> None:
        print(*header, line, sep="\n", flush=True)
        header.clear()

    report = run_bench(
        qubits=args.qubits,
        cuts=args.cuts,
        piece_qubits=args.piece_qubits,
        shots=args.shots,
        shot_allocation=args.shot_allocation,
        queries=args.queries,
        rows=args.rows,
        layers=args.layers,
        modes=args.modes,
        reference_queries=args.reference_queries,
        reference_max_qubits=args.reference_max_qubits,
        seed=args.seed,
        device=args.device,
        schedule=args.schedule,
        straggler=straggler,
        out=args.out,
        progress=progress,
    )
    if report is None:  # an MPI worker rank
        return 0
    speedups = format_speedups(report)
    if speedups:
        print(speedups)
    write_report(args.json or (args.out / "bench.json" if args.out else None), report)
    return 0


def _bench_shots(args: argparse.Namespace) -> int:
    from hpcqnn.run.runinfo import write_report
    from hpcqnn.tools.shotbench import HEADER, study

    print(HEADER, flush=True)
    results = study(
        args.qubits, args.cuts, args.shots, args.rows, args.repeats, args.seed, lambda line: print(line, flush=True)
    )
    write_report(args.json, results)
    return 0


def _bench_floor(args: argparse.Namespace) -> int:
    from hpcqnn.run.runinfo import provenance, write_report
    from hpcqnn.tools.floor import measure

    if min(args.qubits) < 2 or min(args.rows) < 1:
        raise HpcqnnError(f"--qubits must be >= 2 and --rows >= 1, got {args.qubits} and {args.rows}")
    results = measure(
        args.qubits, args.cuts, args.rows, args.queries, args.threads, args.seed,
        lambda line: print(line, flush=True), args.modes, args.shots,
    )
    write_report(args.json, {**provenance(), "results": results})
    return 0


def _bench_trainable(args: argparse.Namespace) -> int:
    from hpcqnn.run.runinfo import provenance, write_report
    from hpcqnn.tools.trainbench import measure

    results = measure(
        args.qubits, args.cuts, args.rows, args.queries, args.modes, args.shots, args.seed,
        lambda line: print(line, flush=True),
    )
    write_report(args.json, {**provenance(), "results": results})
    return 0


def _bench_noise(args: argparse.Namespace) -> int:
    from hpcqnn.run.runinfo import provenance, write_report
    from hpcqnn.tools.noisebench import measure

    results = measure(
        args.qubits, args.cuts, args.rows, args.queries, args.modes, args.shots, seed=args.seed,
        progress=lambda line: print(line, flush=True),
    )
    write_report(args.json, {**provenance(), "results": results})
    return 0


def _bench_noise_width(args: argparse.Namespace) -> int:
    from hpcqnn.run.runinfo import provenance, write_report
    from hpcqnn.tools.noisewidth import measure

    if any(w < 4 or w % 2 for w in args.widths):
        raise HpcqnnError(f"--widths must be even numbers >= 4 (two equal pieces), got {args.widths}")
    results = measure(args.widths, args.backend, args.cuts, args.shots, args.seed, lambda line: print(line, flush=True))
    write_report(args.json, {**provenance(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
