"""hpcqnn bench-floor: every pipeline timed in one run, values checked against each other."""

from __future__ import annotations

import json

import pytest

from hpcqnn import cli
from hpcqnn.tools.floor import EXACT, SAMPLED


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
        assert all(entry[f"{name} s"] > 0 for name in EXACT)
        for name in EXACT:  # each pipeline's time over the floor's, as the table prints it
            assert entry[f"{name} / aer"] == pytest.approx(entry[f"{name} s"] / entry["aer s"], rel=1e-12)
        assert f"{entry['cut / aer']:>8.2f}" in printed


def test_bench_floor_sampled_rows_beside_aer_sampler(tmp_path, capsys):
    """--modes exact,sampled: an exact table, then a sampled one (coherent, enumerated, Aer
    SamplerV2, the exact cut query); sampled values lie within a few reported stds."""
    out = tmp_path / "floor.json"
    args = ["bench-floor", "--qubits", "4", "--cuts", "1", "--rows", "3", "--queries", "2", "--modes", "exact,sampled"]
    assert cli.main([*args, "--shots", "400", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "cut/aer" in lines[0] and "sampled/cut" in lines[2] and lines[4:] == ["", f"wrote {out}"]
    exact, sampled = json.loads(out.read_text())["results"]
    assert (exact["mode"], sampled["mode"], sampled["shots"]) == ("exact", "sampled", 400)
    assert all(sampled[f"{name} s"] > 0 for name in SAMPLED)
    for name in SAMPLED:  # each sampled pipeline's time over the exact cut query's
        assert sampled[f"{name} / cut"] == pytest.approx(sampled[f"{name} s"] / sampled["cut s"], rel=1e-12)
    assert 0 < sampled["max |z|"] < 6


def test_bench_floor_refuses_unknown_modes(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["bench-floor", "--modes", "exact,noisy"])
    assert stop.value.code == 2
    assert "modes are exact and/or sampled" in capsys.readouterr().err


def test_bench_floor_refuses_a_one_qubit_circuit(capsys):
    assert cli.main(["bench-floor", "--qubits", "1"]) == 2
    assert "--qubits must be >= 2" in capsys.readouterr().err
