"""On a real GPU: Aer's GPU results equal the CPU's, CuPy reconstruction equals NumPy, ranks bind
to GPU (local rank mod GPUs) under mpiexec, and a training run records its GPU. Skipped, with the
reason, where no GPU is usable (tests/test_devices.py covers the same logic without one); the
CuPy tests need only CuPy and a CUDA device, so they also run where Aer's GPU build does not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import hpcqnn
from bounded import clean_environment, mpi_command, run_bounded
from hpcqnn import cli
from hpcqnn.cutting.plan import build_cut_plan
from hpcqnn.cutting.program import build_program
from hpcqnn.execution.compiled import compile_program
from hpcqnn.execution.devices import Placement, array_module, place, probe_gpus
from hpcqnn.execution.engine import finish_query
from hpcqnn.execution.query import Query, QueryBuffers
from hpcqnn.run.timelog import rank_file, read_timing
from hpcqnn.tools import gpucheck
from hpcqnn.tools.gpubench import reconstruction_placement
from hpcqnn.training.circuits import cut_qnn
from tolerances import EXACT_ATOL, ROUNDING_TOL

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).parent / "mpi_scripts"

_PROBE = probe_gpus()
_PROBLEM = _PROBE.problem or place("auto", 0, _PROBE).note
_CUPY, _CUPY_PROBLEM = reconstruction_placement(Placement(), _PROBE, 0)
needs_gpu = pytest.mark.skipif(bool(_PROBLEM), reason=f"no usable GPU: {_PROBLEM}")
needs_cupy = pytest.mark.skipif(_CUPY is None, reason=f"no GPU for CuPy: {_CUPY_PROBLEM}")
pytestmark = pytest.mark.gpu


@needs_gpu
@pytest.mark.parametrize(("qubits", "cuts", "labels"), [(8, 3, None), (16, 2, None), (12, 1, "AAAABBBBCCCC")])
def test_gpu_aer_equals_cpu_in_exact_mode(qubits, cuts, labels):
    qnn = cut_qnn(qubits, cuts, layers=max(cuts, 2))
    labels = labels or qnn.partition_labels
    params = np.random.default_rng(11).uniform(-np.pi, np.pi, (6, qnn.circuit.num_parameters))
    values = {}
    for device in ("CPU", "GPU"):
        estimator = hpcqnn.DistributedEstimator(partition_labels=labels, device=device)
        assert estimator.device == device
        result = estimator.run([(qnn.circuit, qnn.observable, params)]).result()[0]
        assert result.metadata["device"] == device
        values[device] = np.asarray(result.data.evs)
    np.testing.assert_allclose(values["GPU"], values["CPU"], rtol=0, atol=EXACT_ATOL)


@needs_gpu
def test_auto_uses_the_gpu():
    assert hpcqnn.DistributedEstimator(partition_labels="AABB").device == "GPU"


@needs_cupy
@pytest.mark.parametrize("sampled", [False, True])
def test_cupy_reconstruction_equals_numpy(sampled):
    import cupy

    qnn = cut_qnn(8, 3)
    plan = build_cut_plan(qnn.circuit, qnn.observable.paulis, partition_labels=qnn.partition_labels)
    program = build_program(plan, sampled=sampled)
    rng = np.random.default_rng(3)
    params = rng.uniform(-np.pi, np.pi, (300, len(plan.parameters)))
    weights = rng.uniform(-1, 1, (len(plan.paulis), 3))
    compiled = compile_program(program)
    query = Query(0, compiled, params, shots=100 if sampled else None, seed=1, weights=weights)
    buffers = QueryBuffers(compiled, query.rows)
    buffers.flat[:] = rng.uniform(-1, 1, buffers.flat.shape)
    xp = array_module(_CUPY)
    assert xp is cupy
    host = finish_query(query, buffers, np)
    device = finish_query(query, buffers, xp)
    np.testing.assert_allclose(device[0], host[0], rtol=0, atol=ROUNDING_TOL)
    if sampled:
        np.testing.assert_allclose(device[1], host[1], rtol=0, atol=ROUNDING_TOL)


@needs_cupy
def test_array_module_makes_the_placements_gpu_current():
    import cupy

    last = _PROBE.cuda_devices - 1
    assert array_module(Placement(last)) is cupy and cupy.cuda.Device().id == last
    array_module(Placement(0))
    assert cupy.cuda.Device().id == 0


@needs_gpu
def test_gpucheck_passes(capsys):
    assert gpucheck.main(["--require-gpu"]) == 0
    out = capsys.readouterr().out
    assert "GPU 0: Aer and CuPy run" in out and "device='auto' here: GPU" in out


@needs_gpu
@pytest.mark.mpi
def test_ranks_bind_to_local_rank_mod_gpus(tmp_path):
    command = mpi_command(2, SCRIPTS / "placement.py", tmp_path, "GPU")
    code, output = run_bounded(command, 180.0, clean_environment({"SLURM_LOCALID": "0"}), merge_output=True, cwd=ROOT)
    assert code == 0, output
    gpus = _PROBE.cuda_devices
    for rank in range(2):
        _, attributes = read_timing(rank_file(tmp_path / "first", rank))
        assert attributes["local_rank"] == rank and attributes["device"] == "GPU"
        assert attributes["gpu"] == rank % gpus
        assert int((tmp_path / f"cupy-{rank}.txt").read_text()) == rank % gpus
    qnn = cut_qnn(6, cuts=3, layers=3)  # tests/mpi_scripts/workload.py's MODEL
    params = np.random.default_rng(5).uniform(-np.pi, np.pi, (3, qnn.circuit.num_parameters))
    cpu = hpcqnn.DistributedEstimator(partition_labels=qnn.partition_labels, device="CPU")
    expected = cpu.run([(qnn.circuit, qnn.observable, params)]).result()[0].data.evs
    np.testing.assert_allclose(np.load(tmp_path / "values.npy"), expected, rtol=0, atol=EXACT_ATOL)


@needs_gpu
def test_training_run_records_its_gpu(tmp_path):
    out = tmp_path / "run"
    sets = ["training.epochs=1", "data.max_train=16", "training.batch_size=8", "evaluation.gaussian_draws=1",
            "execution.device=GPU"]
    code = cli.main(["train", str(ROOT / "jobs" / "iris_quick.toml"), "--out", str(out),
                     *[arg for s in sets for arg in ("--set", s)]])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "GPU" and results["gpu"] == 0 and results["rank_devices"] == ["GPU 0"]
    _, attributes = read_timing(rank_file(out, 0))
    assert attributes["device"] == "GPU" and attributes["gpu"] == 0


@needs_gpu
def test_gpubench_compares_both_sides(tmp_path):
    from hpcqnn.tools import gpubench

    out = tmp_path / "bench.json"
    args = ["--queries", "2", "--rows", "4", "--large-qubits", "20", "--reconstruction-rows", "64,4096",
            "--repeats", "2", "--json", str(out)]
    assert gpubench.main(args) == 0
    report = json.loads(out.read_text())
    assert report["gpu"] == "GPU 0" and report["gpu_skipped"] is None
    for entry in report["execution"]:
        assert entry["gpu_execute_s"] > 0 and entry["execute_cpu_over_gpu"] > 0
        assert entry["max_abs_difference"] < EXACT_ATOL
    for entry in report["reconstruction"]:
        assert entry["cupy_s"] > 0 and entry["max_abs_difference"] < EXACT_ATOL
