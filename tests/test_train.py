"""Training end to end: parameter-shift gradients against finite differences, cut runs against
their uncut baselines, SIGTERM + ``--resume`` against the uninterrupted run (1 rank and MPI),
hpcqnn inside qiskit-machine-learning, CLI refusals before any work, and what results.json holds.

Runs of ``hpcqnn train`` happen in this process through ``hpcqnn.cli.main`` (no interpreter
start-up per run); runs that must receive a real SIGTERM are subprocesses of
``tests/train_scripts/interrupt.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from bounded import clean_environment, mpi_command, run_bounded
from hpcqnn import DistributedEstimator, RunDirectoryError, cli
from hpcqnn.run.config import load_config
from hpcqnn.run.directory import CHECKPOINT, run_state
from hpcqnn.run.timelog import rank_file, read_timing
from hpcqnn.training.circuits import cut_qnn
from hpcqnn.training.data import load_dataset
from hpcqnn.training.loop import StopRequest, build_qnn, evaluate_robustness, load_data
from hpcqnn.training.model import QNNClassifier, bce_loss
from hpcqnn.training.optim import TrainState
from tolerances import FINITE_DIFFERENCE_ATOL, PROPAGATED_ATOL, ROUNDING_TOL

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
QUICK = JOBS / "iris_quick.toml"
SCRIPTS = Path(__file__).parent / "train_scripts"
JOB_TIMEOUT = 180.0

# iris_quick with 40 training examples in batches of 8: 5 steps per epoch, 2 epochs.
RESUME_SETS = (
    "training.epochs=2", "data.max_train=40", "training.batch_size=8", "evaluation.gaussian_draws=1",
)
MODE_SETS = {"exact": (), "sampled": ("execution.mode=sampled", "execution.shots=200")}
STEPS_PER_EPOCH = 5
# Tiny budget for the cut-vs-uncut runs (iris_cut3 subexperiments are the expensive part).
CUT_SETS = (
    "training.epochs=1", "data.max_train=24", "training.batch_size=8",
    "evaluation.gaussian_draws=1", "evaluation.gaussian_sigmas=[0.1, 0.3]", "evaluation.fgsm_epsilons=[0.1]",
)


# -- helpers -----------------------------------------------------------------------------------


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def train(config: Path, out: Path, *extra: str) -> int:
    """``hpcqnn train`` in this process; it leaves the signal handlers as it found them (tested)."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    code = cli.main(["train", str(config), "--out", str(out), *extra])
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    return code


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def launch(command: list[str], timeout: float = JOB_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``command`` (outside any MPI job of this process); fail the test if it hangs."""
    returncode, output = run_bounded(command, timeout, clean_environment(), merge_output=True, cwd=ROOT)
    return subprocess.CompletedProcess(command, returncode, output)


def interrupted(
    stop_at: int | str,
    config: Path,
    out: Path,
    extra: list[str],
    ranks: int | None = None,
    signame: str = "TERM",
    only: int | None = None,
):
    """A run whose every rank (or rank ``only``) receives SIG``signame`` during its
    ``stop_at``-th training step (``"fgsm"``: in the final evaluation, train/scripts/interrupt.py)."""
    when = f"{stop_at}:{signame}" + ("" if only is None else f"@{only}")
    command = [sys.executable, str(SCRIPTS / "interrupt.py"), when, "train", str(config), "--out", str(out), *extra]
    if ranks is not None:
        command = mpi_command(ranks, *command[1:])
    return launch(command)


def snapshot(directory: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below ``directory``."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*")) if p.is_file()
    }


def executed_queries(run_dir: Path, rank: int = 0) -> list[int]:
    rows, _ = read_timing(rank_file(run_dir, rank))
    return sorted(int(q) for q in rows["query"][rows["phase"] == "execute"])


# -- 1. gradients ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier():
    model = QNNClassifier(cut_qnn(4, cuts=2, layers=2, rotations="ry"), DistributedEstimator(partition_labels="AABB"))
    rng = np.random.default_rng(31)
    angles = rng.uniform(0, np.pi, (5, 4))
    y = np.array([0, 1, 1, 0, 1])
    theta = np.concatenate([rng.uniform(-np.pi, np.pi, model.num_weights), [1.7, -0.3]])
    return model, angles, y, theta


def test_loss_gradient_matches_finite_differences_in_one_query(classifier):
    model, angles, y, theta = classifier
    assert model.num_parameters == 8 + 2
    loss_of = lambda t: bce_loss(model.probabilities(angles, t), y)  # noqa: E731

    before = model.estimator.num_queries
    loss, grad = model.loss_and_gradient(angles, y, theta)
    assert model.estimator.num_queries == before + 1  # unshifted and all shifted rows: ONE query

    assert loss == pytest.approx(loss_of(theta), abs=ROUNDING_TOL)
    h = 1e-5
    steps = h * np.eye(len(theta))
    finite = np.array([(loss_of(theta + e) - loss_of(theta - e)) / (2 * h) for e in steps])
    assert np.abs(finite).max() > 1e-2  # a gradient worth comparing, scale and bias included
    assert np.all(np.abs(finite[-2:]) > 1e-3)
    np.testing.assert_allclose(grad, finite, rtol=0, atol=FINITE_DIFFERENCE_ATOL)


def test_input_gradient_matches_finite_differences_in_one_query(classifier):
    model, angles, y, theta = classifier

    def example_losses(a: np.ndarray) -> np.ndarray:  # each example's own BCE
        p = model.probabilities(a, theta)
        return np.array([bce_loss(p[i : i + 1], y[i : i + 1]) for i in range(len(y))])

    before = model.estimator.num_queries
    p, d_angle = model.input_gradient(angles, y, theta)
    assert model.estimator.num_queries == before + 1
    assert d_angle.shape == angles.shape
    np.testing.assert_allclose(p, model.probabilities(angles, theta), rtol=0, atol=ROUNDING_TOL)

    h = 1e-5
    finite = np.empty_like(angles)
    for j in range(angles.shape[1]):  # example i's loss depends on its own angles only
        shift = np.zeros_like(angles)
        shift[:, j] = h
        finite[:, j] = (example_losses(angles + shift) - example_losses(angles - shift)) / (2 * h)
    assert np.abs(finite).max() > 1e-2
    np.testing.assert_allclose(d_angle, finite, rtol=0, atol=FINITE_DIFFERENCE_ATOL)


# -- 2. cut runs equal their uncut baselines ----------------------------------------------------


@pytest.mark.parametrize("cuts", [1, 2, 3])
def test_cut_run_matches_uncut_run(cuts, tmp_path, capsys):
    config = JOBS / f"iris_cut{cuts}.toml"
    runs = {}
    for cutting in ("true", "false"):
        out = tmp_path / f"cutting-{cutting}"
        assert train(config, out, *sets(*CUT_SETS, f"execution.cutting={cutting}")) == 0, capsys.readouterr()
        runs[cutting] = results(out)
        generated, _ = read_timing(rank_file(out, 0))
        runs[cutting]["subexperiments"] = int(generated["n_circuits"][generated["phase"] == "generate"].sum())
    cut, uncut = runs["true"], runs["false"]

    # the cut run really cut (and the baseline did not)
    assert cut["model"]["partition_labels"] == "AABB" and uncut["model"]["partition_labels"] is None
    assert cut["model"]["cuts"] == uncut["model"]["cuts"] == cuts
    assert cut["subexperiments"] > 1 and uncut["subexperiments"] == 1

    assert cut["budget"]["initial_parameters"] == uncut["budget"]["initial_parameters"]
    np.testing.assert_allclose(
        cut["final"]["test_probabilities"], uncut["final"]["test_probabilities"], rtol=0, atol=PROPAGATED_ATOL
    )
    np.testing.assert_allclose(cut["final"]["parameters"], uncut["final"]["parameters"], rtol=0, atol=PROPAGATED_ATOL)
    assert cut["final"]["parameters"] != cut["budget"]["initial_parameters"]  # it trained
    for a, b in zip(cut["history"], uncut["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=PROPAGATED_ATOL)
        assert (a["train_accuracy"], a["test_accuracy"]) == (b["train_accuracy"], b["test_accuracy"])
    assert cut["robustness"] == uncut["robustness"]


# -- 3./4. SIGTERM + --resume is bit-identical ---------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted reference run of each mode (built on first use)."""
    runs: dict[str, Path] = {}

    def get(mode: str) -> Path:
        if mode not in runs:
            out = tmp_path_factory.mktemp(f"uninterrupted-{mode}") / "run"
            assert train(QUICK, out, *sets(*RESUME_SETS, *MODE_SETS[mode])) == 0
            runs[mode] = out
        return runs[mode]

    return get


def check_stopped(job, out: Path, stop_at: int, reason: str = "SIGTERM") -> TrainState:
    """The preempted run exited cleanly with a checkpoint right after step ``stop_at`` and no
    results (mid-epoch, or after the epoch's evaluation when that step ended an epoch)."""
    assert job.returncode == 0, job.stdout
    assert f"{reason}: checkpoint written" in job.stdout and "rerun with --resume" in job.stdout, job.stdout
    assert (out / CHECKPOINT).exists() and (out / "config.toml").exists()
    assert not (out / "results.json").exists()
    assert json.loads((out / "stopped.json").read_text())[-1]["reason"] == reason  # exit status 0, yet seen
    state = TrainState.load(out / CHECKPOINT)
    assert (state.epoch, state.step) == divmod(stop_at, STEPS_PER_EPOCH)
    assert len(state.history) == state.epoch
    assert (state.test_probabilities is None) == (state.epoch == 0)  # kept from the last finished epoch
    where = "after the epoch" if state.step == 0 else f"at epoch {state.epoch + 1} step {state.step}"
    assert f"checkpoint written {where}" in job.stdout, job.stdout
    return state


def check_same_run(resumed: dict, reference: dict) -> None:
    assert resumed["final"]["parameters"] == reference["final"]["parameters"]  # bit-identical
    assert resumed["final"]["test_probabilities"] == reference["final"]["test_probabilities"]
    assert len(resumed["history"]) == len(reference["history"])
    for a, b in zip(resumed["history"], reference["history"]):
        for key in ("epoch", "loss", "train_accuracy", "test_accuracy", "queries"):
            assert a[key] == b[key], key
    assert resumed["robustness"] == reference["robustness"]
    assert resumed["budget"]["queries"] == reference["budget"]["queries"]


@dataclass
class Resumed:
    out: Path  # the run directory
    state: TrainState  # the checkpoint the SIGTERM left
    printed: str  # the resumed run's stdout


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Per (mode, stop_at): a run stopped by SIGTERM during step ``stop_at`` (checked) and then
    resumed to the end (built on first use)."""
    runs: dict[tuple[str, int], Resumed] = {}

    def get(mode: str, stop_at: int) -> Resumed:
        if (mode, stop_at) not in runs:
            extra = sets(*RESUME_SETS, *MODE_SETS[mode])
            out = tmp_path_factory.mktemp(f"resumed-{mode}-{stop_at}") / "run"
            state = check_stopped(interrupted(stop_at, QUICK, out, extra), out, stop_at)
            with redirect_stdout(io.StringIO()) as printed:
                assert train(QUICK, out, *extra, "--resume") == 0
            runs[mode, stop_at] = Resumed(out, state, printed.getvalue())
        return runs[mode, stop_at]

    return get


@pytest.mark.parametrize("mode, stop_at", [("exact", 7), ("sampled", 3), ("sampled", STEPS_PER_EPOCH)])
def test_resume_after_sigterm_is_bit_identical(mode, stop_at, uninterrupted, resumed):
    reference_dir = uninterrupted(mode)
    run = resumed(mode, stop_at)
    state = run.state
    # the checkpoint holds the estimator's query counter: steps so far + 2 evaluations per epoch
    assert state.queries == stop_at + 2 * state.epoch

    assert f"resuming at epoch {state.epoch + 1} step {state.step}" in run.printed
    check_same_run(results(run.out), results(reference_dir))
    assert [stop["reason"] for stop in results(run.out)["stops"]] == ["SIGTERM"]
    assert results(reference_dir)["stops"] == [] and not (run.out / "stopped.json").exists()
    # the timing log was continued, with query numbers carrying on from the checkpoint
    assert executed_queries(run.out) == list(range(len(executed_queries(run.out))))
    assert executed_queries(run.out) == executed_queries(reference_dir)


def test_resume_after_the_last_epoch_reports_its_test_probabilities(uninterrupted, tmp_path):
    """A run killed after its last epoch's checkpoint, before results.json, finishes as the
    uninterrupted run: the final test probabilities are the checkpoint's (sampled mode: queried
    again, their shots would differ)."""
    out = tmp_path / "run"
    shutil.copytree(uninterrupted("sampled"), out)
    (out / "results.json").unlink()
    assert train(QUICK, out, *sets(*RESUME_SETS, *MODE_SETS["sampled"]), "--resume") == 0
    check_same_run(results(out), results(uninterrupted("sampled")))


def test_checkpoint_without_test_probabilities_queries_them(uninterrupted, tmp_path):
    """A last-epoch checkpoint of an hpcqnn that did not keep the test probabilities still
    finishes: one more query (exact mode: the same probabilities)."""
    out = tmp_path / "run"
    shutil.copytree(uninterrupted("exact"), out)
    (out / "results.json").unlink()
    state = TrainState.load(out / CHECKPOINT)
    state.test_probabilities = None
    state.save(out / CHECKPOINT)
    assert "test_probabilities" not in np.load(out / CHECKPOINT).files
    assert train(QUICK, out, *sets(*RESUME_SETS), "--resume") == 0
    resumed, reference = results(out), results(uninterrupted("exact"))
    assert resumed["final"] == reference["final"] and resumed["robustness"] == reference["robustness"]
    assert resumed["budget"]["queries"] == reference["budget"]["queries"] + 1


def test_stop_in_the_final_evaluation_resumes_to_the_same_results_and_logs_each_query_once(uninterrupted, tmp_path):
    """Stopped in the final evaluation, the run keeps its last-epoch checkpoint; the resumed run
    redoes the evaluation under the same query numbers, and the timing log holds each query
    once in ``phases`` (the discarded evaluation queries are kept in ``superseded``)."""
    extra = sets(*RESUME_SETS)
    out = tmp_path / "run"
    job = interrupted("fgsm", QUICK, out, extra)
    assert job.returncode == 0 and "SIGTERM: stopped in the final evaluation" in job.stdout, job.stdout
    assert not (out / "results.json").exists() and TrainState.load(out / CHECKPOINT).epoch == 2
    with redirect_stdout(io.StringIO()) as printed:
        assert train(QUICK, out, *extra, "--resume") == 0
    assert "resuming after the last epoch: the final evaluation again" in printed.getvalue()
    check_same_run(results(out), results(uninterrupted("exact")))
    assert executed_queries(out) == list(range(results(out)["budget"]["queries"]))
    with h5py.File(rank_file(out, 0), "r") as f:
        assert len(f["superseded"]) > 0
    # the phase summary covers the whole run, not only the resumed part
    assert results(out)["query_phases"]["queries"] == results(out)["budget"]["queries"]


def test_a_damaged_timing_log_is_set_aside_said_and_recorded_on_every_resume(uninterrupted, tmp_path, capsys):
    """Resumed twice over a damaged rank-0 log: both damaged files are kept, rank 0 says so,
    and results.json lists them (its query_phases then cover fewer queries)."""
    out = tmp_path / "run"
    shutil.copytree(uninterrupted("exact"), out)
    for n in (1, 2):
        (out / "results.json").unlink()
        rank_file(out, 0).write_bytes(f"damage {n}".encode())
        assert train(QUICK, out, *sets(*RESUME_SETS), "--resume") == 0
        aside = out / "timing" / f"rank-00000.h5.unreadable-{n}"
        assert f"could not be read and was set aside as {aside}" in capsys.readouterr().err
        assert results(out)["timing_logs_set_aside"] == [str(aside)]
    assert [(out / "timing" / f"rank-00000.h5.unreadable-{n}").read_bytes() for n in (1, 2)] == [
        b"damage 1", b"damage 2"
    ]


@pytest.mark.mpi
def test_resume_on_another_rank_count_keeps_each_counts_logs_apart(uninterrupted, tmp_path):
    """Stopped on 1 rank, resumed on 2: same results; the 1-rank logs move to timing.ranks1-1 and
    the new logs all say size 2."""
    extra = sets(*RESUME_SETS)
    out = tmp_path / "run"
    check_stopped(interrupted(3, QUICK, out, extra), out, 3)
    job = launch(mpi_command(2, "-m", "hpcqnn.cli", "train", QUICK, "--out", out, *extra, "--resume"))
    assert (
        job.returncode == 0 and f"the timing logs of the earlier ranks are in {out / 'timing.ranks1-1'}" in job.stdout
    ), job.stdout
    check_same_run(results(out), results(uninterrupted("exact")))
    assert sorted(p.name for p in (out / "timing.ranks1-1").iterdir()) == ["rank-00000.h5"]
    assert [read_timing(rank_file(out, rank))[1]["size"] for rank in (0, 1)] == [2, 2]
    assert executed_queries(out)[0] == 3  # the 2-rank logs start where the checkpoint resumed


def test_interrupt_outside_the_training_loop_exits_130_without_a_traceback(monkeypatch, tmp_path, capsys):
    def interrupted_load(config):
        raise KeyboardInterrupt

    monkeypatch.setattr("hpcqnn.training.loop.load_data", interrupted_load)
    assert train(QUICK, tmp_path / "run", *sets(*RESUME_SETS)) == 130
    assert capsys.readouterr().err.strip() == "hpcqnn: interrupted"


def test_out_that_cannot_be_created_exits_2(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert train(QUICK, tmp_path / "afile" / "run", *sets(*RESUME_SETS)) == 2
    assert (
        f"cannot create the run directory {tmp_path / 'afile' / 'run'}: {tmp_path / 'afile'} is a file"
        in capsys.readouterr().err
    )


def test_resumed_results_keep_initial_parameters(uninterrupted, resumed):
    run = resumed("exact", 7)  # the resume test's run
    initial = results(uninterrupted("exact"))["budget"]["initial_parameters"]
    assert run.state.theta.tolist() != initial  # the resumed run started elsewhere
    assert results(run.out)["budget"]["initial_parameters"] == initial


@pytest.mark.mpi
@pytest.mark.parametrize("signame, reason", [("TERM", "SIGTERM"), ("INT", "Ctrl-C")])
def test_resume_under_mpi_matches_one_rank_run(signame, reason, uninterrupted, tmp_path):
    """Slurm's SIGTERM and mpiexec's Ctrl-C (SIGINT to every rank) both stop the job after the
    step with a checkpoint, said once; the resumed run is the uninterrupted one."""
    extra = sets(*RESUME_SETS)
    out = tmp_path / "run"
    stop_at = 3
    stopped = interrupted(stop_at, QUICK, out, extra, ranks=2, signame=signame)
    check_stopped(stopped, out, stop_at, reason)
    assert stopped.stdout.count("hpcqnn: Ctrl-C: stopping after this training step") == (signame == "INT"), (
        stopped.stdout
    )
    job = launch(mpi_command(2, "-m", "hpcqnn.cli", "train", QUICK, "--out", out, *extra, "--resume"))
    assert job.returncode == 0, job.stdout
    assert "resuming at epoch 1 step 3" in job.stdout
    resumed = results(out)
    assert resumed["ranks"] == 2
    assert rank_file(out, 1).exists()
    check_same_run(resumed, results(uninterrupted("exact")))
    # both ranks logged every query exactly once across the stop
    assert executed_queries(out, 0) == executed_queries(out, 1) == list(range(len(executed_queries(out, 0))))


@pytest.mark.mpi
def test_sigterm_to_a_worker_alone_stops_the_job_as_for_rank_0(uninterrupted, tmp_path):
    """Slurm or a user may signal one worker: it used to be ignored silently. Rank 0 hears of it
    with the query it arrived in, says so, and stops after that step with a checkpoint."""
    extra = sets(*RESUME_SETS)
    out = tmp_path / "run"
    stopped = interrupted(3, QUICK, out, extra, ranks=2, only=1)
    check_stopped(stopped, out, 3)
    assert stopped.stdout.count("hpcqnn: rank 1 received SIGTERM: the job stops after this training step") == 1


# -- 5. hpcqnn inside qiskit-machine-learning ----------------------------------------------------


def test_qiskit_machine_learning_classifier_trains_on_iris():
    from qiskit_machine_learning.algorithms.classifiers import NeuralNetworkClassifier
    from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient
    from qiskit_machine_learning.neural_networks import EstimatorQNN
    from qiskit_machine_learning.optimizers import COBYLA

    data = load_dataset("iris", (1, 2), 4, 0.2, 2026, None, 24)
    x, y = data.angles(data.x_train), 2 * data.y_train - 1  # labels +-1: sign of <ZZZZ>
    x_test, y_test = data.angles(data.x_test), 2 * data.y_test - 1
    model = cut_qnn(4, cuts=2, layers=2, rotations="ry")
    estimator = DistributedEstimator(partition_labels=model.partition_labels)
    qnn = EstimatorQNN(
        circuit=model.circuit, observables=model.observable, input_params=list(model.inputs),
        weight_params=list(model.weights), estimator=estimator,
        gradient=ParamShiftEstimatorGradient(estimator), default_precision=0.0,
    )
    w0 = np.random.default_rng(0).uniform(-np.pi, np.pi, qnn.num_weights)
    losses = []
    classifier = NeuralNetworkClassifier(
        qnn, optimizer=COBYLA(maxiter=20), loss="squared_error", initial_point=w0,
        callback=lambda weights, value: losses.append(value),
    )

    def score(weights, features, labels) -> float:
        return float(np.mean(np.sign(qnn.forward(features, weights).ravel()) == labels))

    initial = score(w0, x, y)
    before = estimator.num_queries
    classifier.fit(x, y)
    assert estimator.num_queries - before >= len(losses) >= 10  # the objective ran on hpcqnn
    assert min(losses) < losses[0]
    assert classifier.score(x, y) > initial and classifier.score(x, y) >= 0.75
    assert classifier.score(x_test, y_test) >= 0.6
    # the EstimatorQNN's parameter-shift gradient (through hpcqnn) matches finite differences
    _, d_weights = qnn.backward(x[:3], classifier.weights)
    h = 1e-5
    for k in (0, qnn.num_weights - 1):
        e = np.zeros(qnn.num_weights)
        e[k] = h
        finite = (qnn.forward(x[:3], classifier.weights + e) - qnn.forward(x[:3], classifier.weights - e)).ravel() / (
            2 * h
        )
        np.testing.assert_allclose(d_weights[:, 0, k], finite, rtol=0, atol=FINITE_DIFFERENCE_ATOL)


# -- 6. the CLI refuses bad requests before any work -------------------------------------------


def test_unknown_config_key_exits_2_and_names_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(QUICK, out, *sets("model.depth=3")) == 2
    err = capsys.readouterr().err
    assert "model.depth" in err and "unknown key" in err
    assert not out.exists()


def test_an_empty_config_or_a_name_outside_runs_exits_2_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.toml").write_text("")
    assert cli.main(["train", "empty.toml"]) == 2
    assert "empty.toml: the config sets no run.name" in capsys.readouterr().err
    assert cli.main(["train", str(QUICK), *sets("run.name=../escape")]) == 2
    assert "run.name must be a plain name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.toml"]


def test_non_empty_out_without_resume_exits_2_and_is_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("precious\n")
    (out / "timing").mkdir()
    before = snapshot(out)
    listing = sorted(p.name for p in out.rglob("*"))
    assert train(QUICK, out, *sets(*RESUME_SETS)) == 2
    err = capsys.readouterr().err
    assert f"{out} is not empty and holds no run: give another --out" in err
    assert snapshot(out) == before and sorted(p.name for p in out.rglob("*")) == listing


def test_robustness_evaluation_stops_when_asked_before_its_next_query():
    """A stop requested in the final evaluation ends it before its next query (resume redoes it)."""
    config = load_config(QUICK, [*RESUME_SETS, "evaluation.fgsm_epsilons=[0.1]"])
    qnn = build_qnn(config)
    model = QNNClassifier(qnn, DistributedEstimator(partition_labels=qnn.partition_labels))
    data, theta = load_data(config), model.initial_theta(np.random.default_rng(0))
    stop = StopRequest(announce=False)
    evaluated = evaluate_robustness(model, data, theta, config, stop)
    sigmas = config.evaluation.gaussian_sigmas
    assert [g["sigma"] for g in evaluated["gaussian"]] == list(sigmas) and len(evaluated["fgsm"]) == 1
    queries = model.estimator.num_queries
    assert queries == len(sigmas) + 2  # one per sigma, the input gradient, one per epsilon
    stop.reason = "SIGTERM"
    assert evaluate_robustness(model, data, theta, config, stop) is None
    assert model.estimator.num_queries == queries

    class StopAtSecondCheck(StopRequest):
        checks = 0

        @property
        def requested(self) -> bool:
            self.checks += 1
            return self.checks >= 2

    assert evaluate_robustness(model, data, theta, config, StopAtSecondCheck(announce=False)) is None
    assert model.estimator.num_queries == queries + 1  # the first sigma's query, then the stop


@pytest.mark.parametrize(
    "make, message",
    [
        (None, "holds no run to continue (no config.toml)"),
        (lambda out: (out / "notes.txt").write_text("precious\n"), "holds no run to continue (no config.toml)"),
        (lambda out: (out / "config.toml").write_text('[run]\nname = "other"\n'), 'run.name = "other" -> "iris_quick"'),
    ],
    ids=["absent", "other-files", "other-config"],
)
def test_resume_without_a_matching_run_exits_2_and_is_untouched(make, message, tmp_path, capsys):
    out = tmp_path / "run"
    if make:
        out.mkdir()
        make(out)
    before = snapshot(out) if make else None
    assert train(QUICK, out, *sets(*RESUME_SETS), "--resume") == 2
    err = capsys.readouterr().err
    assert message in err and str(out) in err
    assert (snapshot(out) == before) if make else not out.exists()


@pytest.mark.parametrize(
    "state, message",
    [("finished", "holds a finished run (results.json): give another --out"),
     ("stopped", "holds a stopped run: continue it with --resume, or give another --out"),
     ("partial", "holds a training run stopped before its first checkpoint: --resume starts it again there"),
     ("file", "is a file, not a run directory")],
)
def test_out_that_is_not_new_says_what_it_holds(state, message, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    if state == "file":
        out.write_text("x")
    else:
        shutil.copytree(uninterrupted("exact"), out)
        if state != "finished":
            (out / "results.json").unlink()
        if state == "partial":
            (out / CHECKPOINT).unlink()
    assert train(QUICK, out, *sets(*RESUME_SETS)) == 2
    assert message in capsys.readouterr().err


def test_resume_before_the_first_checkpoint_starts_the_run_again(uninterrupted, tmp_path, capsys):
    """A run killed before its first checkpoint left config.toml and timing logs: --resume
    sets the logs aside and runs it from the start, to the uninterrupted run's results."""
    out = tmp_path / "run"
    reference = uninterrupted("exact")
    (out / "timing").mkdir(parents=True)
    shutil.copy(reference / "config.toml", out / "config.toml")
    shutil.copy(rank_file(reference, 0), rank_file(out, 0))
    killed = snapshot(out / "timing")
    assert train(QUICK, out, *sets(*RESUME_SETS), "--resume") == 0
    assert "has no checkpoint yet: starting it again" in capsys.readouterr().out
    assert snapshot(out / "timing.incomplete-1") == killed
    check_same_run(results(out), results(reference))
    assert executed_queries(out) == list(range(len(executed_queries(out))))


