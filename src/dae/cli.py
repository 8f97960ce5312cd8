"""The `dae` command.

    dae train      train one denoising autoencoder (the tutorial's defaults) and write its outputs
    dae tutorial   the tutorial's experiment: corruption 0% and 30%, filters of each
    dae sda        stacked denoising autoencoders: pre-training, fine-tuning, test error
    dae encode     features of a data set from a trained model
    dae score      reconstruction errors of a data set: anomaly scores

``train``, ``tutorial`` and ``sda`` also run data-parallel under ``torchrun`` (see
:mod:`dae.distributed`); then only rank 0 prints and writes files.

Data flows one way: options -> data -> model -> training loop -> files.  Every mistake a user
can make (a bad option, a missing or corrupt file, data out of range) ends in one line
``dae: error: ...`` on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .autoencoder import ACTIVATIONS, LOSSES, DenoisingAutoencoder
from .corruption import NOISES
from .data import DataError, Dataset, Split, load_data
from .distributed import SINGLE, DeviceError, World, init_world, launched_by_torchrun
from .files import write_bytes, write_text
from .plots import save_filters, save_learning_curve, save_reconstructions
from .saving import (CHECKPOINT, GENERATORS, ModelFileError, load_checkpoint, load_generator_states, load_model,
                     save_checkpoint, save_generator_states, save_model)
from .stacked import StackedDenoisingAutoencoder
from .stream import NpyStream
from .training import (SCHEDULES, EpochResult, FinetuneEpoch, TrainingDiverged, as_generator, finetune, per_layer,
                       pretrain, train)

# The tutorial's test_dA: learning_rate=0.1, training_epochs=15, batch_size=20, 500 hidden
# units, corruption 0.0 then 0.3, numpy RandomState(123) for the weights.
DEFAULTS = {"hidden": 500, "epochs": 15, "lr": 0.1, "batch_size": 20, "corruption": 0.3, "seed": 123}
TUTORIAL_CORRUPTION_LEVELS = (0.0, 0.3)
N_PICTURE_EXAMPLES = 10  # digits shown in reconstructions.png
# A .npy file larger than this is streamed from disk in chunks rather than loaded (--stream).
STREAM_BYTES = 2**30


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
momentum = _number(float, lambda v: 0 <= v < 1, "a momentum in [0, 1)")
non_negative = _number(float, lambda v: v >= 0, "a non-negative number")
probability = _number(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def _list_of(parse_one):
    def parse(text: str) -> list:
        return [parse_one(part.strip()) for part in text.split(",")]

    return parse


# The tutorial's SdA.py (test_SdA): 3 x 1000 sigmoid units, corruption 0.1, 0.2, 0.3,
# pre-training at learning rate 0.001 for 15 epochs, fine-tuning at 0.1 for at most 1000
# epochs with early stopping, batch size 1, minibatches in order, seed 89677.
SDA_PRESETS = {
    "tutorial": dict(hidden=[1000, 1000, 1000], corruption=[0.1, 0.2, 0.3], pretrain_epochs=[15],
                     pretrain_lr=[0.001], pretrain_batch_size=1, finetune_epochs=1000, finetune_lr=0.1,
                     batch_size=1, momentum=0.0, schedule="constant", shuffle=False, finetune_corruption=0.0,
                     dropout=0.0, patience=10, seed=89677),
    # Ours, for 15 minutes on 2 cores: the tutorial's network, noise and seed; minibatches of
    # 20 for pre-training (the dA tutorial's) and 100 for fine-tuning, so that the work is
    # matrix-matrix products; for fine-tuning, momentum 0.9 and a cosine decay of the rate,
    # shuffling, and two regularisers that stand in for the noise of the tutorial's batch-1
    # steps: 10% masking of the inputs and dropout 0.2 on the hidden units.  See the README.
    "default": dict(hidden=[1000, 1000, 1000], corruption=[0.1, 0.2, 0.3], pretrain_epochs=[10],
                    pretrain_lr=[0.05], pretrain_batch_size=20, finetune_epochs=80, finetune_lr=0.1,
                    batch_size=100, momentum=0.9, schedule="cosine", shuffle=True, finetune_corruption=0.1,
                    dropout=0.2, patience=10, seed=89677),
    # Ours, for the best error in an hour on 2 cores: the default's recipe with 15 pre-training
    # epochs (the tutorial's count) and three times the fine-tuning, made to pay off by stronger
    # regularisation (20% input masking, dropout 0.3), as dropout nets keep improving with
    # longer training (Srivastava et al., JMLR 2014, who drop 20% of the inputs).  See the README.
    "best": dict(hidden=[1000, 1000, 1000], corruption=[0.1, 0.2, 0.3], pretrain_epochs=[15],
                 pretrain_lr=[0.05], pretrain_batch_size=20, finetune_epochs=250, finetune_lr=0.1,
                 batch_size=100, momentum=0.9, schedule="cosine", shuffle=True, finetune_corruption=0.2,
                 dropout=0.3, patience=10, seed=89677),
}


def _device_option(p: Parser) -> None:
    p.add_argument("--device", default="auto", metavar="{auto,cpu,cuda,cuda:N}",
                   help="where to compute: auto (a GPU if there is one, else the CPU; default), cpu, cuda or cuda:N")


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
                           help="noise level: the fraction of inputs zeroed for masking (default: %(default)s)")
        p.add_argument("--noise", choices=NOISES, default="masking",
                       help="noise process; --corruption is its level: p, sigma or nu (default: %(default)s)")
        p.add_argument("--seed", type=seed, default=d["seed"], help="random seed (default: %(default)s)")
        p.add_argument("--loss", choices=LOSSES, default="cross-entropy",
                       help="cross-entropy with a sigmoid decoder (inputs in [0, 1]; default) "
                            "or squared error with a linear decoder")
        p.add_argument("--activation", choices=ACTIVATIONS, default="sigmoid",
                       help="encoder non-linearity (default: %(default)s)")
        p.add_argument("--untied", action="store_true", help="give the decoder its own weights (default: W' = W^T)")
        p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="default: %(default)s (the tutorial's)")
        p.add_argument("--momentum", type=momentum, default=0.0, metavar="M", help="SGD momentum (default: 0)")
        p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (with --momentum)")
        p.add_argument("--weight-decay", type=non_negative, default=0.0, metavar="X",
                       help="L2 weight decay on the weights (default: 0)")
        p.add_argument("--schedule", choices=sorted(SCHEDULES), default="constant",
                       help="learning-rate schedule over the epochs (default: %(default)s)")
        p.add_argument("--sparsity-target", type=probability, default=0.05, metavar="RHO",
                       help="target mean activation of the sparsity penalty (default: %(default)s)")
        p.add_argument("--sparsity-weight", type=non_negative, default=0.0, metavar="BETA",
                       help="weight of the sparsity penalty, KL(rho || mean activation) (default: 0, off)")
        p.add_argument("--contraction", type=non_negative, default=0.0, metavar="LAMBDA",
                       help="weight of the contractive penalty ||J||_F^2 (default: 0, off)")
        p.add_argument("--out", metavar="DIR", help="output folder, new or empty (default: a new folder under ./runs/)")
        p.add_argument("--quiet", action="store_true", help="print only errors")
        p.add_argument("--shuffle", action=argparse.BooleanOptionalAction,
                       help="visit the examples in a new order each epoch (default: in order, as the tutorial; "
                            "shuffled when streaming)")
        p.add_argument("--stream", action=argparse.BooleanOptionalAction,
                       help=f"read a .npy file from disk in chunks while training, for data larger than memory "
                            f"(default: for files over {STREAM_BYTES // 2**30} GiB)")
        _device_option(p)

    train_p = sub.add_parser("train", help="train one denoising autoencoder",
                             description="Train one denoising autoencoder; defaults are the tutorial's.")
    common(train_p, corruption_option=True)
    train_p.add_argument("--checkpoint-every", type=positive_int, default=1, metavar="N",
                         help="write DIR/checkpoint.safetensors every N epochs (default: %(default)s)")
    train_p.add_argument("--resume", metavar="DIR",
                         help="continue the run in DIR from its last checkpoint, with its own options")
    sda_parser(sub)
    for name, text in (("encode", "write the features (codes) of each row of a data set"),
                       ("score", "write the reconstruction error of each row: an anomaly score")):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("--model", required=True, metavar="DIR", help="a model folder written by dae train or dae sda")
        p.add_argument("--data", required=True, metavar="PATH",
                       help="'mnist' (bundled), a folder of MNIST-format IDX files, or a .npy, .npz, .csv or IDX file")
        p.add_argument("--split", choices=("train", "valid", "test"), default="train",
                       help="which split of a data set with several (default: %(default)s)")
        p.add_argument("--out", required=True, metavar="FILE", help="a new .npy (or, for score, .csv) file")
        if name == "encode":
            p.add_argument("--layer", type=positive_int, metavar="K", help="for SdA models: the layer (default: top)")
        _device_option(p)
    tutorial_p = sub.add_parser("tutorial", help="the tutorial's experiment: corruption 0%% and 30%%",
                                description="The tutorial's experiment: train a dA with corruption 0%% and "
                                            "30%% and save the filters of each.")
    common(tutorial_p, corruption_option=False)
    return parser


def sda_parser(sub) -> None:
    p = sub.add_parser("sda", help="stacked denoising autoencoders: pre-train, fine-tune, classify",
                       description="Greedy layer-wise pre-training of a stack of dAs, then supervised "
                                   "fine-tuning of the whole network with early stopping. Options "
                                   "override the preset's values.")
    p.add_argument("--preset", choices=sorted(SDA_PRESETS), default="default",
                   help="'tutorial' is exactly the tutorial's SdA.py; 'default' is ours, for speed (default); "
                        "'best' is ours, for the lowest error in an hour")
    p.add_argument("--data", default="mnist", metavar="PATH",
                   help="labelled data: 'mnist' (default), a folder of MNIST-format IDX files, or an .npz "
                        "with x_train, y_train (and optionally x_valid, y_valid, x_test, y_test)")
    p.add_argument("--hidden", type=_list_of(positive_int), metavar="N,N,...", help="hidden layer sizes")
    p.add_argument("--corruption", type=_list_of(corruption), metavar="P,P,...",
                   help="masking level of each layer's dA")
    p.add_argument("--pretrain-epochs", type=_list_of(positive_int), metavar="N[,N,...]",
                   help="pre-training epochs, one value or one per layer")
    p.add_argument("--pretrain-lr", type=_list_of(positive_float), metavar="X[,X,...]",
                   help="pre-training learning rate, one value or one per layer")
    p.add_argument("--pretrain-batch-size", type=positive_int, metavar="N")
    p.add_argument("--finetune-epochs", type=positive_int, metavar="N", help="the most fine-tuning epochs")
    p.add_argument("--finetune-lr", type=positive_float, metavar="X")
    p.add_argument("--batch-size", type=positive_int, metavar="N", help="fine-tuning minibatch size")
    p.add_argument("--momentum", type=momentum, metavar="M", help="fine-tuning momentum")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), help="fine-tuning learning-rate schedule")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, help="shuffle the examples each epoch")
    p.add_argument("--finetune-corruption", type=corruption, metavar="P",
                   help="fraction of each input masked during fine-tuning (a regulariser; tutorial: 0)")
    p.add_argument("--dropout", type=corruption, metavar="P", help="dropout of hidden units during fine-tuning")
    p.add_argument("--patience", type=positive_int, metavar="EPOCHS", help="initial patience, in epochs")
    p.add_argument("--seed", type=seed)
    p.add_argument("--no-pretrain", action="store_true",
                   help="the baseline: the same network and recipe from random initialisation")
    p.add_argument("--pretrained", metavar="DIR",
                   help="start fine-tuning from this pre-trained model (a run's pretrained/ folder)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--out", metavar="DIR", help="output folder, new or empty (default: a new folder under ./runs/)")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    _device_option(p)


def main(argv: list[str] | None = None) -> int:
    world = SINGLE
    where = ""  # which process speaks, when there are several
    try:
        args = build_parser().parse_args(argv)
        commands = {"train": run_train, "tutorial": run_tutorial, "sda": run_sda, "encode": run_encode,
                    "score": run_score}
        if args.command in ("encode", "score") and launched_by_torchrun():
            raise UsageError(f"dae {args.command} runs in one process: run it without torchrun")
        world = init_world(args.device)
        if world.size > 1:
            where = f"[rank {world.rank}] "
            args.quiet = args.quiet or not world.main  # only rank 0 prints
        return commands[args.command](args, world)
    except (UsageError, DataError, ModelFileError, TrainingDiverged, DeviceError) as e:
        print(f"dae: error: {where}{e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the disk filled up while writing an output
        print(f"dae: error: {where}{e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dae: interrupted", file=sys.stderr)
        return 130
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _on_main(world: World, make):
    """``make()`` on rank 0 only (e.g. creating the output folder); every rank learns whether
    it worked, so that a mistake found there stops all processes, not rank 0 alone."""
    result, error = None, None
    if world.main:
        try:
            result = make()
        except UsageError as e:
            error = e
    if not world.all_ok(error is None):
        raise error or UsageError("rank 0 could not start the run (see its message)")
    return result


# --- the subcommands ------------------------------------------------------------------------


def _load(args: argparse.Namespace, world: World) -> Dataset:
    """The data the options name, checked against the options before anything is written.

    A large .npy file (or any, with --stream) is not loaded: its training split is then an
    :class:`NpyStream`, whose values are checked chunk by chunk as training reads them.
    """
    if args.nesterov and not args.momentum:
        raise UsageError("--nesterov needs --momentum")
    if args.sparsity_weight and args.activation != "sigmoid":
        raise UsageError("the sparsity penalty needs sigmoid codes (--activation sigmoid)")
    path = Path(args.data)
    big = path.suffix.lower() == ".npy" and path.is_file() and path.stat().st_size > STREAM_BYTES
    if args.stream and path.suffix.lower() != ".npy":
        raise UsageError(f"--stream reads .npy files; {args.data} is not one")
    if args.stream or (args.stream is None and big):
        # Chunks of whole minibatches; with several processes, at least four chunks for each.
        stream = NpyStream(path, loss=args.loss, rows_multiple=args.batch_size)
        if world.size > 1 and stream.n_chunks < 4 * world.size:
            size = stream.n_rows * stream.n_cols * 4 // (4 * world.size)
            stream = NpyStream(path, loss=args.loss, rows_multiple=args.batch_size, chunk_bytes=max(1, size))
        data = Dataset(Split(stream), None, None, stream.image_shape, stream.name)
    else:
        data = load_data(args.data, loss=args.loss)
    n = _rows(data.train.x)
    if n < args.batch_size * world.size:
        per = "" if world.size == 1 else f" x {world.size} processes"
        raise UsageError(f"--batch-size {args.batch_size}{per} is larger than the {n} training examples in {args.data}")
    return data


def _rows(x) -> int:
    return x.n_rows if isinstance(x, NpyStream) else x.shape[0]


def _cols(x) -> int:
    return x.n_cols if isinstance(x, NpyStream) else x.shape[1]


def run_train(args: argparse.Namespace, world: World) -> int:
    checkpoint = None
    if args.resume is not None:
        out = Path(args.resume)
        checkpoint = load_checkpoint(out / CHECKPOINT, kind=DenoisingAutoencoder)
        options = checkpoint.state.get("options")
        if not isinstance(options, dict) or set(options) != set(vars(args)):
            raise UsageError(f"--resume {args.resume}: the checkpoint's options are not those of this dae train")
        args = argparse.Namespace(**{**options, "resume": args.resume, "quiet": args.quiet, "device": args.device})
    data = _load(args, world)
    x = data.train.x
    keep = _is_folder(args.out)
    if checkpoint is None:
        out = _on_main(world, lambda: _output_dir(args.out, "train"))
    elif checkpoint.model.n_visible != _cols(x):
        raise UsageError(f"--resume {args.resume}: the data {args.data} no longer fit the checkpoint's model")
    streamed = " streamed from disk" if isinstance(x, NpyStream) else ""
    _say(args, f"Training a {_cols(x)}-{args.hidden} dA on {data.name} ({_rows(x)} examples{streamed}), "
               f"corruption {args.corruption:g}, {_where(world)}, writing to {out}")
    with _no_empty_folder(out if checkpoint is None and world.main else None, keep):
        _train_one(args, world, data, args.corruption, out, checkpoint)
    return 0


def run_tutorial(args: argparse.Namespace, world: World) -> int:
    data = _load(args, world)
    keep = _is_folder(args.out)
    out = _on_main(world, lambda: _output_dir(args.out, "tutorial"))
    _say(args, f"The tutorial's experiment on {data.name}: a {_cols(data.train.x)}-{args.hidden} dA with "
               f"corruption 0% and 30%, {_where(world)}, writing to {out}")
    runs, curves = [], {}
    with _no_empty_folder(out, keep):
        _tutorial_runs(args, world, data, out, runs, curves)
    if world.main:
        save_learning_curve(out / "learning_curve.png", curves, title=f"dA on {data.name}: mean training cost")
        write_text(out / "summary.json", json.dumps({"runs": runs}, indent=2) + "\n")
    return 0


def _tutorial_runs(args: argparse.Namespace, world: World, data: Dataset, out: Path | None, runs: list,
                   curves: dict) -> None:
    for level in TUTORIAL_CORRUPTION_LEVELS:
        name = f"corruption_{round(level * 100)}"
        summary = _train_one(args, world, data, level, None if out is None else out / name)
        runs.append(summary)
        curves[f"corruption {level:.0%}"] = [(r["epoch"], r["cost"]) for r in summary.pop("history")]
        if world.main:
            write_bytes(out / f"filters_{name}.png", (out / name / "filters.png").read_bytes())


@contextlib.contextmanager
def _no_empty_folder(out: Path | None, keep: bool = False):
    """If what runs inside fails, remove the output folder ``out`` (None: nothing to do) when
    nothing was written into it, so that a run that never started leaves no trace.  ``keep``:
    the folder was the user's before the run (an existing empty --out); only ours go."""
    try:
        yield
    except BaseException:
        if out is not None and out.is_dir():
            folders = sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for folder in folders + ([] if keep else [out]):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only an empty folder can be removed
        raise


