"""The figure of ``hpcqnn bench-noise-width``: what a mirrored QNN (ideal <Z...Z> = 1) keeps
under a device's noise, cut into two pieces and uncut, by width.

    python -m analysis.noise_width docs/data/noise_width.json --out docs/figures
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt

from .figures import save


def figure(results: list[dict], out: Path) -> list[Path]:
    """Cut and uncut values by width (error bars: the sampled uncut runs' standard errors)."""
    widths = [r["qubits"] for r in results]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="ideal")
    ax.plot(widths, [r["cut"] for r in results], "o-", label="cut: 2 pieces laid out by themselves (exact)")
    sampled = [r["uncut_std"] > 0 for r in results]
    ax.errorbar(
        widths, [r["uncut"] for r in results], yerr=[2 * r["uncut_std"] for r in results], fmt="s--",
        capsize=3, label="uncut (exact; hollow: sampled, ±2 SE)",
    )
    ax.plot([w for w, s in zip(widths, sampled) if s], [r["uncut"] for r, s in zip(results, sampled) if s],
            "s", mfc="white", color="C1")
    ax.set_xlabel("qubits")
    ax.set_ylabel("<Z...Z> kept (ideal 1)")
    ax.set_title(f"mirrored QNN on {results[0]['backend']}'s noise")
    ax.legend(fontsize=8)
    return save(fig, out, "noise_width")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="hpcqnn bench-noise-width --json output")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for noise_width.png")
    args = parser.parse_args(argv)
    results = json.loads(args.json.read_text())["results"]
    for path in figure(results, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
