"""Few labels: MNIST test error with N labels, every other training image unlabelled.

Five methods on the same draws of the N labels (balanced over the classes, from ``--label-seed``
0, 1, 2, ...), side by side with the published rows:

* ``mlp``: the SdA's network (784-1000-1000-1000-10) fine-tuned on the N labels alone, from
  random weights (``dae sda --labels N --no-pretrain``);
* ``sda``: the same network pre-trained on all 60,000 training images, then fine-tuned on the N
  (``dae sda --labels N``);
* ``sda-pl``: the same pre-trained network fine-tuned on the N and on pseudo-labels of every image
  (Lee 2013; ``dae sda --labels N --pseudo-labels 3``, with stronger dropout, see
  ``PSEUDO_LABEL_FINETUNING``); it starts from the ``sda`` run's pre-trained stack of the same draw
  when there is one (pre-training reads no label, so it is the same stack) and counts that run's
  pre-training minutes in its own;
* ``mlp-pl``: the same fine-tuning with pseudo-labels from random weights (what pre-training adds
  to it);
* ``ladder``: the ladder network of Rasmus et al. (2015) (``dae ladder --labels N``).

No label outside the N is read: the SdA and the MLP stop early on a fifth of the N held out, the
ladder runs a fixed schedule.  The recipes were fixed before any run (not chosen on test or
validation labels): ``dae sda``'s default preset with the tutorial's fine-tuning cap of 1000
epochs at a constant rate (``FEW_LABEL_FINETUNING``), and ``dae ladder``'s defaults (the paper's
recipe for 100 labels) but with 1000 labels the authors' recipe for 1000 (``LADDER_RECIPES``).

Every run is a run folder under ``--out`` (``ladder-N1000-draw0/`` ...), with its summary.json,
labelled.json and curves; a run whose summary.json exists is not run again, so the table can be
filled in over several sittings (a folder holding a run of another recipe, e.g. of an earlier
default, stops the script instead).  The small files of the README's 150-epoch ladder runs
(summary.json, run_config.json, labelled.json, metrics.jsonl) are kept in
``benchmarks/results/few_labels/``: ``--existing --out benchmarks/results/few_labels`` prints
their table, and runs added there by later sittings join it.  The script prints the table
(mean +- standard deviation over the draws, wall time per run) and writes ``few_labels.json`` and ``few_labels.png`` (test error
against the number of labels, log scale, one line per method, the published points marked).

``--ladder-epochs E`` runs the ladder for E epochs instead of ``dae ladder``'s 150 (the README's
50-epoch runs, which fit the hour; use another ``--out``).
The ladder's denoising gradient reaches its clean path since 2026-12-02 (as in the authors'
code); the runs kept from before had constant targets, which their run_config.json files now say
(``"target_gradient": false``, added by hand): ``--constant-targets`` lists them.  The 50-epoch
100-label runs in ``benchmarks/results/few_labels_ladder50/`` ran with the gradient an hour before
the setting had a key in the config: theirs say ``true``, added by hand.

    python benchmarks/few_labels.py --labels 100,1000 --draws 3 [--methods mlp,sda,ladder] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import time
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dae import SDA_PRESETS, LadderRunConfig, run_ladder, run_sda
from dae.config import merge, to_dict
from dae.files import write_bytes, write_text

# Test error (%) with N labels, permutation-invariant MNIST: Kingma et al. (2014), table 1; the
# ladder: Rasmus et al. (2015), table 1 (mean and standard deviation over their runs).
PUBLISHED = {
    "plain NN (Kingma 2014)": {100: 25.80, 600: 11.44, 1000: 10.70, 3000: 6.04},
    "CAE (Kingma 2014)": {100: 13.47, 600: 6.30, 1000: 4.77, 3000: 3.22},
    "MTC (Kingma 2014)": {100: 12.03, 600: 5.13, 1000: 3.64, 3000: 2.57},
    "M1+M2 (Kingma 2014)": {100: 3.33, 600: 2.59, 1000: 2.40, 3000: 2.18},
    "ladder (Rasmus 2015)": {100: 1.06, 1000: 0.84},
}
# The SdA's fine-tuning on few labels: the default preset's batch (capped at the labels kept),
# momentum, dropout and input masking, with the tutorial's cap of 1000 epochs and its patience
# rule at a constant rate.  An epoch of 800 labels is 8 steps, so the preset's 80 cosine epochs
# would stop after 640, and the tutorial's initial patience of 10 epochs after 80: patience
# starts at 100 epochs instead.
FEW_LABEL_FINETUNING = {"finetuning": {"epochs": 1000, "schedule": "constant", "patience_epochs": 100}}
# Fine-tuning with pseudo-labels (Lee 2013's alpha_f = 3): an epoch is a pass over all 60,000
# images, so 40 epochs take about 20 minutes on one thread of this machine, the pre-training 10:
# half the hour the issue allows, the other half for slower CPUs.  Dropout 0.5 and 20%
# input masking, as the pseudo-labels come from the network without its noise; chosen over the
# default preset's regularisation and over Lee's own pseudo-labels (those of the noisy pass) by
# the held-out fifth of the labels of draw 0, in 24-epoch trials (see the README).  A cosine
# decay; patience as long as the run, so the epoch with the best held-out error is kept.
PSEUDO_LABEL_FINETUNING = {"model": {"dropout": 0.5, "input_corruption": 0.2},
                           "finetuning": {"epochs": 40, "schedule": "cosine", "pseudo_labels": 3.0,
                                          "patience_epochs": 40}}
# The ladder's recipe for 1000 labels: the authors' own (the command for 1000 labels in the README
# of Rasmus et al. (2015)'s code, CuriousAI/ladder: noise 0.2 on the hidden layers, 0.3 on the
# input as in all their runs, and denoising weights 2000, 20, 0.1, ...); for other N, `dae
# ladder`'s defaults, their recipe for 100 labels.
LADDER_RECIPES = {1000: {"model": {"noise_std": 0.2, "input_noise_std": 0.3,
                                   "denoising_weights": (2000.0, 20.0, 0.1, 0.1, 0.1, 0.1, 0.1)}}}
METHODS = ("mlp", "sda", "sda-pl", "mlp-pl", "ladder")


def config_for(method: str, labels: int, draw: int, out: Path | None = None, ladder_epochs: int | None = None,
               constant_targets: bool = False):
    """The run's configuration; ``ladder_epochs``: the ladder's number of epochs (its schedule
    anneals over the last third); ``constant_targets``: the ladder without the denoising gradient
    into its clean path."""
    config = _config_for(method, labels, draw, out)
    if ladder_epochs and method == "ladder":
        config = merge(config, {"training": {"epochs": ladder_epochs}})
    if constant_targets and method == "ladder":
        config = merge(config, {"model": {"target_gradient": False}})
    return config


def _config_for(method: str, labels: int, draw: int, out: Path | None = None):
    if method == "ladder":
        return merge(LadderRunConfig(), {**LADDER_RECIPES.get(labels, {}), "labels": labels, "label_seed": draw})
    config = merge(SDA_PRESETS["default"], {**FEW_LABEL_FINETUNING, "labels": labels, "label_seed": draw,
                                            "pretrain": not method.startswith("mlp")})
    if method.endswith("-pl"):
        config = merge(config, PSEUDO_LABEL_FINETUNING)
        stack = pretrained_stack(out, labels, draw) if method == "sda-pl" else None
        if stack is not None:
            config = merge(config, {"pretrained": str(stack)})
    return config


def pretrained_stack(out: Path | None, labels: int, draw: int) -> Path | None:
    """The pre-trained stack of this draw's finished ``sda`` run, if there is one."""
    folder = None if out is None else out / f"sda-N{labels}-draw{draw}"
    if folder is None or not (folder / "summary.json").is_file() or not (folder / "pretrained").is_dir():
        return None
    return folder / "pretrained"


