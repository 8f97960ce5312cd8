"""The deep autoencoder on MNIST: test squared reconstruction error per image, with and without
pre-training, against PCA with as many components as the code and the published figures.

Hinton & Salakhutdinov (Science, 2006) report, for 784-1000-500-250-30 on MNIST, an average squared
error per test image (the sum over the 784 pixels, in [0, 1], of the squared difference) of 3.00
for their RBM-pretrained autoencoder, 8.01 for logistic PCA and 13.87 for PCA with 30 components.
Here, each in its own run folder under ``--out``, as ``dae deep`` runs them:

* ``pretrained``: ``dae deep`` with its defaults (greedy dA pre-training, unrolling, fine-tuning);
* ``random``: the same network and fine-tuning schedule from random weights (``dae deep --no-pretrain``).

each with ``--seeds`` seeds (``DeepRunConfig``'s seed, 2006, and up: the initial weights, the
noise, the order), in folders ``pretrained-seed2006``, ...; the table gives each run and the mean
+- standard deviation over the seeds of each method.

Each run also fits PCA on the same 50,000 training digits and measures it on the same test digits.
The recipe can only be chosen on the validation column (MNIST's 10,000 validation digits, never
trained on); ``--recipe`` runs others beside the defaults.  A run folder whose summary.json exists
is not run again, so the two runs can go in two processes side by side (``--methods``), and a last
call prints the table of both and draws ``deep_reconstruction.png`` (the validation error per
fine-tuning epoch of each run).

    python benchmarks/deep_reconstruction.py [--methods pretrained,random] [--seeds 3] [--threads N] [--out DIR]
        [--recipe NAME='{"training": {"epochs": 100}}' ...]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dae import DeepRunConfig, run_deep
from dae.config import merge
from dae.files import write_bytes

# Hinton & Salakhutdinov (2006), text and fig. 2: squared error per MNIST test image.
PUBLISHED = {"RBM-pretrained deep autoencoder": 3.00, "logistic PCA": 8.01, "PCA, 30 components": 13.87}
METHODS = {"pretrained": {}, "random": {"pretrain": False}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="pretrained,random", help="which of pretrained, random to run")
    parser.add_argument("--seeds", type=int, default=1, help="runs of each method, seeded from DeepRunConfig's seed "
                                                             "up (default: %(default)s)")
    parser.add_argument("--recipe", action="append", default=[], metavar="NAME=JSON",
                        help="another run: settings over DeepRunConfig's defaults (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (default: torch's)")
    parser.add_argument("--out", default="runs/deep_reconstruction", help="a folder for the runs (default: %(default)s)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    first = DeepRunConfig().seed
    runs = {f"{name}-seed{seed}": {**METHODS[name], "seed": seed}
            for name in args.methods.split(",") if name for seed in range(first, first + args.seeds)}
    for text in args.recipe:
        name, _, changes = text.partition("=")
        runs[name] = json.loads(changes)
    out = Path(args.out)
    for name, changes in runs.items():
        folder = out / name
        if finished_summary(folder) is not None:
            continue
        config = merge(DeepRunConfig(), changes)
        run_deep(resume=folder) if (folder / "checkpoint.safetensors").exists() else run_deep(config, folder)
    summaries = {p.name: finished_summary(p) for p in sorted(out.iterdir()) if finished_summary(p) is not None}
    print(f"\nSquared error per image (sum over the 784 pixels), MNIST; torch {torch.__version__}")
    print(f"{'run':<34}{'validation':>11}{'test':>8}{'PCA test':>10}{'minutes':>9}  threads")
    for name, s in summaries.items():
        print(f"{name:<34}{s['valid_squared_error']:11.2f}{s['test_squared_error']:8.2f}"
              f"{s['pca_test_squared_error']:10.2f}{s['total_seconds'] / 60:9.1f}  {s['threads']}")
    for method in METHODS:  # mean +- standard deviation over the seeds run
        runs_of = [s for name, s in summaries.items() if name.startswith(f"{method}-seed")]
        if len(runs_of) > 1:
            cells = [statistics.mean(v) for v in zip(*((s["valid_squared_error"], s["test_squared_error"])
                                                       for s in runs_of))]
            spread = [statistics.stdev(s[k] for s in runs_of) for k in ("valid_squared_error", "test_squared_error")]
            print(f"{method}, mean +- standard deviation over {len(runs_of)} seeds: validation {cells[0]:.2f} +- "
                  f"{spread[0]:.2f}, test {cells[1]:.2f} +- {spread[1]:.2f}")
    for name, value in PUBLISHED.items():
        print(f"{name + ' (published)':<34}{'':>11}{value:8.2f}")
    curves = {}
    for name in summaries:
        metrics = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        curves[name] = [(m["epoch"], m["valid_squared_error"]) for m in metrics if m["phase"] == "finetune"]
    figure = Figure(figsize=(6.5, 4))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    colours = {"pretrained": "tab:blue", "random": "tab:orange"}
    for name, points in curves.items():
        ax.plot(*zip(*points), color=colours.get(name.split("-seed")[0]), linewidth=1,
                label=f"{name} (test {summaries[name]['test_squared_error']:.2f})")
    ax.axhline(PUBLISHED["RBM-pretrained deep autoencoder"], color="grey", linestyle="--", linewidth=1,
               label="Hinton & Salakhutdinov (2006), test: 3.00")
    first = next(iter(summaries.values()))
    ax.set(xlabel="fine-tuning epoch", ylabel="validation squared error per image", yscale="log",
           title=f"{first['sizes']} on {first['data']} (PCA, {first['code_size']} components: "
                 f"{first['pca_test_squared_error']:.2f})")
    ax.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    write_bytes(out / "deep_reconstruction.png", buffer.getvalue())
    print(f"wrote {out / 'deep_reconstruction.png'}")


def finished_summary(folder: Path) -> dict | None:
    """The summary of a run that ended (not one interrupted, which is resumed), else None."""
    path = folder / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else None
    return None if summary is None or summary.get("interrupted") else summary


if __name__ == "__main__":
    main()
