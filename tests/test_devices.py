"""Device selection without a GPU: rank-to-GPU binding, the probe's decisions, the errors and the
once-only fallback message, Aer's per-call GPU target, the device recorded in timing logs and
results.json, and reconstruction through a non-NumPy array module that refuses host arrays the
way CuPy does. tests/test_gpu.py checks the same paths on a real GPU."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit

import hpcqnn
from bounded import clean_environment, mpi_command, run_bounded
from hpcqnn.cutting.plan import build_cut_plan
from hpcqnn.cutting.program import build_program
from hpcqnn.errors import DeviceUnavailableError, ExecutionConfigError
from hpcqnn.execution import devices
from hpcqnn.execution.compiled import compile_program
from hpcqnn.execution.devices import GPUProbe, Placement, gpu_for_rank, place
from hpcqnn.execution.engine import finish_query
from hpcqnn.execution.query import Query, QueryBuffers
from hpcqnn.execution.simulator import AerRunner
from hpcqnn.run import launcher
from hpcqnn.run.config import load_config
from hpcqnn.run.timelog import rank_file, read_timing
from hpcqnn.training.circuits import cut_qnn
from tolerances import ROUNDING_TOL

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).parent / "mpi_scripts"
NO_GPU = GPUProbe(0, ("CPU",), "CuPy is not installed")
AER_CLAIMS_GPU = GPUProbe(0, ("CPU", "GPU"), "CUDARuntimeError: cudaErrorNoDevice")
CPU_AER = GPUProbe(2, ("CPU",))
TWO_GPUS = GPUProbe(2, ("CPU", "GPU"))
GPU_HERE = not devices.probe_gpus().problem


@pytest.fixture
def fresh_announcements(monkeypatch):
    monkeypatch.setattr(devices, "_ANNOUNCED", set())


@pytest.fixture
def no_gpu(monkeypatch, fresh_announcements):
    """This process probes as a machine without a GPU, whatever it has."""
    monkeypatch.setattr(devices, "probe_gpus", lambda: NO_GPU)


# -- binding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local_rank", "gpus", "expected"), [(0, 1, 0), (3, 1, 0), (0, 4, 0), (1, 4, 1), (5, 4, 1), (7, 2, 1)]
)
def test_rank_uses_local_rank_modulo_gpus(local_rank, gpus, expected):
    assert gpu_for_rank(local_rank, gpus) == expected


@pytest.mark.parametrize(
    ("local_rank", "gpus", "message"), [(0, 0, "at least one visible GPU, got 0"), (-1, 2, "local rank must be >= 0")]
)
def test_binding_rejects_impossible_input(local_rank, gpus, message):
    with pytest.raises(ExecutionConfigError, match=message):
        gpu_for_rank(local_rank, gpus)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, 0),
        ({"SLURM_LOCALID": "3"}, 3),
        ({"SLURM_LOCALID": "0", "MPI_LOCALRANKID": "2"}, 2),  # mpiexec inside a batch step
        ({"SLURM_LOCALID": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, 1),
        ({"SLURM_LOCALID": "x"}, 0),
    ],
)
def test_local_rank_outside_mpi_comes_from_the_innermost_launcher(environ, expected):
    assert launcher.local_rank(environ) == expected


# -- decisions ---------------------------------------------------------------------------------


def test_cpu_needs_no_probe(monkeypatch):
    monkeypatch.setattr(devices, "probe_gpus", lambda: pytest.fail("CPU must not probe"))
    assert place("CPU") == Placement() and Placement().device == "CPU" and Placement().label == "CPU"


@pytest.mark.parametrize(
    ("probe", "reason"),
    [
        (NO_GPU, r"CuPy sees no CUDA device \(CuPy is not installed\)"),
        (AER_CLAIMS_GPU, r"CuPy sees no CUDA device \(CUDARuntimeError"),  # Aer's claim is not enough
        (CPU_AER, r"qiskit_aer is the CPU-only build .*qiskit-aer-gpu must be installed after qiskit-aer"),
    ],
)
def test_gpu_requested_but_absent_is_a_clear_error(probe, reason):
    with pytest.raises(DeviceUnavailableError, match=r"device='GPU' but no GPU is usable: " + reason) as error:
        place("GPU", 0, probe)
    assert "pip install --force-reinstall --no-deps qiskit-aer-gpu" in str(error.value)
    assert "python -m hpcqnn.tools.gpucheck" in str(error.value)


@pytest.mark.parametrize("probe", [NO_GPU, AER_CLAIMS_GPU, CPU_AER])
def test_auto_falls_back_to_cpu_with_the_reason(probe):
    placement = place("auto", 0, probe)
    assert placement.device == "CPU" and placement.gpu is None and placement.note == probe.problem


def test_usable_gpu_is_bound_by_local_rank_and_checked_by_a_run(monkeypatch):
    checked = []
    monkeypatch.setattr(devices, "aer_gpu_error", lambda gpu: checked.append(gpu) or "")
    assert place("GPU", 3, TWO_GPUS) == Placement(1)
    assert place("auto", 2, TWO_GPUS) == Placement(0)
    assert checked == [1, 0]
    assert Placement(1).device == "GPU" and Placement(1).label == "GPU 1"


def test_gpu_that_fails_to_run_is_not_used(monkeypatch):
    monkeypatch.setattr(devices, "aer_gpu_error", lambda gpu: f"Aer on GPU {gpu} failed: RuntimeError: driver too old")
    assert place("auto", 1, TWO_GPUS).note == "Aer on GPU 1 failed: RuntimeError: driver too old"
    with pytest.raises(DeviceUnavailableError, match="driver too old"):
        place("GPU", 1, TWO_GPUS)


@pytest.mark.parametrize("device", ["gpu", "cuda", ""])
def test_unknown_device_names_the_choices(device):
    with pytest.raises(ExecutionConfigError, match=r"device must be one of \('auto', 'CPU', 'GPU'\)"):
        place(device)


def test_announcement_is_printed_once_per_process(fresh_announcements):
    stream = io.StringIO()
    for _ in range(3):
        devices.announce("device='auto' falls back to the CPU: x", stream)
    devices.announce("another message", stream)
    assert stream.getvalue() == "hpcqnn: device='auto' falls back to the CPU: x\nhpcqnn: another message\n"


def test_estimators_say_the_auto_fallback_once(no_gpu, capsys):
    for _ in range(2):
        assert hpcqnn.DistributedEstimator(partition_labels="AABB").device == "CPU"
    err = capsys.readouterr().err
    assert (
        err.count("hpcqnn: device='auto' falls back to the CPU: CuPy sees no CUDA device (CuPy is not installed)") == 1
    )


def test_estimator_refuses_gpu_without_one(no_gpu):
    with pytest.raises(DeviceUnavailableError, match="device='GPU' but no GPU is usable"):
        hpcqnn.DistributedEstimator(partition_labels="AABB", device="GPU")


# -- Aer ---------------------------------------------------------------------------------------


def test_aer_calls_target_the_placements_gpu():
    from qiskit_aer.backends.aer_compiler import generate_aer_config

    cpu, gpu = AerRunner("CPU"), AerRunner(Placement(1))
    assert "target_gpus" not in cpu.run_options and cpu.device == "CPU"
    assert gpu.run_options["target_gpus"] == [1] and gpu.device == "GPU"
    assert gpu.backend.options.device == "GPU"
    circuit = QuantumCircuit(1)
    config = generate_aer_config([circuit], gpu.backend.options, **gpu.run_options)
    assert config.target_gpus == [1] and config.device == "GPU" and config.runtime_parameter_bind_enable
    assert AerRunner("GPU").placement == Placement(0)


def test_aer_runner_names_bad_input():
    with pytest.raises(ExecutionConfigError, match="AerRunner runs on 'CPU' or 'GPU', got 'auto'"):
        AerRunner("auto")
    with pytest.raises(ExecutionConfigError, match="invalid Aer option: .*no_such_option"):
        AerRunner("CPU", options={"no_such_option": True})


# -- what a run records ------------------------------------------------------------------------


def test_device_recorded_in_timing_attributes_and_results_json(no_gpu, tmp_path, capsys):
    from hpcqnn.run.runinfo import run_metadata

    model = cut_qnn(4, cuts=1, layers=1)
    with hpcqnn.mpi_estimator(partition_labels=model.partition_labels, timing_dir=tmp_path) as est:
        est.run([(model.circuit, model.observable, np.zeros((1, model.circuit.num_parameters)))]).result()
        meta = run_metadata(load_config(), est, 1.0)
    _, attributes = read_timing(rank_file(tmp_path, 0))
    assert attributes["device"] == "CPU" and attributes["gpu"] == -1 and attributes["local_rank"] == 0
    assert "cuda_visible_devices" in attributes
    assert meta["device"] == "CPU" and meta["gpu"] == -1 and meta["rank_devices"] == ["CPU"]
    assert "cuda_visible_devices" in meta
    assert capsys.readouterr().err.count("falls back to the CPU") == 1


def test_mpi_estimator_refuses_gpu_before_any_work(no_gpu, tmp_path):
    with pytest.raises(DeviceUnavailableError, match=r"rank\(s\) 0 \(.*\) of 1: device='GPU' but no GPU is usable"):
        with hpcqnn.mpi_estimator(partition_labels="AABB", device="GPU", timing_dir=tmp_path / "run"):
            pytest.fail("the block must not run")
    assert not (tmp_path / "run").exists()


# -- under mpiexec -----------------------------------------------------------------------------


def mpiexec(args: list[str], ranks: int, env: dict[str, str]) -> tuple[int, str]:
    return run_bounded(mpi_command(ranks, *args), 120.0, clean_environment(env), merge_output=True, cwd=ROOT)


@pytest.mark.mpi
@pytest.mark.skipif(GPU_HERE, reason="checks the CPU fallback; tests/test_gpu.py covers GPU machines")
def test_mpi_ranks_take_local_rank_from_the_mpi_world(tmp_path):
    """Both ranks inherit SLURM_LOCALID=0 (mpiexec inside a batch step) yet get local ranks 0
    and 1; the auto fallback is said once, by rank 0, for two estimators."""
    code, output = mpiexec([str(SCRIPTS / "placement.py"), str(tmp_path), "auto"], 2, {"SLURM_LOCALID": "0"})
    assert code == 0, output
    for name in ("first", "second"):
        found = [read_timing(rank_file(tmp_path / name, r))[1] for r in range(2)]
        assert [a["local_rank"] for a in found] == [0, 1]
        assert all(a["device"] == "CPU" and a["gpu"] == -1 for a in found)
    assert output.count("hpcqnn: device='auto' falls back to the CPU on all 2 ranks: CuPy sees no CUDA device") == 1


@pytest.mark.mpi
@pytest.mark.skipif(GPU_HERE, reason="needs a machine without a usable GPU")
def test_train_refuses_gpu_on_every_rank_before_work(tmp_path):
    out = tmp_path / "run"
    code, output = mpiexec(
        [
            "-m",
            "hpcqnn.cli",
            "train",
            str(ROOT / "jobs" / "iris_quick.toml"),
            "--out",
            str(out),
            "--set",
            "execution.device=GPU",
        ],
        2,
        {},
    )
    assert code == 2, output
    # every rank exits with status 2 (`python -m mpi4py` then aborts the world), rank 0 says why
    # (the message names both ranks), none failed mid-work with a traceback
    assert output.count("hpcqnn: error: rank(s) 0 (") == 1
    assert "of 2: device='GPU' but no GPU is usable" in output
    assert "Traceback" not in output and "aborting the job" not in output
    assert not out.exists()


# -- reconstruction through a device array module -----------------------------------------------


class DeviceArray(np.ndarray):
    """A CuPy stand-in: operations refuse host (NumPy) arrays, ``get()`` copies to the host."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_host(inputs)
        result = getattr(ufunc, method)(*(_plain(x) for x in inputs), **kwargs)
        return result.view(DeviceArray) if isinstance(result, np.ndarray) else result

    def get(self) -> np.ndarray:
        return self.view(np.ndarray).copy()