def test_resume_with_changed_config_exits_2(uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted("exact"), out)
    (out / "results.json").unlink()  # a stopped run (a finished one is refused as finished)
    before = snapshot(out)
    changed = [item.replace("epochs=2", "epochs=3") for item in RESUME_SETS]
    assert train(QUICK, out, *sets(*changed), "--resume") == 2
    err = capsys.readouterr().err
    assert "--resume: the resolved config differs" in err and "training.epochs = 2 -> 3" in err
    assert snapshot(out) == before


def test_resume_of_a_finished_run_exits_2(uninterrupted, capsys):
    out = uninterrupted("exact")
    before = snapshot(out)
    assert train(QUICK, out, *sets(*RESUME_SETS), "--resume") == 2
    assert "already finished (results.json exists)" in capsys.readouterr().err
    assert snapshot(out) == before


@pytest.mark.mpi
def test_a_bad_config_under_mpi_is_said_once(tmp_path):
    job = launch(mpi_command(3, "-m", "hpcqnn.cli", "train", QUICK, "--out", tmp_path / "run", *sets("model.depth=3")))
    assert job.returncode != 0
    assert job.stdout.count("hpcqnn: error:") == 1 and "model.depth" in job.stdout, job.stdout
    assert not (tmp_path / "run").exists()


