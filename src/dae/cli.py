"""The `dae` command.

    dae train      train one denoising autoencoder (the tutorial's defaults) and write its outputs
    dae tutorial   the tutorial's experiment: corruption 0% and 30%, filters of each

Data flows one way: options -> data -> model -> training loop -> files.  Every mistake a user
can make (a bad option, a missing or corrupt file, data out of range) ends in one line
``dae: error: ...`` on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from . import __version__
from .autoencoder import ACTIVATIONS, LOSSES, DenoisingAutoencoder
from .data import DataError, Dataset, load_data
from .files import write_bytes, write_text
from .plots import save_filters, save_learning_curve, save_reconstructions
from .saving import ModelFileError, save_model
from .train import EpochResult, TrainingDiverged, as_generator, train

# The tutorial's test_dA: learning_rate=0.1, training_epochs=15, batch_size=20, 500 hidden
# units, corruption 0.0 then 0.3, numpy RandomState(123) for the weights.
DEFAULTS = {"hidden": 500, "epochs": 15, "lr": 0.1, "batch_size": 20, "corruption": 0.3, "seed": 123}
TUTORIAL_CORRUPTION_LEVELS = (0.0, 0.3)
N_PICTURE_EXAMPLES = 10  # digits shown in reconstructions.png


class UsageError(Exception):
    """A mistake in how dae was called: reported as `dae: error: ...`, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block, as for every other user error
        raise UsageError(f"{message} (see {self.prog} --help)")


