"""`dae sda`'s presets over seeds: the validation and test error of each run, their means and
standard deviations, the wall time of each run, and which recipe the validation error chooses.

Each run goes in its own folder under ``--out``, as ``dae sda --preset NAME --seed S`` writes it,
named ``<recipe>-seed<S>``; the seeds are the preset's own (the tutorial's 89677) and up.  A
recipe is a preset (``default``, ``best``, ``tutorial``), ``no-pretrain`` (the default preset from
random weights, the baseline) or a candidate given as ``--recipe NAME=JSON`` (settings over the
``best`` preset without its refit, so that the validation rows stay out, e.g.
``'{"model": {"dropout": 0.5}}'``).

Selection on validation only: among the candidates for the best preset (every recipe not a preset
whose runs kept a validation set), the one with the lowest mean best-validation error over its
seeds is chosen, and the test error is printed for the presets, the chosen candidate and the
refits (runs that learnt from the validation rows too: ``best``, the chosen recipe refit) only; the
other candidates show their validation errors alone.  A run folder whose summary.json exists is not run again and an
interrupted one is resumed, so the runs can be split over processes side by side (``--recipes``,
``--seeds``, ``--first-seed``) and a last call with ``--recipes ""`` prints the table of all of
them and draws ``sda_presets.png`` (the validation error per fine-tuning epoch of each run).

``--tutorial-seeds N`` also runs ``dae tutorial`` (the dA with 0% and 30% corruption, 15 epochs)
with N seeds from its own (TrainRunConfig's) and prints its final costs' mean and spread.

    python benchmarks/sda_presets.py [--recipes default,best] [--seeds 3] [--first-seed S] [--threads N]
        [--recipe NAME=JSON ...] [--tutorial-seeds N] [--out DIR]
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

from deep_reconstruction import finished_summary  # this folder's: the same rule for a finished run

from dae import SDA_PRESETS, TrainRunConfig, run_sda, run_tutorial
from dae.config import merge
from dae.files import write_bytes

# The baseline beside the presets: the default recipe without pre-training (dae sda --no-pretrain).
RECIPES = {**SDA_PRESETS, "no-pretrain": merge(SDA_PRESETS["default"], {"pretrain": False})}
PRESETS = ("tutorial", "default", "no-pretrain")  # reported as they are; "best" is chosen among candidates
# Srivastava et al. (JMLR 2014), table 2, permutation-invariant MNIST test error, and the JMLR 2010 SdA-3.
PUBLISHED = {"SdA-3 (Vincent et al. 2010)": 1.28, "dropout net, 3x1024 ReLU + max-norm (Srivastava 2014)": 1.06,
             "DBN + dropout fine-tuning (Srivastava 2014)": 0.92}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default="default,best", help=f"which of {', '.join(RECIPES)} and the "
                                                                   "--recipe names to run (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="runs of each recipe (default: %(default)s)")
    parser.add_argument("--first-seed", type=int, default=None, help="the first seed (default: the preset's)")
    parser.add_argument("--recipe", action="append", default=[], metavar="NAME=JSON",
                        help="a candidate for the best preset: settings over the best preset (repeatable)")
    parser.add_argument("--tutorial-seeds", type=int, default=0, help="also run dae tutorial with this many seeds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (default: torch's)")
    parser.add_argument("--out", default="runs/sda_presets", help="a folder for the runs (default: %(default)s)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipes = dict(RECIPES)
    for text in args.recipe:
        name, _, changes = text.partition("=")
        recipes[name] = merge(SDA_PRESETS["best"], {"refit": False, **json.loads(changes)})
    out = Path(args.out)
    for name in filter(None, args.recipes.split(",")):
        if name not in recipes:
            parser.error(f"unknown recipe {name!r}: one of {', '.join(recipes)}")
        first = recipes[name].seed if args.first_seed is None else args.first_seed
        for seed in range(first, first + args.seeds):
            folder = out / f"{name}-seed{seed}"
            if finished_summary(folder) is None:
                if (folder / "checkpoint.safetensors").exists():
                    run_sda(resume=folder)
                else:
                    run_sda(merge(recipes[name], {"seed": seed}), folder)
    first = TrainRunConfig().seed
    for seed in range(first, first + args.tutorial_seeds):
        folder = out / f"tutorial-dA-seed{seed}"
        if finished_summary(folder) is None:
            run_tutorial(merge(TrainRunConfig(), {"seed": seed}), folder)
    if out.is_dir():
        report(out)


def report(out: Path) -> None:
    """Print the table of every finished run under ``out`` and draw sda_presets.png; the candidates
    for the best preset are the recipes that are not in PRESETS and kept a validation set."""
    summaries = {p.name: finished_summary(p) for p in sorted(out.iterdir()) if p.is_dir() and finished_summary(p) is not None}
    sda = {name: s for name, s in summaries.items() if "runs" not in s}
    by_recipe: dict[str, dict[str, dict]] = {}
    for name, s in sda.items():
        by_recipe.setdefault(name.rsplit("-seed", 1)[0], {})[name] = s
    refits = {r for r, runs in by_recipe.items() if any(s["best_valid_error"] is None for s in runs.values())}
    tried = {r: statistics.mean(100 * s["best_valid_error"] for s in runs.values())
             for r, runs in by_recipe.items() if r not in PRESETS and r not in refits}
    chosen = min(tried, key=tried.get) if tried else None
    shown = set(PRESETS) | refits | {chosen}
    width = max([28, *(len(name) + 2 for name in sda)])  # room for the longest run name
    print(f"\nMNIST test and validation error (%), dae sda; torch {torch.__version__}")
    print(f"{'run':<{width}}{'valid':>7}{'epoch':>7}{'test':>7}{'minutes':>9}{'pre':>6}{'fine':>6}  threads")
    for name, s in sda.items():
        recipe = name.rsplit("-seed", 1)[0]
        test = f"{100 * s['test_error']:7.2f}" if recipe in shown else f"{'-':>7}"
        valid = f"{'-':>7}" if s["best_valid_error"] is None else f"{100 * s['best_valid_error']:7.2f}"
        print(f"{name:<{width}}{valid}{s['best_epoch']:7d}{test}{s['total_seconds'] / 60:9.1f}"
              f"{s['pretrain_seconds'] / 60:6.1f}{s['finetune_seconds'] / 60:6.1f}  {s['threads']}")
    print()
    for recipe, runs in by_recipe.items():
        valid = [100 * s["best_valid_error"] for s in runs.values() if s["best_valid_error"] is not None]
        text = f"{recipe}: " + (f"validation {spread(valid)}" if valid else "refit on training + validation rows")
        if recipe in shown:
            text += f", test {spread([100 * s['test_error'] for s in runs.values()])}"
        minutes = sorted(f"{s['total_seconds'] / 60:.0f}" for s in runs.values())
        print(f"{text}; minutes per run: {', '.join(minutes)}")
    if tried:
        ranked = ", ".join(f"{r} {v:.2f}" for r, v in sorted(tried.items(), key=lambda item: item[1]))
        print(f"candidates for the best preset by mean validation error: {ranked}; chosen: {chosen}")
    for name, value in PUBLISHED.items():
        print(f"{name} (published): {value:.2f}")
    tutorial = [s for s in summaries.values() if "runs" in s]
    if tutorial:
        for k, level in enumerate(("0%", "30%")):
            costs = [s["runs"][k]["final_cost"] for s in tutorial]
            print(f"dae tutorial, corruption {level}: final cost {spread(costs)} [{len(costs)} seeds: "
                  f"{', '.join(f'{c:.2f}' for c in costs)}]")
    if sda:
        _plot(out, sda, shown)


def _plot(out: Path, sda: dict[str, dict], shown: set) -> None:
    curves = {}  # run name -> its (epoch, validation error) points; a refit has none
    for name in sda:
        metrics = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        points = [(m["epoch"], 100 * m["valid_error"]) for m in metrics
                  if m.get("phase") == "finetune" and m.get("complete") and m.get("valid_error") is not None]
        if points:
            curves[name] = points
    if not curves:
        print("no validation curves to draw (every run a refit)")
        return
    figure = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    colours = dict(zip(RECIPES, ("tab:grey", "tab:blue", "tab:green", "tab:orange")))
    others = iter(("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan") * 10)
    for name, points in curves.items():
        s, recipe = sda[name], name.rsplit("-seed", 1)[0]
        colours.setdefault(recipe, next(others))
        label = f"{name}: valid {100 * s['best_valid_error']:.2f}"
        if recipe in shown:
            label += f", test {100 * s['test_error']:.2f}"
        ax.plot(*zip(*points), color=colours[recipe], linewidth=0.8, label=label)
    ax.set(xlabel="fine-tuning epoch", ylabel="validation error (%)", ylim=(0.9, 2.0),
           title="dae sda on MNIST: validation error while fine-tuning")
    ax.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    write_bytes(out / "sda_presets.png", buffer.getvalue())
    print(f"wrote {out / 'sda_presets.png'}")


def spread(values: list[float]) -> str:
    """"mean +- standard deviation" of ``values`` to two decimals; the value alone if there is one."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


if __name__ == "__main__":
    main()