# -- 7. what a finished run records --------------------------------------------------------------


def test_results_json_records_the_run(uninterrupted):
    out = uninterrupted("exact")
    r = results(out)
    config = r["config"]
    assert config["training"]["epochs"] == 2 and config["data"]["max_train"] == 40
    assert config["training"]["batch_size"] == 8 and config["run"]["seed"] == 2026
    assert (out / "config.toml").exists() and rank_file(out, 0).exists()
    assert (out / "config.toml").read_text().startswith("[run]")
    _, attributes = read_timing(rank_file(out, 0))
    assert attributes["config"] == (out / "config.toml").read_text()

    assert "iris" in r["dataset"] and "40 train" in r["dataset"]
    model = r["model"]
    assert (model["qubits"], model["layers"], model["cuts"]) == (4, 3, 1)
    assert model["observable"] == "ZZZZ" and "RY" in model["encoding"]

    budget = r["budget"]
    assert (budget["epochs"], budget["batch_size"], budget["seed"]) == (2, 8, 2026)
    assert budget["steps_per_epoch"] == STEPS_PER_EPOCH
    assert len(budget["initial_parameters"]) == len(r["final"]["parameters"]) == model["weights"] + 2
    # per epoch its steps and the train and test evaluations; then one query per Gaussian sigma (its
    # draws together), one FGSM input gradient and one per epsilon; the final test probabilities are
    # the last epoch's (no query of their own)
    assert budget["queries"] == 2 * (STEPS_PER_EPOCH + 2) + 4 + 1 + 3
    assert budget["initial_parameters"][-2:] == [1.0, 0.0]

    assert [h["epoch"] for h in r["history"]] == [1, 2]
    for h in r["history"]:
        assert 0 <= h["train_accuracy"] <= 1 and 0 <= h["test_accuracy"] <= 1
    assert r["final"]["test_accuracy"] == r["history"][-1]["test_accuracy"]
    p = np.array(r["final"]["test_probabilities"])
    assert np.all((p > 0) & (p < 1))
    # the recorded accuracy is that of the recorded probabilities on the run's test split
    data = load_dataset("iris", (1, 2), 4, 0.2, 2026, None, 40)
    assert f"{len(data.y_train)} train / {len(data.y_test)} test" in r["dataset"]
    assert r["final"]["test_accuracy"] == np.mean((p > 0.5) == (data.y_test == 1))

    robustness = r["robustness"]
    assert (
        [g["sigma"] for g in robustness["gaussian"]] == config["evaluation"]["gaussian_sigmas"] == [0.05, 0.1, 0.2, 0.3]
    )
    assert [f["epsilon"] for f in robustness["fgsm"]] == config["evaluation"]["fgsm_epsilons"] == [0.05, 0.1, 0.2]
    for g in robustness["gaussian"]:
        assert 0 <= g["accuracy_mean"] <= 1 and g["accuracy_std"] == 0  # one draw
    for f in robustness["fgsm"]:
        assert 0 <= f["accuracy"] <= 1

    assert r["query_phases"]["queries"] > 0 and "execute" in r["query_phases"]["phase_share_median"]
    assert r["budget"]["queries"] == r["query_phases"]["queries"]  # every query of the run counted
    assert r["ranks"] == 1 and r["device"] in ("CPU", "GPU")
    assert r["versions"]["hpcqnn"] and r["versions"]["qiskit"]