def run_one(method: str, labels: int, draw: int, out: Path, existing_only: bool = False,
            ladder_epochs: int | None = None, constant_targets: bool = False) -> dict | None:
    """The run's summary, from its folder if it has one, else by running it (None with ``existing_only``)."""
    folder = out / f"{method}-N{labels}-draw{draw}"
    config = config_for(method, labels, draw, out, ladder_epochs, constant_targets)
    check_recipe(folder, config)
    if (folder / "summary.json").is_file():
        summary = json.loads((folder / "summary.json").read_text())
        if not summary.get("interrupted"):
            return summary
    if existing_only:
        return None
    start = time.perf_counter()
    if method == "ladder":
        summary = run_ladder(config, folder, say=None)
    else:
        summary = run_sda(config, folder, say=None, preset="default")
    summary["benchmark_wall_seconds"] = round(time.perf_counter() - start, 1)
    if getattr(config, "pretrained", None) is not None:  # an sda-pl run: the stack's pre-training counts too
        source = json.loads((Path(config.pretrained).parent / "summary.json").read_text())
        summary["benchmark_wall_seconds"] += source["pretrain_seconds"]
        summary["pretrain_seconds_of_the_stack_reused"] = source["pretrain_seconds"]
    write_text(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def check_recipe(folder: Path, config) -> None:
    """Stop, naming a setting, if ``folder`` holds a run of another recipe (e.g. of an earlier
    default): its figures must not stand in this recipe's table.  Where an ``sda-pl`` run's stack
    came from (``pretrained``: the ``sda`` run's, or pre-trained by itself) is not compared: the
    same seed pre-trains the same stack."""
    path = folder / "run_config.json"
    if not path.is_file():
        return
    wanted, found = _flat(json.loads(json.dumps(to_dict(config)))), _flat(json.loads(path.read_text()))
    differing = sorted(k for k in wanted.keys() | found.keys() if wanted.get(k) != found.get(k) and k != "pretrained")
    if differing:
        k = differing[0]
        raise SystemExit(f"few_labels.py: {folder} holds a run of another recipe ({k} = {found.get(k)!r}, "
                         f"this recipe's: {wanted.get(k)!r}); move it away or choose another --out")


def _flat(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        flat.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return flat


def seconds_of(summary: dict) -> float:
    return summary.get("benchmark_wall_seconds") or summary.get("total_seconds") or summary.get("train_seconds")


def plot(path: Path, table: dict) -> None:
    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for method, rows in table.items():
        ns = sorted(rows)
        means = [rows[n]["mean"] for n in ns]
        stds = [rows[n]["std"] for n in ns]
        ax.errorbar(ns, means, yerr=stds, marker="o", capsize=3, label=f"dae {method} (this script)")
    for name, points in PUBLISHED.items():
        ns = sorted(points)
        ax.plot(ns, [points[n] for n in ns], linestyle=":", marker="x", label=name)
    ax.set(xscale="log", yscale="log", xlabel="labelled examples", ylabel="test error (%)",
           title="MNIST with few labels (permutation invariant)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes(path, buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="100,1000", help="numbers of labels, comma-separated")
    parser.add_argument("--draws", type=int, default=3, help="draws of the labelled set (label seeds 0..D-1)")
    parser.add_argument("--first-draw", type=int, default=0,
                        help="start at this draw (e.g. to run draws side by side in two processes)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--ladder-epochs", type=int, default=None,
                        help="the ladder's epochs (default: dae ladder's, the paper's 150); another --out for each")
    parser.add_argument("--constant-targets", action="store_true",
                        help="the ladder as dae ladder --constant-targets runs it (as before 2026-12-02)")
    parser.add_argument("--out", default="runs/few_labels")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--existing", action="store_true",
                        help="run nothing: the table of the runs already in --out (a cell may then have fewer draws)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label_counts = [int(n) for n in args.labels.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown method {sorted(unknown)[0]}; choose from {', '.join(METHODS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; runs in {out}")
    table: dict = {}
    for n in label_counts:
        for method in methods:
            runs = []
            for draw in range(args.first_draw, args.draws):
                s = run_one(method, n, draw, out, args.existing, args.ladder_epochs, args.constant_targets)
                if s is None:
                    continue
                runs.append({"draw": draw, "test_error": 100 * s["test_error"], "seconds": seconds_of(s)})
                print(f"{method:6s} N={n:5d} draw {draw}: test error {100 * s['test_error']:.2f}%, "
                      f"{seconds_of(s) / 60:.1f} min", flush=True)
            errors = [r["test_error"] for r in runs]
            if not errors:
                continue
            table.setdefault(method, {})[n] = {
                "mean": statistics.fmean(errors), "std": statistics.stdev(errors) if len(errors) > 1 else math.nan,
                "runs": runs}
    print()
    print("test error (%), mean +- standard deviation over [k] draws of the labels; minutes per run")
    header = "".join(f"{n:>26d}" for n in label_counts)
    print(f"{'method':28s}{header}")
    for method, rows in table.items():
        cells = "".join(f"{rows[n]['mean']:>9.2f} +- {rows[n]['std']:4.2f} [{len(rows[n]['runs'])}] "
                        f"({statistics.fmean(r['seconds'] for r in rows[n]['runs']) / 60:3.0f}m)"
                        if n in rows else f"{'':>26s}" for n in label_counts)
        print(f"{'dae ' + method:28s}{cells}")
    for name, points in PUBLISHED.items():
        cells = "".join(f"{points[n]:>26.2f}" if n in points else f"{'':>26s}" for n in label_counts)
        print(f"{name:28s}{cells}")
    write_text(out / "few_labels.json", json.dumps({"label_counts": label_counts, "draws": args.draws,
                                                   "table": table, "published": PUBLISHED,
                                                   "threads": torch.get_num_threads()}, indent=2) + "\n")
    plot(out / "few_labels.png", table)
    print(f"\nwrote {out / 'few_labels.json'} and {out / 'few_labels.png'}")


if __name__ == "__main__":
    main()