def _where(world: World) -> str:
    if world.size == 1:
        return f"on {world.device}"
    return f"on {world.size} processes ({world.device.type})"


def _generators(seed: int, world: World) -> tuple[torch.Generator, torch.Generator]:
    """(the generator of the initial weights, this process's generator for training noise).

    The weights are drawn on the CPU from ``seed`` on every process, so that they do not depend
    on the device or the number of processes.  On one CPU process the training noise continues
    that same generator (the tutorial's single stream); elsewhere each process has its own,
    seeded with :meth:`World.seed`, on its device.
    """
    init = as_generator(seed, torch.device("cpu"))  # the one place randomness is seeded
    if world.device.type == "cpu" and world.main:
        return init, init
    return init, as_generator(world.seed(seed), world.device)


def _rank_generator_states(world: World, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every process's generator state, gathered for rank 0's checkpoint (several processes only)."""
    if world.size == 1:
        return {}
    return {f"rank_generator.{r}": s for r, s in enumerate(world.gather_bytes(generator.get_state()))}


def _resume_generator(world: World, generator: torch.Generator, checkpoint, where: str) -> None:
    """Put ``generator`` back in the state this process's generator had at the checkpoint."""
    saved = checkpoint.state.get("world_size", 1)
    if saved != world.size:
        raise UsageError(f"--resume {where}: the run had {saved} process(es); resume it with as many, not {world.size}")
    state = checkpoint.tensors.get(f"rank_generator.{world.rank}") if world.size > 1 else checkpoint.generator_state
    try:
        generator.set_state(state)
    except (RuntimeError, TypeError):
        raise UsageError(f"--resume {where}: the checkpoint's random state is for another kind of device "
                         f"than {world.device}") from None


def _train_one(args: argparse.Namespace, world: World, data: Dataset, level: float, out: Path | None,
               checkpoint=None) -> dict:
    """Train one dA as the options say, writing its files into ``out`` (rank 0); return its summary.

    A checkpoint (``checkpoint.safetensors``: the weights, the random generators' states, the
    history and the options) is written every ``--checkpoint-every`` epochs and at the end, so
    that ``--resume`` continues the run bit for bit as if it had not stopped.
    """
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    x = data.train.x
    init, generator = _generators(args.seed, world)
    if checkpoint is None:
        model = DenoisingAutoencoder(_cols(x), args.hidden, corruption_level=level, noise=args.noise,
                                     tied=not args.untied, loss=args.loss, activation=args.activation,
                                     sparsity_target=args.sparsity_target, sparsity_weight=args.sparsity_weight,
                                     contraction=args.contraction, generator=init)
        history: list[EpochResult] = []
        optimizer_state: dict = {}
    else:
        model, optimizer_state = checkpoint.model, checkpoint.optimizer_state
        _resume_generator(world, generator, checkpoint, args.resume)
        history = [EpochResult(**r) for r in checkpoint.state["history"]]
    model.to(world.device)
    every = getattr(args, "checkpoint_every", None)
    options = {k: v for k, v in vars(args).items() if k != "resume"} | {"resume": None}
    streamed = isinstance(x, NpyStream)
    shuffle = streamed if args.shuffle is None else args.shuffle

    def write_metrics() -> None:
        if world.main:
            write_text(out / "metrics.jsonl", "".join(
                json.dumps({"epoch": r.epoch, "cost": r.cost, "seconds": round(r.seconds, 4)}) + "\n"
                for r in history))

    def report(result: EpochResult) -> None:
        _say(args, f"Training epoch {result.epoch}, cost {result.cost:.2f}")
        history.append(result)
        write_metrics()
        if every is not None and (result.epoch % every == 0 or result.epoch == args.epochs):
            states = _rank_generator_states(world, generator)  # a collective: every rank takes part
            if world.main:
                save_checkpoint(out / CHECKPOINT, model, generator,
                                {"epoch": result.epoch, "history": [vars(r) for r in history], "options": options,
                                 "world_size": world.size}, optimizer_state, tensors=states)

    start = time.perf_counter()
    try:
        train(model, x, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size, generator=generator,
              callback=report, progress=sys.stderr.isatty() and not args.quiet, first_epoch=len(history) + 1,
              optimizer=args.optimizer, momentum=args.momentum, nesterov=args.nesterov,
              weight_decay=args.weight_decay, schedule=args.schedule, optimizer_state=optimizer_state,
              shuffle=shuffle, order_seed=args.seed, world=world)
    except KeyboardInterrupt:
        write_metrics()
        if not world.main:
            raise
        write_text(out / "summary.json", json.dumps({
            "interrupted": True, "epochs_done": len(history), "epochs": args.epochs,
            "final_cost": history[-1].cost if history else None,
            "resume": f"dae train --resume {out}" if every is not None and history else None}, indent=2) + "\n")
        raise
    seconds = time.perf_counter() - start
    _say(args, f"The {level:.0%} corruption code ran for {seconds / 60:.2f}m ({seconds:.1f} s)")

    global_batch = args.batch_size * world.size
    n_train = (_rows(x) // global_batch) * global_batch
    summary = {
        "data": data.name, "n_train": n_train, "n_visible": _cols(x), "n_hidden": args.hidden,
        "corruption_level": level, "noise": args.noise, "loss": args.loss, "activation": args.activation,
        "tied": not args.untied, "optimizer": args.optimizer, "momentum": args.momentum, "nesterov": args.nesterov,
        "weight_decay": args.weight_decay, "schedule": args.schedule, "sparsity_target": args.sparsity_target,
        "sparsity_weight": args.sparsity_weight, "contraction": args.contraction,
        "epochs": len(history), "learning_rate": args.lr, "batch_size": args.batch_size,
        "global_batch_size": global_batch, "world_size": world.size, "device": str(world.device),
        "streamed": streamed, "shuffle": shuffle, "seed": args.seed,
        "final_cost": history[-1].cost, "train_seconds": round(sum(r.seconds for r in history), 3),
        "seconds_per_epoch": round(sum(r.seconds for r in history) / len(history), 4),
        "examples_per_second": round(n_train * len(history) / max(sum(r.seconds for r in history), 1e-9), 1),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "history": [{"epoch": r.epoch, "cost": r.cost, "seconds": round(r.seconds, 4)} for r in history],
    }
    if not world.main:
        return summary
    save_model(model, out, image_shape=data.image_shape, data=data.name)
    source = data.test or data.valid or data.train
    shown = (source.x.head(N_PICTURE_EXAMPLES) if streamed and source is data.train
             else source.x[:N_PICTURE_EXAMPLES]).to(world.device)
    with torch.no_grad():
        corrupted = model.corrupt(shown, generator)
        save_reconstructions(out / "reconstructions.png", shown, corrupted, model.decode(model.encode(corrupted)),
                             data.image_shape)
    save_filters(out / "filters.png", model.W.detach(), data.image_shape)
    save_learning_curve(out / "learning_curve.png", {f"corruption {level:.0%}": [(r.epoch, r.cost) for r in history]},
                        title=f"dA on {data.name}: mean training cost")
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def run_sda(args: argparse.Namespace, world: World) -> int:
    resumed = None
    if args.resume is not None:
        resumed = load_checkpoint(Path(args.resume) / CHECKPOINT, kind=StackedDenoisingAutoencoder)
        options = resumed.state.get("options")
        if not isinstance(options, dict) or set(options) != set(vars(args)):
            raise UsageError(f"--resume {args.resume}: the checkpoint's options are not those of this dae sda")
        args = argparse.Namespace(**{**options, "resume": args.resume, "quiet": args.quiet, "device": args.device})
    keep = _is_folder(args.out)
    run = _SdaRun(args, world, resumed)
    try:
        with _no_empty_folder(run.out if resumed is None and world.main else None, keep):
            run.pretrain()
            run.finetune_and_report()
    except KeyboardInterrupt:
        if not world.main:
            raise
        write_text(run.out / "summary.json", json.dumps({
            "interrupted": True, "epochs_done": len(run.metrics),
            "resume": f"dae sda --resume {run.out}" if (run.out / CHECKPOINT).exists() else None}, indent=2) + "\n")
        raise
    return 0


class _SdaRun:
    """One `dae sda` run: its data, model and options, and the checkpoint written after every
    epoch of either phase (the weights, the generator, the metrics so far and, in fine-tuning,
    the momentum, the early-stopping counters and the best parameters), from which
    ``--resume`` continues bit for bit."""

    def __init__(self, args: argparse.Namespace, world: World, resumed) -> None:
        self.args, self.world, o = args, world, _sda_options(args)
        self.o = o
        data = self.data = load_data(args.data, loss="cross-entropy")
        (x, y), (vx, vy), test = self.train_set, self.valid_set, self.test_set = _labelled_splits(data, args.data)
        if len(x) < max(o["batch_size"], o["pretrain_batch_size"]) * world.size:
            per = "" if world.size == 1 else f" x {world.size} processes"
            raise UsageError(f"the batch size{per} is larger than the {len(x)} training examples in {args.data}")
        n_classes = int(y.max()) + 1
        if n_classes < 2 or int(vy.max()) >= n_classes or (test is not None and int(test[1].max()) >= n_classes):
            raise DataError(f"{args.data}: labels must be integers 0..K-1 with K >= 2, and the validation and "
                            f"test labels within the training labels' range 0..{n_classes - 1}")
        init, self.generator = _generators(o["seed"], world)
        if resumed is not None:
            model = resumed.model
            _resume_generator(world, self.generator, resumed, args.resume)
        elif args.pretrained is not None:
            model = load_model(args.pretrained, kind=StackedDenoisingAutoencoder)
            self._continue_generator(Path(args.pretrained) / GENERATORS)
        else:
            model = StackedDenoisingAutoencoder(x.shape[1], o["hidden"], n_classes, o["corruption"], generator=init)
        if model.n_visible != x.shape[1] or model.n_classes != n_classes:
            raise UsageError(f"the model has {model.n_visible} inputs and {model.n_classes} classes, "
                             f"the data {x.shape[1]} and {n_classes}")
        self.model, self.n_classes = model.to(world.device), n_classes
        self.pre_epochs = _per_layer_option(o["pretrain_epochs"], model, "--pretrain-epochs")
        self.pre_lr = _per_layer_option(o["pretrain_lr"], model, "--pretrain-lr")
        self.out = Path(args.resume) if resumed is not None else _on_main(world, lambda: _output_dir(args.out, "sda"))
        sizes = "-".join(str(n) for n in [x.shape[1], *model.hidden_layer_sizes, n_classes])
        _say(args, f"SdA {sizes} on {data.name} ({len(x)} train, {len(vx)} valid, "
                   f"{0 if test is None else len(test[0])} test examples), preset {args.preset}, {_where(world)}, "
                   f"writing to {self.out}")
        self.saved = resumed.state if resumed is not None else {
            "phase": "pretrain", "layer": 1, "epoch": 0, "metrics": [], "pretrain_seconds": 0.0, "finetune_seconds": 0.0}
        self.metrics: list[dict] = list(self.saved["metrics"])
        self.finetune_state: dict = {}
        if resumed is not None and self.saved["phase"] == "finetune":
            self.finetune_state = {**self.saved["finetune"], "best_params": _prefixed(resumed.tensors, "best."),
                                   "velocity": _velocity(resumed.tensors)}
        self.options = {k: v for k, v in vars(args).items() if k != "resume"} | {"resume": None}
        self.clock = {"pretrain": self.saved["pretrain_seconds"], "finetune": self.saved["finetune_seconds"]}
        self.since = time.perf_counter()
        self.progress = sys.stderr.isatty() and not args.quiet

    def _continue_generator(self, path: Path) -> None:
        """Continue this process's random stream where the pre-training run left it, so that
        fine-tuning from --pretrained draws what that run's fine-tuning drew (when the seed, the
        number of processes and the kind of device are the same; else it starts from the seed)."""
        if not path.is_file():
            return
        states, seed = load_generator_states(path)
        if seed == self.o["seed"] and len(states) == self.world.size:
            with contextlib.suppress(RuntimeError, TypeError):  # a state for another kind of device
                self.generator.set_state(states[self.world.rank])

    def log(self, record: dict) -> None:
        self.metrics.append(record)
        if self.world.main:
            write_text(self.out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.metrics))

    def tick(self, phase: str) -> None:
        """Add the time since the last tick to ``phase``'s clock."""
        now = time.perf_counter()
        self.clock[phase] += now - self.since
        self.since = now

    def save_progress(self, phase: str, **where) -> None:
        self.tick(phase)
        state = {"options": self.options, "phase": phase, "metrics": self.metrics,
                 "pretrain_seconds": self.clock["pretrain"], "finetune_seconds": self.clock["finetune"], **where}
        tensors = {}
        if phase == "finetune":
            f = self.finetune_state
            state["finetune"] = {k: v for k, v in f.items() if k not in ("best_params", "velocity")}
            tensors = {f"best.{k}": v for k, v in (f["best_params"] or {}).items()}
            for k, (vW, vb) in enumerate(f["velocity"]):
                tensors[f"velocity.{k}.W"], tensors[f"velocity.{k}.b"] = vW, vb
        tensors.update(_rank_generator_states(self.world, self.generator))  # a collective: every rank takes part
        if self.world.main:
            state["world_size"] = self.world.size
            save_checkpoint(self.out / CHECKPOINT, self.model, self.generator, state, tensors=tensors)

    def pretrain(self) -> None:
        args, o = self.args, self.o
        if args.pretrained is not None or args.no_pretrain or self.saved["phase"] != "pretrain":
            return

        def report(layer: int, r: EpochResult) -> None:
            _say(args, f"Pre-training layer {layer}, epoch {r.epoch}, cost {r.cost:.2f}")
            self.log({"phase": "pretrain", "layer": layer, "epoch": r.epoch, "cost": r.cost,
                      "seconds": round(r.seconds, 4)})
            self.save_progress("pretrain", layer=layer, epoch=r.epoch)

        def layer_done(layer: int) -> None:
            states = self.world.gather_bytes(self.generator.get_state())  # a collective: every rank takes part
            if self.world.main:
                save_model(self.model, self.out / "pretrained", pretrained_layers=layer, image_shape=self.data.image_shape)
                save_generator_states(self.out / "pretrained" / GENERATORS, states, o["seed"])

        pretrain(self.model, self.train_set[0], epochs=self.pre_epochs, learning_rate=self.pre_lr,
                 batch_size=o["pretrain_batch_size"], generator=self.generator, callback=report,
                 after_layer=layer_done, progress=self.progress, first_layer=self.saved["layer"],
                 first_epoch=self.saved["epoch"] + 1, world=self.world)
        self.tick("pretrain")
        _say(args, f"The pretraining code ran for {self.clock['pretrain'] / 60:.2f}m")

    def finetune_and_report(self) -> None:
        args, o, model, out = self.args, self.o, self.model, self.out
        curves: dict = {}
        for m in self.metrics:
            if m["phase"] == "pretrain":
                curves.setdefault(f"layer {m['layer']}", []).append((m["epoch"], m["cost"]))
        if curves and self.world.main:
            save_learning_curve(out / "pretrain_curve.png", curves, title="Pre-training: mean cost of each layer's dA")
        n_batches = len(self.train_set[0]) // (o["batch_size"] * self.world.size)

        def report(e: FinetuneEpoch) -> None:
            _say(args, f"epoch {e.epoch}, minibatch {n_batches}/{n_batches}, validation error {e.valid_error:.2%}")
            if e.test_error is not None:
                _say(args, f"     epoch {e.epoch}, minibatch {n_batches}/{n_batches}, "
                           f"test error of best model {e.test_error:.2%}")
            self.log({"phase": "finetune", "epoch": e.epoch, "train_loss": e.train_loss, "valid_error": e.valid_error,
                      "test_error": e.test_error, "learning_rate": e.learning_rate, "seconds": round(e.seconds, 4)})
            self.save_progress("finetune")

        self.since = time.perf_counter()
        result = finetune(model, self.train_set, self.valid_set, self.test_set, max_epochs=o["finetune_epochs"],
                          learning_rate=o["finetune_lr"], batch_size=o["batch_size"], momentum=o["momentum"],
                          schedule=o["schedule"], shuffle=o["shuffle"], input_corruption=o["finetune_corruption"],
                          dropout=o["dropout"], patience_epochs=o["patience"], generator=self.generator,
                          callback=report, progress=self.progress, state=self.finetune_state, order_seed=o["seed"],
                          world=self.world)
        self.tick("finetune")
        test_text = "" if result.test_error is None else f" with test performance {result.test_error:.2%}"
        _say(args, f"Optimization complete with best validation score of {result.best_valid_error:.2%}, "
                   f"at epoch {result.best_epoch}{test_text}")
        _say(args, f"The fine tuning code ran for {self.clock['finetune'] / 60:.2f}m")

        data = self.data
        if not self.world.main:
            return
        save_model(model, out, image_shape=data.image_shape, data=data.name)
        save_filters(out / "filters.png", model.hidden[0].W.detach(), data.image_shape)
        errors = {"validation": [(e.epoch, 100 * e.valid_error) for e in result.history],
                  "test (at new bests)": [(e.epoch, 100 * e.test_error) for e in result.history
                                          if e.test_error is not None]}
        save_learning_curve(out / "finetune_curve.png", errors, ylabel="error (%)", title="Fine-tuning: error rates")
        pre, fine = self.clock["pretrain"], self.clock["finetune"]
        summary = {
            "data": data.name, "preset": args.preset, "pretrained": not args.no_pretrain,
            "best_valid_error": result.best_valid_error, "test_error": result.test_error,
            "best_epoch": result.best_epoch, "finetune_epochs_run": len(result.history),
            "stopped_by": result.stopped_by, "pretrain_seconds": round(pre, 3), "finetune_seconds": round(fine, 3),
            "total_seconds": round(pre + fine, 3), "resumed": args.resume is not None,
            "n_train": len(self.train_set[0]), "n_valid": len(self.valid_set[0]),
            "n_test": None if self.test_set is None else len(self.test_set[0]),
            "hidden_layer_sizes": model.hidden_layer_sizes, "n_classes": self.n_classes,
            **{k: v for k, v in o.items() if k != "hidden"},
            "world_size": self.world.size, "global_batch_size": o["batch_size"] * self.world.size,
            "device": str(self.world.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        }
        write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def _prefixed(tensors: dict, prefix: str) -> dict | None:
    found = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return found or None


def _velocity(tensors: dict) -> list:
    pairs, k = [], 0
    while f"velocity.{k}.W" in tensors:
        pairs.append((tensors[f"velocity.{k}.W"], tensors[f"velocity.{k}.b"]))
        k += 1
    return pairs


def _sda_options(args: argparse.Namespace) -> dict:
    """The preset's hyper-parameters, overridden by the options given."""
    o = dict(SDA_PRESETS[args.preset])
    for key in o:
        if getattr(args, key, None) is not None:
            o[key] = getattr(args, key)
    if len(o["corruption"]) != len(o["hidden"]):
        if args.corruption is not None:
            raise UsageError(f"--corruption gives {len(o['corruption'])} levels for {len(o['hidden'])} layers")
        o["corruption"] = (o["corruption"] * len(o["hidden"]))[: len(o["hidden"])]
    return o


def _per_layer_option(values: list, model: StackedDenoisingAutoencoder, option: str) -> list:
    """One value for every layer, or one per layer, as pretrain() takes them; checked before
    anything is written."""
    try:
        return per_layer(values[0] if len(values) == 1 else values, model.n_layers, option)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _labelled_splits(data: Dataset, source: str):
    """(train, valid, test-or-None) as (x, y) pairs; a missing validation set is the last
    sixth of the training set, as MNIST's 10,000 of 60,000."""
    if data.train.y is None:
        raise DataError(f"{source}: dae sda needs labels (y_train in an .npz, or an MNIST-format folder)")
    x, y = data.train
    if data.valid is not None and data.valid.y is not None:
        valid = tuple(data.valid)
    else:
        n_valid = len(x) // 6
        if n_valid == 0:
            raise DataError(f"{source}: too few training examples ({len(x)}) to split off a validation set")
        x, y, valid = x[:-n_valid], y[:-n_valid], (x[-n_valid:], y[-n_valid:])
    test = tuple(data.test) if data.test is not None and data.test.y is not None else None
    return (x, y), valid, test


def run_encode(args: argparse.Namespace, world: World) -> int:
    model, x = _model_and_rows(args, world.device)
    if isinstance(model, StackedDenoisingAutoencoder):
        layer = model.n_layers if args.layer is None else args.layer
        if layer > model.n_layers:
            raise UsageError(f"--layer {layer}: the model has {model.n_layers} hidden layers")
        encode = lambda rows: model.encode(rows, layer=layer)  # noqa: E731
    else:
        if args.layer not in (None, 1):
            raise UsageError(f"--layer {args.layer}: a DenoisingAutoencoder has one hidden layer")
        encode = model.encode
    with torch.no_grad():
        features = torch.cat([encode(rows.to(world.device)).cpu() for rows in x.split(4096)]).numpy()
    _write_array(args.out, features)
    print(json.dumps({"out": args.out, "rows": features.shape[0], "features": features.shape[1]}))
    return 0


def run_score(args: argparse.Namespace, world: World) -> int:
    model, x = _model_and_rows(args, world.device)
    if not isinstance(model, DenoisingAutoencoder):
        raise UsageError(f"--model {args.model}: score needs a DenoisingAutoencoder (dae train), not an SdA")
    with torch.no_grad():
        scores = torch.cat([model.reconstruction_error(rows.to(world.device)).cpu() for rows in x.split(4096)]).numpy()
    _write_array(args.out, scores)
    q = np.quantile(scores, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    summary = {"out": args.out, "rows": len(scores), "loss": model.loss_name, "mean": float(scores.mean()),
               "std": float(scores.std()), "min": float(scores.min()), "max": float(scores.max()),
               **{f"p{p}": float(v) for p, v in zip((1, 5, 25, 50, 75, 95, 99), q)}}
    print(json.dumps(summary))
    return 0


def _model_and_rows(args: argparse.Namespace, device: torch.device):
    """The model of --model (on ``device``) and the rows of --data --split, checked against each other."""
    model = load_model(args.model).to(device)
    loss = model.loss_name if isinstance(model, DenoisingAutoencoder) else "cross-entropy"
    data = load_data(args.data, loss=loss)
    split = getattr(data, args.split)
    if split is None:
        raise UsageError(f"--split {args.split}: {args.data} has no {args.split} split")
    x = split.x
    if x.shape[1] != model.n_visible:
        raise UsageError(f"{args.data} has {x.shape[1]} values per row, the model expects {model.n_visible}")
    out = Path(args.out)
    suffixes = (".npy", ".csv") if args.command == "score" else (".npy",)
    if out.suffix not in suffixes:
        raise UsageError(f"--out {args.out}: the file name must end in {' or '.join(suffixes)}")
    if out.exists():
        raise UsageError(f"--out {args.out}: already exists; choose a new file name")
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: no such folder {out.parent}")
    return model, x


def _write_array(path: str, array: np.ndarray) -> None:
    """Write a .npy, or a .csv of one value per line, atomically."""
    if path.endswith(".csv"):
        write_text(path, "".join(f"{v!r}\n" for v in array.tolist()))
        return
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes(path, buffer.getvalue())


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


def _is_folder(path: str | None) -> bool:
    return path is not None and Path(path).is_dir()


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