def _number(kind, check, what):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value) or not check(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
positive_float = _number(float, lambda v: v > 0, "a positive number")
corruption = _number(float, lambda v: 0 <= v < 1, "a corruption level in [0, 1)")
seed = _number(int, lambda v: 0 <= v < 2**63, "a non-negative integer seed")


def build_parser() -> Parser:
    parser = Parser(prog="dae", description="Denoising autoencoders, as in the deeplearning.net tutorial.")
    parser.add_argument("--version", action="version", version=f"dae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def common(p: Parser, corruption_option: bool) -> None:
        d = DEFAULTS
        p.add_argument("--data", default="mnist", metavar="PATH",
                       help="'mnist' (bundled, default), a folder of MNIST-format IDX files, "
                            "or a .npy, .npz, .csv or IDX file with one example per row")
        p.add_argument("--hidden", type=positive_int, default=d["hidden"], help="hidden units (default: %(default)s)")
        p.add_argument("--epochs", type=positive_int, default=d["epochs"], help="training epochs (default: %(default)s)")
        p.add_argument("--lr", type=positive_float, default=d["lr"], help="learning rate (default: %(default)s)")
        p.add_argument("--batch-size", type=positive_int, default=d["batch_size"],
                       help="minibatch size (default: %(default)s)")
        if corruption_option:
            p.add_argument("--corruption", type=corruption, default=d["corruption"],
                           help="fraction of inputs zeroed (default: %(default)s)")
        p.add_argument("--seed", type=seed, default=d["seed"], help="random seed (default: %(default)s)")
        p.add_argument("--loss", choices=LOSSES, default="cross-entropy",
                       help="cross-entropy with a sigmoid decoder (inputs in [0, 1]; default) "
                            "or squared error with a linear decoder")
        p.add_argument("--activation", choices=ACTIVATIONS, default="sigmoid",
                       help="encoder non-linearity (default: %(default)s)")
        p.add_argument("--untied", action="store_true", help="give the decoder its own weights (default: W' = W^T)")
        p.add_argument("--out", metavar="DIR", help="output folder, new or empty (default: a new folder under ./runs/)")
        p.add_argument("--quiet", action="store_true", help="print only errors")

    train_p = sub.add_parser("train", help="train one denoising autoencoder",
                             description="Train one denoising autoencoder; defaults are the tutorial's.")
    common(train_p, corruption_option=True)
    tutorial_p = sub.add_parser("tutorial", help="the tutorial's experiment: corruption 0%% and 30%%",
                                description="The tutorial's experiment: train a dA with corruption 0%% and "
                                            "30%% and save the filters of each.")
    common(tutorial_p, corruption_option=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return {"train": run_train, "tutorial": run_tutorial}[args.command](args)
    except (UsageError, DataError, ModelFileError, TrainingDiverged) as e:
        print(f"dae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dae: interrupted", file=sys.stderr)
        return 130


# --- the subcommands ------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Dataset:
    """The data the options name, checked against the options before anything is written."""
    data = load_data(args.data, loss=args.loss)
    n = data.train.x.shape[0]
    if n < args.batch_size:
        raise UsageError(f"--batch-size {args.batch_size} is larger than the {n} training examples in {args.data}")
    return data


def run_train(args: argparse.Namespace) -> int:
    data = _load(args)
    out = _output_dir(args.out, "train")
    _say(args, f"Training a {data.train.x.shape[1]}-{args.hidden} dA on {data.name} "
               f"({data.train.x.shape[0]} examples), corruption {args.corruption:g}, writing to {out}")
    summary = _train_one(args, data, args.corruption, out)
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return 0


def run_tutorial(args: argparse.Namespace) -> int:
    data = _load(args)
    out = _output_dir(args.out, "tutorial")
    _say(args, f"The tutorial's experiment on {data.name}: a {data.train.x.shape[1]}-{args.hidden} dA with "
               f"corruption 0% and 30%, writing to {out}")
    runs, curves = [], {}
    for level in TUTORIAL_CORRUPTION_LEVELS:
        name = f"corruption_{round(level * 100)}"
        summary = _train_one(args, data, level, out / name)
        write_bytes(out / f"filters_{name}.png", (out / name / "filters.png").read_bytes())
        runs.append(summary)
        curves[f"corruption {level:.0%}"] = [(r["epoch"], r["cost"]) for r in summary.pop("history")]
    save_learning_curve(out / "learning_curve.png", curves, title=f"dA on {data.name}: mean training cost")
    write_text(out / "summary.json", json.dumps({"runs": runs}, indent=2) + "\n")
    return 0


def _train_one(args: argparse.Namespace, data: Dataset, level: float, out: Path) -> dict:
    """Train one dA as the options say, writing its files into ``out``; return its summary."""
    out.mkdir(parents=True, exist_ok=True)
    x = data.train.x
    generator = as_generator(args.seed, torch.device("cpu"))  # the one place randomness is seeded
    model = DenoisingAutoencoder(x.shape[1], args.hidden, corruption_level=level, tied=not args.untied,
                                 loss=args.loss, activation=args.activation, generator=generator)
    metrics: list[str] = []

    def report(result: EpochResult) -> None:
        _say(args, f"Training epoch {result.epoch}, cost {result.cost:.2f}")
        metrics.append(json.dumps({"epoch": result.epoch, "cost": result.cost, "seconds": round(result.seconds, 4)}))
        write_text(out / "metrics.jsonl", "\n".join(metrics) + "\n")

    start = time.perf_counter()
    history = train(model, x, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                    generator=generator, callback=report, progress=sys.stderr.isatty() and not args.quiet)
    seconds = time.perf_counter() - start
    _say(args, f"The {level:.0%} corruption code ran for {seconds / 60:.2f}m ({seconds:.1f} s, "
               f"{seconds / len(history):.2f} s per epoch)")

    save_model(model, out, image_shape=data.image_shape, data=data.name)
    shown = (data.test or data.valid or data.train).x[:N_PICTURE_EXAMPLES]
    with torch.no_grad():
        corrupted = model.corrupt(shown, generator)
        save_reconstructions(out / "reconstructions.png", shown, corrupted, model.decode(model.encode(corrupted)),
                             data.image_shape)
    save_filters(out / "filters.png", model.W.detach(), data.image_shape)
    save_learning_curve(out / "learning_curve.png", {f"corruption {level:.0%}": [(r.epoch, r.cost) for r in history]},
                        title=f"dA on {data.name}: mean training cost")
    n_train = (x.shape[0] // args.batch_size) * args.batch_size
    summary = {
        "data": data.name, "n_train": n_train, "n_visible": x.shape[1], "n_hidden": args.hidden,
        "corruption_level": level, "loss": args.loss, "activation": args.activation, "tied": not args.untied,
        "epochs": len(history), "learning_rate": args.lr, "batch_size": args.batch_size, "seed": args.seed,
        "final_cost": history[-1].cost, "train_seconds": round(seconds, 3),
        "seconds_per_epoch": round(seconds / len(history), 4),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "history": [{"epoch": r.epoch, "cost": r.cost, "seconds": round(r.seconds, 4)} for r in history],
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


# --- helpers --------------------------------------------------------------------------------


def _output_dir(requested: str | None, command: str) -> Path:
    """The output folder: the one asked for (new or empty), or a new one under ./runs/."""
    if requested is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path, n = Path("runs") / f"{command}-{stamp}", 1
        while path.exists():
            n += 1
            path = Path("runs") / f"{command}-{stamp}-{n}"
    else:
        path = Path(requested)
        if path.exists() and not path.is_dir():
            raise UsageError(f"--out {requested}: exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            raise UsageError(f"--out {requested}: folder is not empty; choose a new or empty one")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError("not writable")
    except OSError as e:
        raise UsageError(f"--out {path}: cannot create or write the folder ({e.strerror or e})") from None
    return path


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
