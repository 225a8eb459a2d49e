"""Training and evaluation of the QNN classifier, with checkpoints that resume bit-identically.

Runs on rank 0 (the estimator does the distributed work). The training state — parameters,
optimiser moments, the random generator, the epoch's permutation, the position inside it, the
estimator's query counter (which seeds sampled-mode shots) and the last epoch's test-set
probabilities (``results.json`` reports them; no query repeats them) — is written atomically
after every epoch and when SIGTERM asks the run to stop (Slurm preemption), so ``--resume``
continues exactly where it stopped.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hpcqnn.errors import CheckpointError, ConfigError, TrainingDivergedError
from hpcqnn.run.config import Config
from hpcqnn.run.directory import CHECKPOINT
from hpcqnn.training.circuits import CutQNN, built_model, cut_qnn
from hpcqnn.training.data import Dataset, load_dataset
from hpcqnn.training.model import QNNClassifier, bce_loss
from hpcqnn.training.optim import TrainState, adam_step, spsa_step


class StopRequest:
    """Set by SIGTERM (Slurm's preemption and time-limit signal) or a first Ctrl-C; training
    checks it between steps (and the final evaluation between queries) and stops with a
    checkpoint. A second Ctrl-C interrupts at once.

    ``announce`` says on stderr, when the first Ctrl-C arrives, what will happen (one process
    of a job should: MPICH's mpiexec passes a first Ctrl-C to every rank)."""

    NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}

    def __init__(self, announce: bool = True) -> None:
        self.reason = ""  # the first signal that asked to stop, as NAMES says it
        self.signum = 0  # that signal's number, which an MPI worker passes on to rank 0 (0: none)
        self.announce = announce
        self._interrupts = 0

    @property
    def requested(self) -> bool:
        return bool(self.reason)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle the signals inside the block; the previous handlers come back after it."""
        previous = {signum: signal.signal(signum, self._handle) for signum in self.NAMES}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def relay(self, signum: int, rank: int) -> None:
        """Rank 0: MPI worker ``rank`` received ``signum``; unless this process was signalled
        itself (Slurm and mpiexec signal every rank), the job stops as for a signal here, and
        says which rank was signalled."""
        if self.reason:
            return
        name = self.NAMES.get(signal.Signals(signum), signal.Signals(signum).name)
        self.reason, self.signum = name, signum
        if self.announce:
            sys.stderr.write(f"hpcqnn: rank {rank} received {name}: the job stops after this training step\n")
            sys.stderr.flush()

    def _handle(self, signum, frame) -> None:
        self.reason = self.reason or self.NAMES[signum]
        self.signum = self.signum or signum
        if signum != signal.SIGINT:
            return
        self._interrupts += 1
        if self._interrupts > 1:
            raise KeyboardInterrupt
        if self.announce:
            sys.stderr.write(
                ("\n" if sys.stdout.isatty() else "")
                + "hpcqnn: Ctrl-C: stopping after this training step or evaluation query (--resume "
                "continues from the checkpoint); Ctrl-C again stops at once\n"
            )
            sys.stderr.flush()


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p > 0.5) == (y == 1)))


class Progress:
    """Rank-0 progress: a live line on a terminal, one line per epoch always."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()

    def step(self, text: str) -> None:
        if self.live:
            self.stream.write("\r" + text.ljust(100))
            self.stream.flush()

    def line(self, text: str) -> None:
        self.stream.write(("\r" if self.live else "") + text.ljust(100 if self.live else 0) + "\n")
        self.stream.flush()


def estimator_options(config: Config, qnn: CutQNN) -> dict:
    """Keyword arguments of ``mpi_estimator`` for this run of ``qnn`` (``build_qnn(config)``)."""
    from hpcqnn.execution.straggler import Straggler

    ex = config.execution
    straggler = Straggler.unless_idle(
        ex.straggler_ranks, ex.straggler_probability, ex.straggler_delay, ex.straggler_slowdown, config.run.seed
    )
    return {
        "partition_labels": qnn.partition_labels if ex.cutting else None,
        "shots": ex.shots if ex.mode == "sampled" else None,
        "shot_allocation": ex.shot_allocation,
        "seed": config.run.seed,
        "device": ex.device,
        "schedule": ex.schedule,
        "straggler": straggler,
        "root_computes": ex.root_computes,
        "threads": ex.threads or None,
        **noise_options(config),
    }


def noise_options(config: Config) -> dict:
    """The estimator's noise options (``hpcqnn.noise``) from [execution.noise]."""
    from hpcqnn.noise import depolarizing_model

    noise = config.noise
    options: dict = {}
    if noise.depolarizing:
        options["noise_model"] = depolarizing_model(noise.p1, noise.p2, noise.readout)
    if noise.backend:
        options["backend"] = noise.backend
    if noise.sampler:
        options["sampler"] = noise.sampler
    return options


def check_noise(config: Config) -> None:
    """Resolve [execution.noise] on this rank before any work: the backend's name, the sampler
    factory (imported and called, its sampler kept for this rank's queries); a ``ConfigError``
    naming the section otherwise."""
    from hpcqnn.errors import ExecutionConfigError
    from hpcqnn.noise import noise_for

    try:
        noise_for(**noise_options(config))
    except ExecutionConfigError as exc:
        raise ConfigError(f"[execution.noise]: {exc}") from exc


def build_qnn(config: Config) -> CutQNN:
    """The configured QNN circuit (one qubit per feature): the built-in family, or the user's
    ``model.builder`` (a ``ConfigError`` naming what failed: import, call, result)."""
    model = config.model
    if model.builder:
        try:
            return built_model(model.builder, config.data.features)
        except Exception as exc:  # the user's code: any failure is named under the key
            raise ConfigError(f"model.builder: {exc}") from exc
    weights = model.readout_weights or (1.0,) * len(model.readout_terms)
    return cut_qnn(
        config.data.features, model.cuts, model.layers, model.rotations, model.pieces,
        entangler=model.entangler, feature_map=model.feature_map, ansatz=model.ansatz, readout=model.readout,
        readout_terms=list(zip(model.readout_terms, weights)), identity_blocks=model.init == "identity_blocks",
    )


def describe_model(config: Config, qnn) -> dict:
    model = config.model
    encodings = {"angle": "RY(angle) per feature", "zz": "the ZZ feature map of the angles"}
    encoding = encodings.get(qnn.encoding, qnn.encoding)
    terms: list[tuple[str, float]] = []
    for (letters, qubits, c), label in zip(qnn.observable.to_sparse_list(), qnn.observable.paulis.to_labels()):
        sparse = " ".join(f"{p}{q}" for p, q in zip(letters, qubits)) or "I"  # Z3 Z4: Z on qubits 3 and 4
        terms.append((label if qnn.num_qubits <= 16 else sparse, float(np.real(c))))
    return {
        "qubits": qnn.num_qubits,
        "builder": model.builder or None,
        "layers": model.layers,
        "cuts": model.cuts,
        "pieces": model.pieces,
        "cutting": config.execution.cutting,
        "rotations": model.rotations,
        "feature_map": model.feature_map,
        "ansatz": model.ansatz,
        "entangler": model.entangler,
        "init": model.init,
        "encoding": f"{encoding}, angle = pi * (x - train min) / (train max - train min)",
        "observable": " + ".join(label if c == 1 else f"{c:g}*{label}" for label, c in terms),
        "readout": f"p(y=1) = sigmoid(scale * <O> + bias), O the {model.readout} readout",
        "partition_labels": qnn.partition_labels if config.execution.cutting else None,
        "weights": len(qnn.weights),
    }


def load_data(config: Config) -> Dataset:
    """The configured dataset, split and scaled (raises DataError naming the problem)."""
    return load_dataset(
        config.data.dataset,
        config.data.classes,
        config.data.features,
        config.data.test_fraction,
        config.run.seed,
        config.data.path or None,
        config.data.max_train,
    )


def load_checkpoint(path: Path, config: Config, qnn: CutQNN, data: Dataset) -> TrainState:
    """The checkpoint at ``path``, checked whole against this run before it resumes: a
    ``CheckpointError`` naming the file and what is wrong (damaged, or shapes, counters or
    non-finite values that do not fit ``config``, ``qnn`` and ``data``)."""
    try:
        state = TrainState.load(path)
    except Exception as exc:  # noqa: BLE001 - zipfile, numpy, json and pickle refusals all mean damage
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc}): the run cannot be "
            "resumed from it; give another --out, or restore the file"
        ) from None
    problems = _checkpoint_problems(state, config, len(qnn.weights) + 2, len(data.y_train), len(data.y_test))
    if problems:
        raise CheckpointError(f"{path} does not fit this run: {'; '.join(problems)}; it cannot be resumed")
    return state