def test_run_state_agrees_with_the_job_scripts(uninterrupted, tmp_path):
    """run_state and slurm/launch.sh's hpcqnn_run_state read a run directory alike (the
    scripts fold partial runs and other files into their 'partial', and see a file as 'new')."""
    reference = uninterrupted("exact")
    dirs = {"new": tmp_path / "absent", "finished": reference}
    for state, drop in (("stopped", ["results.json"]), ("partial", ["results.json", CHECKPOINT])):
        dirs[state] = tmp_path / state
        shutil.copytree(reference, dirs[state])
        for name in drop:
            (dirs[state] / name).unlink()
    dirs["occupied"] = tmp_path / "occupied"
    dirs["occupied"].mkdir()
    (dirs["occupied"] / "notes.txt").write_text("x")
    dirs["file"] = tmp_path / "file"
    dirs["file"].write_text("x")
    script = f'source {ROOT / "slurm" / "launch.sh"}; for d in "$@"; do hpcqnn_run_state "$d"; done'
    shell = subprocess.run(
        ["bash", "-c", script, "-", *map(str, dirs.values())], capture_output=True, text=True, check=True
    )
    assert [run_state(path) for path in dirs.values()] == list(dirs)
    folded = {"occupied": "partial", "file": "new"}
    assert shell.stdout.split() == [folded.get(state, state) for state in dirs]