def _plain(value):
    return value.view(np.ndarray) if isinstance(value, DeviceArray) else value


def _refuse_host(values) -> None:
    for value in values:
        if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
            raise TypeError("a host array reached a device operation; move it with xp.asarray first")


class DeviceModule:
    """NumPy under CuPy's rule that host arrays enter only through ``asarray``."""

    @staticmethod
    def asarray(value, dtype=None):
        return np.array(_plain(value), dtype=dtype).view(DeviceArray)

    def __getattr__(self, name):
        function = getattr(np, name)

        def on_device(*args, **kwargs):
            _refuse_host(args)
            _refuse_host(kwargs.values())
            result = function(*(_plain(a) for a in args), **kwargs)
            return result.view(DeviceArray) if isinstance(result, np.ndarray) else result

        return on_device


def test_stand_in_refuses_host_arrays():
    xp = DeviceModule()
    with pytest.raises(TypeError, match="host array"):
        xp.asarray(np.ones(2)) @ np.ones(2)
    with pytest.raises(TypeError, match="host array"):
        xp.einsum("i,i->", xp.asarray(np.ones(2)), np.ones(2))


@pytest.mark.parametrize("sampled", [False, True])
@pytest.mark.parametrize(("qubits", "cuts", "labels"), [(8, 3, None), (6, 1, "AABBCC")])
def test_reconstruction_through_a_device_module_equals_numpy(sampled, qubits, cuts, labels):
    qnn = cut_qnn(qubits, cuts, layers=max(cuts, 1))
    plan = build_cut_plan(qnn.circuit, qnn.observable.paulis, partition_labels=labels or qnn.partition_labels)
    program = build_program(plan, sampled=sampled)
    rng = np.random.default_rng(7)
    params = rng.uniform(-np.pi, np.pi, (5, len(plan.parameters)))
    weights = rng.uniform(-1, 1, (len(plan.paulis), 2))
    compiled = compile_program(program)
    query = Query(0, compiled, params, shots=100 if sampled else None, seed=1, weights=weights)
    buffers = QueryBuffers(compiled, query.rows)
    buffers.flat[:] = rng.uniform(-1, 1, buffers.flat.shape)
    host_values, host_variance = finish_query(query, buffers, np)
    values, variance = finish_query(query, buffers, DeviceModule())
    assert type(values) is np.ndarray
    np.testing.assert_allclose(values, host_values, rtol=0, atol=ROUNDING_TOL)
    if sampled:
        np.testing.assert_allclose(variance, host_variance, rtol=0, atol=ROUNDING_TOL)
    else:
        assert variance is None and host_variance is None