def _checkpoint_problems(state: TrainState, config: Config, parameters: int, train_rows: int, test_rows: int):
    """What in ``state`` does not fit a run of ``parameters`` parameters on ``train_rows`` and
    ``test_rows`` examples under ``config``."""
    steps = -(-train_rows // config.training.batch_size)
    expected = {name: (parameters,) for name in ("theta", "initial_theta", "adam_m", "adam_v")}
    expected["permutation"] = (train_rows,)  # a checkpoint follows a step, so the epoch's order is drawn
    if state.test_probabilities is not None:
        expected["test_probabilities"] = (test_rows,)
    problems = []
    for name, shape in expected.items():
        value = getattr(state, name)
        if not isinstance(value, np.ndarray) or value.shape != shape:
            problems.append(f"{name} has shape {getattr(value, 'shape', type(value).__name__)}, expected {shape}")
        elif value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            problems.append(f"{name} holds non-finite values (NaN or inf)")
        elif name == "permutation" and not np.array_equal(np.sort(value), np.arange(train_rows)):
            problems.append(f"permutation is not an order of the {train_rows} training examples")
    counters = {"epoch": (state.epoch, config.training.epochs), "step": (state.step, steps - 1)}
    for name, (value, most) in counters.items():
        if not isinstance(value, int) or not 0 <= value <= most:
            problems.append(f"{name} is {value!r}, expected an integer from 0 to {most}")
    if not isinstance(state.queries, int) or state.queries < 0:
        problems.append(f"queries is {state.queries!r}, expected an integer >= 0")
    if len(state.history) != state.epoch:
        problems.append(f"history has {len(state.history)} epochs, expected {state.epoch}")
    return problems


def train(
    config: Config,
    qnn: CutQNN,
    data: Dataset,
    estimator,
    out_dir: Path,
    resumed: TrainState | None,
    stop: StopRequest,
    progress: Progress,
) -> dict | None:
    """Train ``qnn`` (``build_qnn(config)``), from the start or from the checkpoint ``resumed``
    (``load_checkpoint``), and evaluate; the results for ``results.json``, or ``None`` if
    stopped early (a checkpoint was written). A non-finite loss or parameters stop training with
    ``TrainingDivergedError``; the last checkpoint, written before, stands."""
    model = QNNClassifier(qnn, estimator, seed=config.run.seed, init=config.model.init)
    checkpoint = out_dir / CHECKPOINT
    if resumed is not None:
        state = resumed
        estimator.num_queries = state.queries
        where = (
            "after the last epoch: the final evaluation again"
            if state.epoch == config.training.epochs
            else (f"at epoch {state.epoch + 1} step {state.step}")
        )
        progress.line(f"resuming {where} from {checkpoint}")
    else:
        rng = np.random.default_rng(config.run.seed)
        state = TrainState.start(model.initial_theta(rng), rng)

    train_angles, test_angles = data.angles(data.x_train), data.angles(data.x_test)
    batch = config.training.batch_size
    steps = -(-len(data.y_train) // batch)
    started = time.perf_counter() - state.seconds
    while state.epoch < config.training.epochs:
        if state.step == 0:
            state.permutation = state.rng.permutation(len(data.y_train))
        while state.step < steps:
            idx = state.permutation[state.step * batch : (state.step + 1) * batch]
            if config.training.optimizer == "adam":
                loss, grad = model.loss_and_gradient(train_angles[idx], data.y_train[idx], state.theta)
                adam_step(state, grad, config.training.learning_rate)
            else:
                loss = spsa_step(
                    model,
                    state,
                    train_angles[idx],
                    data.y_train[idx],
                    config.training.learning_rate,
                    config.training.spsa_perturbation,
                )
            if not (np.isfinite(loss) and np.all(np.isfinite(state.theta))):
                raise TrainingDivergedError(
                    f"training diverged at epoch {state.epoch + 1} step {state.step + 1}: loss {loss}, "
                    f"{np.count_nonzero(~np.isfinite(state.theta))} non-finite parameters; "
                    f"stopped without a checkpoint of it ({checkpoint} holds the last good state, if any): "
                    "try a smaller training.learning_rate"
                )
            state.step += 1
            elapsed = time.perf_counter() - started
            progress.step(
                f"epoch {state.epoch + 1}/{config.training.epochs} step {state.step}/{steps} "
                f"loss {loss:.4f} queries/s {estimator.num_queries / max(elapsed, 1e-9):.2f}"
            )
            if stop.requested and state.step < steps:
                _checkpoint(state, estimator, started, checkpoint)
                where = f"epoch {state.epoch + 1} step {state.step}"
                progress.line(f"{stop.reason}: checkpoint written at {where}; rerun with --resume")
                return None
        p_train = model.probabilities(train_angles, state.theta)
        p_test = model.probabilities(test_angles, state.theta)
        state.test_probabilities = p_test
        record = {
            "epoch": state.epoch + 1,
            "loss": bce_loss(p_train, data.y_train),
            "train_accuracy": accuracy(p_train, data.y_train),
            "test_accuracy": accuracy(p_test, data.y_test),
            "seconds": time.perf_counter() - started,
            "queries": estimator.num_queries,
        }
        state.history.append(record)
        state.epoch, state.step = state.epoch + 1, 0
        _checkpoint(state, estimator, started, checkpoint)
        progress.line(
            f"epoch {record['epoch']}/{config.training.epochs}  loss {record['loss']:.4f}  "
            f"train acc {record['train_accuracy']:.3f}  test acc {record['test_accuracy']:.3f}  "
            f"{record['seconds']:.1f} s  queries/s {record['queries'] / max(record['seconds'], 1e-9):.2f}"
        )
        if stop.requested and state.epoch < config.training.epochs:
            progress.line(f"{stop.reason}: checkpoint written after the epoch; rerun with --resume")
            return None

    robustness = evaluate_robustness(model, data, state.theta, config, stop)
    if robustness is None:
        progress.line(
            f"{stop.reason}: stopped in the final evaluation; the last epoch's checkpoint stands: rerun with --resume"
        )
        return None
    if state.test_probabilities is None:  # a checkpoint from before they were kept, written after the last epoch
        state.test_probabilities = model.probabilities(test_angles, state.theta)
    return {
        "dataset": data.description,
        "model": describe_model(config, qnn),
        "budget": {
            "epochs": config.training.epochs,
            "batch_size": batch,
            "steps_per_epoch": steps,
            "optimizer": config.training.optimizer,
            "learning_rate": config.training.learning_rate,
            "mode": config.execution.mode,
            "shots": config.execution.shots if config.execution.mode == "sampled" else None,
            "seed": config.run.seed,
            "queries": estimator.num_queries,
            "initial_parameters": state.initial_theta.tolist(),
        },
        "history": state.history,
        "final": {
            "train_accuracy": state.history[-1]["train_accuracy"],
            "test_accuracy": state.history[-1]["test_accuracy"],
            "parameters": state.theta.tolist(),
            "test_probabilities": state.test_probabilities.tolist(),
        },
        "robustness": robustness,
        "train_seconds": state.history[-1]["seconds"],
    }


def _checkpoint(state: TrainState, estimator, started: float, path: Path) -> None:
    state.queries = estimator.num_queries
    state.seconds = time.perf_counter() - started
    state.save(path)


def evaluate_robustness(
    model: QNNClassifier, data: Dataset, theta: np.ndarray, config: Config, stop: StopRequest
) -> dict | None:
    """Test accuracy under Gaussian input noise and FGSM, perturbing the standardized features;
    ``None`` when ``stop`` was requested before it finished (it is redone on resume)."""
    rng = np.random.default_rng([config.run.seed, 1])  # its own stream: training state untouched
    x, y = data.x_test, data.y_test
    gaussian = []
    for sigma in config.evaluation.gaussian_sigmas:
        if stop.requested:
            return None
        draws = [x + sigma * rng.standard_normal(x.shape) for _ in range(config.evaluation.gaussian_draws)]
        p = model.probabilities(data.angles(np.concatenate(draws)), theta).reshape(len(draws), -1)
        scores = [accuracy(row, y) for row in p]
        gaussian.append(
            {"sigma": sigma, "accuracy_mean": float(np.mean(scores)), "accuracy_std": float(np.std(scores))}
        )
    if stop.requested:
        return None
    _, d_angle = model.input_gradient(data.angles(x), y, theta)
    d_x = d_angle * data.angle_scale  # chain rule through the angle scaling
    fgsm = []
    for eps in config.evaluation.fgsm_epsilons:
        if stop.requested:
            return None
        p = model.probabilities(data.angles(x + eps * np.sign(d_x)), theta)
        fgsm.append({"epsilon": eps, "accuracy": accuracy(p, y)})
    return {"gaussian": gaussian, "fgsm": fgsm, "perturbation_space": "standardized features (train z-scores)"}