# -- 7. a stopped run that cannot be continued says why, by name ------------------------------


def stopped_copy(uninterrupted, tmp_path: Path) -> Path:
    """The exact reference run as if stopped after its last epoch's checkpoint."""
    out = tmp_path / "run"
    shutil.copytree(uninterrupted("exact"), out)
    (out / "results.json").unlink()
    return out


def rewrite_checkpoint(path: Path, **changes) -> None:
    """Save the checkpoint at ``path`` again with arrays replaced (None: left out)."""
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    np.savez(path, **{name: value for name, value in arrays.items() if value is not None})


DAMAGES = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "random-bytes": lambda path: path.write_bytes(np.random.default_rng(3).bytes(4096)),
    "empty": lambda path: path.write_bytes(b""),
    "missing-key": lambda path: rewrite_checkpoint(path, adam_v=None),
    "wrong-shape": lambda path: rewrite_checkpoint(path, theta=np.zeros(3)),
    "nan-parameters": lambda path: rewrite_checkpoint(path, theta=np.full_like(np.load(path)["theta"], np.nan)),
}


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated", "is not a readable checkpoint (BadZipFile"),
        ("random-bytes", "is not a readable checkpoint ("),
        ("empty", "is not a readable checkpoint (EOFError"),
        ("missing-key", "is not a readable checkpoint (KeyError: 'adam_v"),
        ("wrong-shape", "does not fit this run: theta has shape (3,), expected (14,)"),
        ("nan-parameters", "does not fit this run: theta holds non-finite values (NaN or inf)"),
    ],
)
def test_a_damaged_checkpoint_is_refused_by_name_before_any_work(damage, message, uninterrupted, tmp_path, capsys):
    out = stopped_copy(uninterrupted, tmp_path)
    DAMAGES[damage](out / CHECKPOINT)
    before = snapshot(out)
    assert train(QUICK, out, *sets(*RESUME_SETS), "--resume") == 2
    err = capsys.readouterr().err
    assert f"hpcqnn: error: {out / CHECKPOINT} {message}" in err and err.count("\n") == 1, err
    assert snapshot(out) == before


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(monkeypatch, tmp_path, capsys):
    """A NaN loss in epoch 2 (step 7): the error names it, and the checkpoint of epoch 1 stands."""
    original = QNNClassifier.loss_and_gradient
    calls = []

    def diverging(self, *args):
        calls.append(1)
        loss, grad = original(self, *args)
        return (np.nan, grad * np.nan) if len(calls) == 7 else (loss, grad)

    monkeypatch.setattr(QNNClassifier, "loss_and_gradient", diverging)
    out = tmp_path / "run"
    assert train(QUICK, out, *sets(*RESUME_SETS)) == 2
    assert "training diverged at epoch 2 step 2: loss nan" in capsys.readouterr().err
    state = TrainState.load(out / CHECKPOINT)
    assert (state.epoch, state.step) == (1, 0) and np.all(np.isfinite(state.theta))
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("flag", [(), ("--resume",)], ids=["new", "resume"])
@pytest.mark.parametrize("broken", ["missing", "invalid"])
def test_a_stopped_run_without_its_config_says_so_with_or_without_resume(flag, broken, uninterrupted, tmp_path, capsys):
    out = stopped_copy(uninterrupted, tmp_path)
    if broken == "missing":
        (out / "config.toml").unlink()
    else:
        (out / "config.toml").write_text("[run\n")
    assert train(QUICK, out, *sets(*RESUME_SETS), *flag) == 2
    err = capsys.readouterr().err
    assert f"{out} holds a stopped run whose config.toml is {'missing' if broken == 'missing' else 'unreadable'}" in err
    assert "--resume" not in err.replace("(--resume compares", ""), err  # it points nowhere else