# -- the GPU benchmark without a GPU -----------------------------------------------------------


def test_gpubench_runs_the_cpu_side_and_says_the_gpu_side_was_skipped(no_gpu, tmp_path, capsys):
    from hpcqnn.tools import gpubench

    out = tmp_path / "bench.json"
    args = ["--queries", "1", "--rows", "2", "--large-qubits", "16", "--large-pieces", "3",
            "--reconstruction-rows", "4,16", "--repeats", "1", "--threads", "1", "--json", str(out)]
    assert gpubench.main(args) == 0
    printed = capsys.readouterr().out
    assert "GPU side skipped: CuPy sees no CUDA device (CuPy is not installed). Only the CPU side ran." in printed
    report = json.loads(out.read_text())
    assert report["gpu"] is None and report["gpu_skipped"] == NO_GPU.problem
    assert report["cupy_gpu"] is None and report["cupy_skipped"] == NO_GPU.problem
    assert [(e["case"], e["partitions"], e["cuts"]) for e in report["execution"]] == [
        ("8q 3 cuts", 2, 3),
        ("16q 3 pieces", 3, 2),
    ]
    for entry in report["execution"]:
        assert entry["cpu_execute_s"] > 0 and entry["gpu_execute_s"] is None and entry["execute_cpu_over_gpu"] is None
    assert [(r["case"], r["rows"]) for r in report["reconstruction"]] == [
        ("8q 3 cuts", 4), ("8q 3 cuts", 16), ("16q 3 pieces", 4), ("16q 3 pieces", 16)
    ]
    assert all(r["numpy_s"] > 0 and r["cupy_s"] is None for r in report["reconstruction"])


