"""hpcqnn bench-floor: every pipeline timed in one run, values checked against each other."""

from __future__ import annotations

import json

from hpcqnn import cli
from hpcqnn.tools.floor import PIPELINES


def test_bench_floor_times_every_pipeline_and_their_values_agree(tmp_path, capsys):
    out = tmp_path / "floor.json"
    assert (
        cli.main(["bench-floor", "--qubits", "4", "--cuts", "1,2", "--rows", "3", "--queries", "2", "--json", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "cut/aer" in printed.splitlines()[0] and len(printed.strip().splitlines()) >= 3
    report = json.loads(out.read_text())
    assert report["hpcqnn_version"] and [(r["qubits"], r["cuts"], r["rows"]) for r in report["results"]] == [
        (4, 1, 3),
        (4, 2, 3),
    ]
    for entry in report["results"]:
        assert entry["max |difference|"] < 1e-10  # cut, enumerated, uncut and Aer against StatevectorEstimator
        assert all(entry[f"{name} s"] > 0 for name in PIPELINES)
        assert entry["aer / aer"] == 1.0


def test_bench_floor_refuses_a_one_qubit_circuit(capsys):
    assert cli.main(["bench-floor", "--qubits", "1"]) == 2
    assert "--qubits must be >= 2" in capsys.readouterr().err