def test_a_run_directory_in_use_is_refused_and_a_run_holds_its_own(uninterrupted, tmp_path, capsys, monkeypatch):
    """--resume against a run still training (here: a process holding the directory) is refused;
    a training run holds its directory while it trains."""
    from hpcqnn.run.directory import lock_run_directory

    out = stopped_copy(uninterrupted, tmp_path)
    held = lock_run_directory(out)
    assert train(QUICK, out, *sets(*RESUME_SETS), "--resume") == 2
    assert f"{out} is in use by another hpcqnn process" in capsys.readouterr().err
    os.close(held)
    original = QNNClassifier.input_gradient  # the final evaluation: the resumed run is training

    def check_locked(self, *args):
        with pytest.raises(RunDirectoryError, match="is in use by another hpcqnn process"):
            lock_run_directory(out)
        return original(self, *args)

    monkeypatch.setattr(QNNClassifier, "input_gradient", check_locked)
    assert train(QUICK, out, *sets(*RESUME_SETS), "--resume") == 0
    os.close(lock_run_directory(out))  # released when the run ended


def test_out_on_a_file_system_that_refuses_it_exits_2_before_any_rank_works(capsys):
    """The writability check passes as root under /proc; creating the directory does not."""
    for command in (["train", str(QUICK), *sets(*RESUME_SETS)], ["bench", "--qubits", "4", "--queries", "1"]):
        assert cli.main([*command, "--out", "/proc/hpcqnn-out"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hpcqnn: error: cannot create the run directory /proc/hpcqnn-out: "), err
        assert err.count("\n") == 1, err