def test_gpubench_reconstructs_with_cupy_where_aer_has_no_gpu(monkeypatch, fresh_announcements, tmp_path, capsys):
    """CuPy sees two GPUs but Aer is the CPU build: execution runs on the CPU only, and the
    reconstruction comparison runs on the local rank's GPU through the device module."""
    from hpcqnn.tools import gpubench

    monkeypatch.setattr(devices, "probe_gpus", lambda: CPU_AER)
    monkeypatch.setattr(launcher, "local_rank", lambda: 3)
    monkeypatch.setattr(gpubench, "cupy_error", lambda gpu: "")
    used = []
    monkeypatch.setattr(
        gpubench, "array_module", lambda where: used.append(where.gpu) or (np if where.gpu is None else DeviceModule())
    )
    out = tmp_path / "bench.json"
    args = ["--queries", "1", "--rows", "2", "--large-qubits", "16", "--reconstruction-rows", "4",
            "--repeats", "1", "--threads", "1", "--json", str(out)]
    assert gpubench.main(args) == 0
    report = json.loads(out.read_text())
    assert report["gpu"] is None and report["gpu_skipped"] == CPU_AER.problem
    assert report["cupy_gpu"] == "GPU 1" and report["cupy_skipped"] is None
    assert all(e["gpu_execute_s"] is None for e in report["execution"])
    assert all(r["cupy_s"] > 0 and r["max_abs_difference"] < ROUNDING_TOL for r in report["reconstruction"])
    assert set(used) == {None, 1}
    assert "Reconstruction ran with CuPy on GPU 1." in capsys.readouterr().out


def test_gpucheck_checks_cupy_on_every_gpu_even_without_aer_gpu(monkeypatch, fresh_announcements, capsys):
    from hpcqnn.tools import gpucheck

    monkeypatch.setattr(devices, "probe_gpus", lambda: CPU_AER)
    monkeypatch.setattr(gpucheck, "probe_gpus", lambda: CPU_AER)
    monkeypatch.setattr(gpucheck, "cupy_error", lambda gpu: "" if gpu == 0 else f"CuPy on GPU {gpu} failed: boom")
    assert gpucheck.main(["--require-gpu"]) == 1
    out = capsys.readouterr().out
    assert "GPU 0: Aer's build offers no GPU\n" in out
    assert "GPU 1: Aer's build offers no GPU; CuPy on GPU 1 failed: boom" in out
    assert f"device='auto' here: CPU ({CPU_AER.problem})" in out


def test_gpubench_refuses_unknown_aer_options(capsys):
    from hpcqnn.tools import gpubench

    assert gpubench.main(["--aer-option", "no_such_option=1"]) == 2
    assert "invalid Aer option" in capsys.readouterr().err
