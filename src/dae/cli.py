"""The `dae` command: argparse -> config -> the Python API.

    dae train      train one denoising autoencoder (the tutorial's defaults) and write its outputs
    dae tutorial   the tutorial's experiment: corruption 0% and 30%, filters of each
    dae sda        stacked denoising autoencoders: pre-training, fine-tuning, test error
    dae ladder     a ladder network: semi-supervised learning from few labels
    dae deep       a deep autoencoder: pre-trained stack, unrolled, fine-tuned on reconstruction
    dae encode     features of a data set from a trained model
    dae score      reconstruction errors of a data set: anomaly scores

Settings come from :mod:`dae.config` (its defaults, or a ``dae sda`` preset), then a ``--config``
file (JSON or TOML, e.g. a run's ``run_config.json``), then the options given.  The runs themselves
are :mod:`dae.experiments`.  ``train``, ``tutorial``, ``sda``, ``ladder`` and ``deep`` also run
data-parallel under ``torchrun`` (see :mod:`dae.distributed`); then only rank 0 prints and writes files.  Every
mistake a user can make ends in one line ``dae: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .anomaly import (SCORES, NeighbourScore, check_contamination, codes, reconstruction_errors,
                      threshold_from_contamination)
from .autoencoder import ACTIVATIONS, LOSSES, DenoisingAutoencoder
from .config import (ANOMALY_CODE_WEIGHT, ANOMALY_NEIGHBORS, ANOMALY_SCORE, EVAL_ROWS, OPTIMIZERS, SCHEDULES,
                     SDA_PRESETS, ConfigError, DeepRunConfig, LadderRunConfig, TrainRunConfig, load_config_file, merge)
from .deep import CODE_ACTIVATIONS, DeepAutoencoder
from .corruption import NOISES
from .data import DataError, is_image_folder, load_data
from .distributed import DeviceError, init_world, launched_by_torchrun, leave_world
from .experiments import N_PICTURE_EXAMPLES, run_deep, run_ladder, run_sda, run_train, run_tutorial
from .files import write_bytes, write_text
from .ladder import LadderNetwork
from .plots import save_worst_reconstructions
from .runs import RunError
from .saving import ModelFileError, load_model, read_config
from .stacked import StackedDenoisingAutoencoder
from .train import TrainingDiverged


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
fraction = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
seed = _number(int, lambda v: 0 <= v < 2**63, "a non-negative integer seed")
non_negative = _number(float, lambda v: v >= 0, "a non-negative number")
probability = _number(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def contamination(text: str):
    """--contamination: 'auto' or a fraction in (0, 0.5], as for scikit-learn's IsolationForest."""
    try:
        value = text if text == "auto" else float(text)
        check_contamination(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 0.5] or 'auto', got {text!r}") from None
    return value


def labels_count(text: str):
    """--labels: a positive count, or 'all' (set as None in the config)."""
    return "all" if text == "all" else _number(int, lambda v: v > 0, "a positive number of labels or 'all'")(text)


def image_size(text: str) -> tuple[int, int]:
    """--image-size: "H,W" (height, width), or "N" for N,N."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W or N, positive integers, got {text!r}")
    return (values * 2)[:2]


IMAGE_SIZE_HELP = "resize the images of a --data folder of images to H,W pixels (N: N,N)"


def _list_of(parse_one):
    def parse(text: str) -> list:
        return [parse_one(part.strip()) for part in text.split(",")]

    return parse


# Each option and the setting it sets: (flags, config path, argparse keywords).  Options default
# to None, "not given", so that a --config file or a preset is only overridden by what is given;
# the help shows the setting's default from dae.config.
DA_OPTIONS = [
    ("--data", "data", dict(metavar="PATH", help="'mnist' (bundled), a folder of MNIST-format IDX files, a folder "
                                                 "of images (subfolders as classes), or a .npy, .npz, .csv or IDX "
                                                 "file with one example per row")),
    ("--image-size", "image_size", dict(type=image_size, metavar="H,W", help=IMAGE_SIZE_HELP)),
    ("--hidden", "model.n_hidden", dict(type=positive_int, help="hidden units")),
    ("--corruption", "model.corruption_level", dict(type=fraction, help="noise level: for masking, the fraction "
                                                                        "of inputs zeroed (dae train)")),
    ("--noise", "model.noise", dict(choices=NOISES, help="noise process; --corruption is its level: p, sigma or nu")),
    ("--loss", "model.loss", dict(choices=LOSSES, help="cross-entropy (sigmoid decoder, inputs in [0, 1]) "
                                                      "or squared error (linear decoder)")),
    ("--activation", "model.activation", dict(choices=list(ACTIVATIONS), help="encoder non-linearity")),
    ("--untied", "model.tied", dict(action="store_const", const=False, help="give the decoder its own weights")),
    ("--sparsity-target", "model.sparsity_target", dict(type=probability, metavar="RHO",
                                                        help="target mean activation of the sparsity penalty")),
    ("--sparsity-weight", "model.sparsity_weight", dict(type=non_negative, metavar="BETA",
                                                        help="weight of the sparsity penalty (0: off)")),
    ("--contraction", "model.contraction", dict(type=non_negative, metavar="LAMBDA",
                                                help="weight of the contractive penalty ||J||_F^2 (0: off)")),
    ("--epochs", "training.epochs", dict(type=positive_int, help="training epochs")),
    ("--lr", "training.learning_rate", dict(type=positive_float, help="learning rate")),
    ("--batch-size", "training.batch_size", dict(type=positive_int, help="minibatch size")),
    ("--optimizer", "training.optimizer", dict(choices=OPTIMIZERS, help="sgd is the tutorial's")),
    ("--momentum", "training.momentum", dict(type=fraction, metavar="M", help="SGD momentum")),
    ("--nesterov", "training.nesterov", dict(action="store_const", const=True, help="Nesterov momentum")),
    ("--weight-decay", "training.weight_decay", dict(type=non_negative, metavar="X", help="L2 decay of the weights")),
    ("--schedule", "training.schedule", dict(choices=sorted(SCHEDULES), help="learning-rate schedule")),
    ("--shuffle", "training.shuffle", dict(action=argparse.BooleanOptionalAction,
                                           help="a new order each epoch (None: shuffled when streaming)")),
    ("--stream", "stream", dict(action=argparse.BooleanOptionalAction,
                                help="read a .npy from disk in chunks while training (None: files over 1 GiB)")),
    ("--seed", "seed", dict(type=seed, help="seeds the initial weights and the noise")),
    ("--checkpoint-every", "checkpoint_every", dict(type=positive_int, metavar="N",
                                                    help="write checkpoint.safetensors every N epochs")),
]
# The pre-training of a stack's dAs, for dae sda and dae deep.
PRETRAIN_OPTIONS = [
    ("--pretrain-epochs", "pretraining.epochs", dict(type=_list_of(positive_int), metavar="N[,N,...]",
                                                     help="pre-training epochs, one value or one per layer")),
    ("--pretrain-lr", "pretraining.learning_rate", dict(type=_list_of(positive_float), metavar="X[,X,...]",
                                                        help="pre-training learning rate, one or one per layer "
                                                             "(dae deep: one rate puts a linear code layer's dA at "
                                                             "a fifth of it)")),
    ("--pretrain-batch-size", "pretraining.batch_size", dict(type=positive_int, metavar="N",
                                                            help="pre-training minibatch size")),
]
SDA_OPTIONS = [
    ("--data", "data", dict(metavar="PATH", help="labelled data: 'mnist', a folder of MNIST-format IDX files, a "
                                                 "folder of images in one subfolder per class, or an .npz with "
                                                 "x_train, y_train (and x_valid, y_valid, x_test, y_test)")),
    ("--image-size", "image_size", dict(type=image_size, metavar="H,W", help=IMAGE_SIZE_HELP)),
    ("--hidden", "model.hidden_layer_sizes", dict(type=_list_of(positive_int), metavar="N,N,...",
                                                  help="hidden layer sizes")),
    ("--corruption", "model.corruption_levels", dict(type=_list_of(fraction), metavar="P,P,...",
                                                     help="masking level of each layer's dA")),
    ("--dropout", "model.dropout", dict(type=fraction, metavar="P", help="dropout of hidden units in fine-tuning")),
    ("--finetune-corruption", "model.input_corruption", dict(type=fraction, metavar="P",
                                                             help="input masking in fine-tuning")),
    *PRETRAIN_OPTIONS,
    ("--finetune-epochs", "finetuning.epochs", dict(type=positive_int, metavar="N", help="the most fine-tuning epochs")),
    ("--finetune-lr", "finetuning.learning_rate", dict(type=positive_float, metavar="X",
                                                       help="fine-tuning learning rate")),
    ("--batch-size", "finetuning.batch_size", dict(type=positive_int, metavar="N", help="fine-tuning minibatch size")),
    ("--momentum", "finetuning.momentum", dict(type=fraction, metavar="M", help="fine-tuning momentum")),
    ("--schedule", "finetuning.schedule", dict(choices=sorted(SCHEDULES), help="fine-tuning learning-rate schedule")),
    ("--shuffle", "finetuning.shuffle", dict(action=argparse.BooleanOptionalAction, help="shuffle every epoch")),
    ("--patience", "finetuning.patience_epochs", dict(type=positive_int, metavar="EPOCHS", help="initial patience")),
    ("--pseudo-labels", "finetuning.pseudo_labels", dict(type=non_negative, metavar="ALPHA",
                                                         help="weight of the pseudo-label cost on the unlabelled "
                                                              "images in fine-tuning (Lee 2013: 3; 0: none); needs "
                                                              "--labels or unlabelled rows")),
    ("--seed", "seed", dict(type=seed, help="seeds the initial weights, the noise and the validation split")),
    ("--no-pretrain", "pretrain", dict(action="store_const", const=False,
                                       help="the baseline: the same network and recipe from random weights")),
    ("--pretrained", "pretrained", dict(metavar="DIR", help="fine-tune this pre-trained model (a run's pretrained/)")),
    ("--refit", "refit", dict(action=argparse.BooleanOptionalAction,
                              help="learn from the validation rows too, for as many fine-tuning updates as on the "
                                   "training rows alone, without early stopping (the best preset's)")),
]
LABEL_OPTIONS = [
    ("--labels", "labels", dict(type=labels_count, metavar="N|all",
                                help="learn from N labels drawn balanced from the training set, with every "
                                     "training image as unlabelled data; no other label is read (dae sda stops "
                                     "early on a fifth of the N)")),
    ("--label-seed", "label_seed", dict(type=seed, metavar="SEED", help="the draw of the --labels")),
]
SDA_OPTIONS += LABEL_OPTIONS
LADDER_OPTIONS = [
    ("--data", "data", SDA_OPTIONS[0][2]),
    SDA_OPTIONS[1],  # --image-size
    ("--hidden", "model.hidden_layer_sizes", dict(type=_list_of(positive_int), metavar="N,N,...",
                                                  help="hidden layer sizes")),
    ("--noise-std", "model.noise_std", dict(type=non_negative, metavar="SIGMA",
                                            help="Gaussian noise on every layer of the corrupted path")),
    ("--input-noise-std", "model.input_noise_std", dict(type=non_negative, metavar="SIGMA",
                                                        help="Gaussian noise on the input of the corrupted path")),
    ("--denoising-weights", "model.denoising_weights", dict(type=_list_of(non_negative), metavar="W,W,...",
                                                            help="weight of each layer's denoising cost, the input "
                                                                 "first, the top last")),
    ("--constant-targets", "model.target_gradient", dict(action="store_const", const=False,
                                                         help="no denoising gradient into the clean path: its "
                                                              "targets as constants (dae before 2026-12-02)")),
    ("--epochs", "training.epochs", dict(type=positive_int, help="training epochs (passes over the unlabelled data)")),
    ("--lr", "training.learning_rate", dict(type=positive_float, help="Adam's learning rate")),
    ("--batch-size", "training.batch_size", dict(type=positive_int, help="unlabelled (and labelled) examples per "
                                                                         "minibatch")),
    ("--schedule", "training.schedule", dict(choices=sorted(SCHEDULES), help="learning-rate schedule")),
    ("--seed", "seed", dict(type=seed, help="seeds the initial weights and the noise")),
    ("--checkpoint-every", "checkpoint_every", dict(type=positive_int, metavar="N",
                                                    help="write checkpoint.safetensors every N epochs")),
    *LABEL_OPTIONS,
]
DEEP_OPTIONS = [
    ("--data", "data", DA_OPTIONS[0][2]),
    SDA_OPTIONS[1],  # --image-size
    ("--hidden", "model.hidden_layer_sizes", dict(type=_list_of(positive_int), metavar="N,N,...",
                                                  help="the encoder's layer sizes, the last one the code")),
    ("--code", "model.code_activation", dict(choices=CODE_ACTIVATIONS, help="the code layer's units")),
    ("--tied", "model.tied", dict(action="store_const", const=True,
                                  help="keep the decoder on the encoder's weights W^T after unrolling")),
    ("--untied", "model.tied", dict(action="store_const", const=False,
                                    help="give the decoder weights of its own after unrolling, copies of W "
                                         "(Hinton & Salakhutdinov's)")),
    ("--loss", "model.loss", dict(choices=LOSSES, help="cross-entropy (sigmoid output, inputs in [0, 1]) or squared "
                                                      "error (linear output), fine-tuned")),
    ("--corruption", "model.corruption_levels", dict(type=_list_of(fraction), metavar="P,P,...",
                                                     help="masking level of each layer's dA in pre-training")),
    *PRETRAIN_OPTIONS,
    ("--epochs", "training.epochs", dict(type=positive_int, help="fine-tuning epochs")),
    ("--lr", "training.learning_rate", dict(type=positive_float, help="fine-tuning learning rate")),
    ("--batch-size", "training.batch_size", dict(type=positive_int, help="fine-tuning minibatch size")),
    ("--optimizer", "training.optimizer", dict(choices=OPTIMIZERS, help="fine-tuning optimizer")),
    ("--schedule", "training.schedule", dict(choices=sorted(SCHEDULES), help="fine-tuning learning-rate schedule")),
    ("--no-pretrain", "pretrain", dict(action="store_const", const=False,
                                       help="the baseline: the same network and recipe from random weights")),
    ("--seed", "seed", dict(type=seed, help="seeds the initial weights, the noise and the validation split")),
    ("--checkpoint-every", "checkpoint_every", dict(type=positive_int, metavar="N",
                                                    help="write checkpoint.safetensors every N epochs of either "
                                                         "phase")),
]
OPTIONS = {"train": DA_OPTIONS, "tutorial": DA_OPTIONS, "sda": SDA_OPTIONS, "ladder": LADDER_OPTIONS,
           "deep": DEEP_OPTIONS}


def _add_options(p: Parser, options: list, defaults) -> None:
    for flag, path, kwargs in options:
        default = _get(defaults, path)
        if kwargs.get("action") == "store_const":  # a switch: is it on by default?
            shown = "on" if default == kwargs["const"] else "off"
        elif path == "labels" and default is None:
            shown = "all"
        elif path == "model.input_noise_std" and default is None:
            shown = "the --noise-std"
        elif path == "image_size" and default is None:
            shown = "the first image's"
        else:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        kwargs = {**kwargs, "help": f"{kwargs['help']} (default: {shown})".lstrip()}
        if "type" in kwargs:  # else argparse would show the setting's path, e.g. MODEL.N_HIDDEN
            kwargs.setdefault("metavar", flag[2:].upper().replace("-", "_"))
        p.add_argument(flag, dest=path, default=None, **kwargs)
    p.add_argument("--config", metavar="FILE", help="settings from a JSON or TOML file, e.g. a run's run_config.json; "
                                                    "options given override it")
    p.add_argument("--out", metavar="DIR", help="output folder, new or empty (default: a new folder under ./runs/)")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    _device_option(p)


def _device_option(p: Parser) -> None:
    p.add_argument("--device", metavar="{auto,cpu,cuda,cuda:N}",
                   help="where to compute: auto (a GPU if there is one, else the CPU), cpu, cuda or cuda:N "
                        f"(default: {TrainRunConfig().device})")


def build_parser() -> Parser:
    parser = Parser(prog="dae", description="Denoising autoencoders, as in the deeplearning.net tutorial.")
    parser.add_argument("--version", action="version", version=f"dae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    train_p = sub.add_parser("train", help="train one denoising autoencoder",
                             description="Train one denoising autoencoder; defaults are the tutorial's.")
    _add_options(train_p, DA_OPTIONS, TrainRunConfig())
    train_p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    tutorial_p = sub.add_parser("tutorial", help="the tutorial's experiment: corruption 0%% and 30%%",
                                description="The tutorial's experiment: train a dA with corruption 0% and 30% "
                                            "and save the filters of each.")
    _add_options(tutorial_p, [o for o in DA_OPTIONS if o[0] not in ("--corruption", "--checkpoint-every")],
                 TrainRunConfig())
    sda_p = sub.add_parser("sda", help="stacked denoising autoencoders: pre-train, fine-tune, classify",
                           description="Greedy layer-wise pre-training of a stack of dAs, then supervised fine-tuning "
                                       "with early stopping. Options override the preset's values.")
    sda_p.add_argument("--preset", choices=sorted(SDA_PRESETS),
                       help="'tutorial' is exactly the tutorial's SdA.py; 'default' is ours, for speed (default); "
                            "'best' is ours, for the lowest error in an hour")
    _add_options(sda_p, SDA_OPTIONS, SDA_PRESETS["default"])
    sda_p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    ladder_p = sub.add_parser("ladder", help="a ladder network: learn from few labels and many unlabelled examples",
                              description="The ladder network of Rasmus et al. (2015): a denoising cost at every "
                                          "layer trained with the supervised cost of the labels given. Defaults are "
                                          "the paper's MNIST model, with 100 labels.")
    _add_options(ladder_p, LADDER_OPTIONS, LadderRunConfig())
    ladder_p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    deep_p = sub.add_parser("deep", help="a deep autoencoder: pre-train a stack, unroll it, fine-tune on "
                                         "reconstruction",
                            description="The deep autoencoder of Hinton & Salakhutdinov (2006): a stack pre-trained "
                                        "layer by layer as denoising autoencoders, unrolled into an encoder and a "
                                        "decoder, and fine-tuned on reconstruction; PCA with as many components as "
                                        "the code is its baseline.")
    _add_options(deep_p, DEEP_OPTIONS, DeepRunConfig())
    deep_p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    for name, text in (("encode", "write the features (codes) of each row of a data set"),
                       ("score", "write an anomaly score for each row: its reconstruction error and the distance "
                                 "from its code to typical codes")):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("--model", required=True, metavar="DIR",
                       help="a model folder written by dae train, dae sda, dae ladder or dae deep" if name == "encode"
                       else "a model folder written by dae train or dae deep (an autoencoder)")
        p.add_argument("--data", required=True, metavar="PATH",
                       help="'mnist' (bundled), a folder of MNIST-format IDX files, a folder of images (subfolders "
                            "as classes), or a .npy, .npz, .csv or IDX file")
        p.add_argument("--image-size", type=image_size, metavar="H,W",
                       help=f"{IMAGE_SIZE_HELP} (default: the image size the model was trained on, else the first "
                            "image's)")
        p.add_argument("--split", choices=("train", "valid", "test"), default="train",
                       help="which split of a data set with several (default: %(default)s)")
        p.add_argument("--out", required=True, metavar="FILE", help="a new .npy (or, for score, .csv) file")
        if name == "encode":
            p.add_argument("--layer", type=positive_int, metavar="K",
                           help="for SdA and deep models: the encoder layer (default: top)")
        if name == "score":
            _score_options(p)
        _device_option(p)
    return parser


def _score_options(p: Parser) -> None:
    p.add_argument("--score", choices=SCORES, default=ANOMALY_SCORE,
                   help="the reconstruction error that scores a row: squared-error, sum_k (x_k - z_k)^2, or "
                        "cross-entropy, the tutorial's loss (for a model trained with it) (default: %(default)s)")
    p.add_argument("--code-weight", type=non_negative, default=ANOMALY_CODE_WEIGHT, metavar="W",
                   help="add W times the distance from a row's code to the codes of the reference rows "
                        "(--reference): the score is then the error standardised by the reference rows' errors "
                        "plus W times the mean distance to the --neighbors nearest reference codes, standardised "
                        "likewise; 0: the reconstruction error alone (default: %(default)s)")
    p.add_argument("--neighbors", type=positive_int, default=ANOMALY_NEIGHBORS, metavar="K",
                   help="with --code-weight: how many of the nearest reference codes a row's distance is measured "
                        "to, fewer than the reference rows (a reference row is not its own neighbour) "
                        "(default: %(default)s)")
    p.add_argument("--contamination", type=contamination, metavar="Q|auto",
                   help="also flag outliers: the rows scored above the threshold that flags a fraction Q in (0, 0.5] "
                        "of the reference rows (--reference), or, with auto, above Tukey's fence Q3 + 1.5 IQR of "
                        "their scores; --out gets a second column, outlier (0/1): a .csv with a header "
                        "score,outlier, a .npy a structured array with fields score and outlier")
    p.add_argument("--reference", metavar="PATH",
                   help="typical data, e.g. what the model was trained on, whose training split holds the codes "
                        "of --code-weight and sets the threshold of --contamination; without it, a file of rows "
                        "to score is its own reference, each row compared with the others "
                        "(default: the training split of --data)")
    p.add_argument("--per-feature", metavar="FILE",
                   help="also write each feature's error to a new .npy (rows x features; a row sums to its "
                        "reconstruction error, its score with --code-weight 0), and for images a picture "
                        "FILE_worst.png of the worst-scored rows, their reconstructions and their errors")


def config_from_args(args: argparse.Namespace, options: list, base):
    """``base``, then the --config file over it, then the options given over both."""
    if args.config is not None:
        base = load_config_file(args.config, type(base), base=base)
    changes: dict = {} if args.device is None else {"device": args.device}
    for _, path, _ in options:
        value = getattr(args, path, None)
        if value is not None:
            _set(changes, path, None if value == "all" else value)
    return merge(base, changes)


def main(argv: list[str] | None = None) -> int:
    where = ""  # which process speaks, when there are several
    finished = False
    try:
        args = build_parser().parse_args(argv)
        if args.command in ("encode", "score"):
            if launched_by_torchrun():
                raise UsageError(f"dae {args.command} runs in one process: run it without torchrun")
            return (run_encode if args.command == "encode" else run_score)(args)
        if getattr(args, "resume", None) is not None:
            _check_nothing_but_resume(args)
            config = None
        elif args.command == "sda":
            config = config_from_args(args, SDA_OPTIONS, SDA_PRESETS[args.preset or "default"])
        elif args.command == "ladder":
            config = config_from_args(args, LADDER_OPTIONS, LadderRunConfig())
        elif args.command == "deep":
            config = config_from_args(args, DEEP_OPTIONS, DeepRunConfig())
        else:
            config = config_from_args(args, DA_OPTIONS, TrainRunConfig())
        world = init_world(args.device or (config.device if config is not None else "auto"))
        if world.size > 1:
            where = f"[rank {world.rank}] "
        say = print if not args.quiet and world.main else None
        progress = say is not None and sys.stderr.isatty()
        if args.command == "train":
            run_train(config, args.out, resume=args.resume, world=world, say=say, progress=progress)
        elif args.command == "tutorial":
            run_tutorial(config, args.out, world=world, say=say, progress=progress)
        elif args.command == "ladder":
            run_ladder(config, args.out, resume=args.resume, world=world, say=say, progress=progress)
        elif args.command == "deep":
            run_deep(config, args.out, resume=args.resume, world=world, say=say, progress=progress)
        else:
            run_sda(config, args.out, resume=args.resume, world=world, say=say, progress=progress,
                    preset=args.preset or ("default" if args.config is None else None))
        finished = True
        return 0
    except (UsageError, DataError, ModelFileError, TrainingDiverged, DeviceError, ConfigError, RunError) as e:
        print(f"dae: error: {where}{e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the disk filled up while writing an output
        print(f"dae: error: {where}{e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dae: interrupted", file=sys.stderr)
        return 130
    finally:
        leave_world(finished)


def _check_nothing_but_resume(args: argparse.Namespace) -> None:
    """A resumed run goes on with its own settings: refuse any given with --resume rather than ignore it."""
    options = OPTIONS[args.command]
    given = [flag for flag, path, _ in options if getattr(args, path) is not None]
    given += [f"--{name}" for name in ("config", "out", "preset") if getattr(args, name, None) is not None]
    if given:
        raise UsageError(f"--resume continues a run with its own settings; {given[0]} cannot change them")


def run_encode(args: argparse.Namespace) -> int:
    model, _, x, device = _model_and_data(args)
    if isinstance(model, LadderNetwork):
        layer = len(model.sizes) - 2 if args.layer is None else args.layer
        if layer > len(model.sizes) - 2:
            raise UsageError(f"--layer {layer}: the model has {len(model.sizes) - 2} hidden layers")
        encode = lambda rows: model.hidden(rows, layer)  # noqa: E731
    elif isinstance(model, (StackedDenoisingAutoencoder, DeepAutoencoder)):  # a deep one's top layer: its code
        layer = model.n_layers if args.layer is None else args.layer
        if layer > model.n_layers:
            raise UsageError(f"--layer {layer}: the model has {model.n_layers} hidden layers")
        encode = lambda rows: model.encode(rows, layer=layer)  # noqa: E731
    else:
        if args.layer not in (None, 1):
            raise UsageError(f"--layer {args.layer}: a DenoisingAutoencoder has one hidden layer")
        encode = model.encode
    with torch.no_grad():
        features = torch.cat([encode(rows.to(device)).cpu() for rows in x.split(EVAL_ROWS)]).numpy()
    _write_array(args.out, features)
    print(json.dumps({"out": args.out, "rows": features.shape[0], "features": features.shape[1]}))
    return 0


def run_score(args: argparse.Namespace) -> int:
    model, data, x, device = _model_and_data(args)
    if not hasattr(model, "reconstruct"):  # a DenoisingAutoencoder or a DeepAutoencoder
        raise UsageError(f"--model {args.model}: score needs a DenoisingAutoencoder (dae train) or a "
                         f"DeepAutoencoder (dae deep), not a {type(model).__name__}")
    if args.score == "cross-entropy" and model.loss_name != "cross-entropy":
        raise UsageError(f"--score cross-entropy needs a model with a sigmoid decoder (trained with --loss "
                         f"cross-entropy); {args.model} was trained with {model.loss_name}")
    picture = None
    if args.per_feature is not None:
        _check_new_file("--per-feature", args.per_feature, (".npy",))
        if Path(args.per_feature).resolve() == Path(args.out).resolve():
            raise UsageError(f"--per-feature {args.per_feature}: the same file as --out")
        if data.image_shape is not None:
            picture = str(Path(args.per_feature).with_name(Path(args.per_feature).stem + "_worst.png"))
            _check_new_file("--per-feature's picture", picture, (".png",))
    errors = reconstruction_errors(model, x, args.score, per_feature=args.per_feature is not None)
    scores = errors.sum(dim=1) if errors.ndim == 2 else errors
    summary = {"out": args.out, "rows": len(scores), "score": args.score, "loss": model.loss_name,
               "code_weight": args.code_weight}
    reference = None  # the reference rows' scores, when needed
    if args.code_weight > 0 or args.contamination is not None:  # the typical rows: codes and threshold
        where = f"the training split of {args.reference or args.data}"
        if args.reference is not None:
            rows = _load_for_model(args, args.reference, model, model.loss_name).train.x
        else:
            rows = x if args.split == "train" else data.train.x
        reference = scores if rows is x else reconstruction_errors(model, rows, args.score)
        if not torch.isfinite(reference).all():
            raise UsageError(f"the scores of {where} (the reference rows) are not all finite")
        if args.code_weight > 0:
            if args.neighbors >= len(rows):
                raise UsageError(f"--code-weight {args.code_weight} with --neighbors {args.neighbors} needs more than "
                                 f"{args.neighbors} reference rows, and {where} has {len(rows)}: pass --reference "
                                 f"with typical data, a smaller --neighbors, or --code-weight 0")
            reference_codes = codes(model, rows)
            if not torch.isfinite(reference_codes).all():
                raise UsageError(f"the codes of {where} (the reference rows) are not all finite")
            typical = NeighbourScore(reference, reference_codes, args.code_weight, args.neighbors)
            reference = typical.reference_scores
            scores = reference if rows is x else typical(scores, typical.distances(codes(model, x)))
            summary["neighbors"] = args.neighbors
        summary |= {"reference": where, "reference_rows": len(rows)}
    scores = scores.numpy()
    q = np.quantile(scores, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    summary |= {"mean": float(scores.mean()), "std": float(scores.std()), "min": float(scores.min()),
                "max": float(scores.max()), **{f"p{p}": float(v) for p, v in zip((1, 5, 25, 50, 75, 95, 99), q)}}
    table = scores
    if args.contamination is not None:
        threshold = threshold_from_contamination(reference.numpy(), args.contamination)
        outlier = scores.astype(np.float64) > threshold
        table = np.zeros(len(scores), dtype=[("score", scores.dtype), ("outlier", np.uint8)])
        table["score"], table["outlier"] = scores, outlier
        summary |= {"contamination": args.contamination, "threshold": threshold, "threshold_from": where,
                    "threshold_rows": len(reference), "outliers": int(outlier.sum())}
    _write_array(args.out, table)
    if args.per_feature is not None:
        _write_array(args.per_feature, errors.numpy())
        summary["per_feature"] = args.per_feature
    if picture is not None:
        worst = torch.from_numpy(np.argsort(-scores, kind="stable")[:N_PICTURE_EXAMPLES].copy())
        with torch.no_grad():
            reconstructed = model.reconstruct(x[worst].to(device)).cpu()
        save_worst_reconstructions(picture, x[worst], reconstructed, errors[worst], data.image_shape)
        summary["picture"] = picture
    print(json.dumps(summary))
    return 0


def _model_and_data(args: argparse.Namespace):
    """The model of --model (on --device), the data set of --data and the rows of its --split,
    checked against each other; --out checked as a new file."""
    device = init_world(args.device or "auto").device
    model = load_model(args.model).to(device)
    loss = model.loss_name if isinstance(model, (DenoisingAutoencoder, DeepAutoencoder)) else "cross-entropy"
    data = _load_for_model(args, args.data, model, loss)
    split = getattr(data, args.split)
    if split is None:
        raise UsageError(f"--split {args.split}: {args.data} has no {args.split} split")
    _check_new_file("--out", args.out, (".npy", ".csv") if args.command == "score" else (".npy",))
    return model, data, split.x, device


def _load_for_model(args: argparse.Namespace, path: str, model, loss: str):
    """The data at ``path``, checked against ``model``; a folder of images is resized to
    --image-size, or else to the size the model was trained on."""
    size = args.image_size
    if size is None and is_image_folder(path):
        shape = read_config(args.model).get("image_shape")
        fits = isinstance(shape, list) and len(shape) == 2 and all(type(n) is int and n >= 1 for n in shape)
        size = tuple(shape) if fits else None
    data = load_data(path, loss=loss, image_size=size)
    if data.train.x.shape[1] != model.n_visible:
        raise UsageError(f"{path} has {data.train.x.shape[1]} values per row, the model expects {model.n_visible}")
    return data


def _check_new_file(flag: str, path: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output file without one of ``suffixes``, one that exists, or one in no folder."""
    out = Path(path)
    if out.suffix not in suffixes:
        raise UsageError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)}")
    if out.exists():
        raise UsageError(f"{flag} {path}: already exists; choose a new file name")
    if not out.parent.is_dir():
        raise UsageError(f"{flag} {path}: no such folder {out.parent}")


def _write_array(path: str, array: np.ndarray) -> None:
    """Write a .npy, or a .csv of one value per line (of a structured array: a header of its
    field names, then one row per line), atomically."""
    if path.endswith(".csv"):
        if array.dtype.names:
            lines = [",".join(array.dtype.names), *(",".join(map(repr, row)) for row in array.tolist())]
        else:
            lines = [repr(v) for v in array.tolist()]
        write_text(path, "".join(f"{line}\n" for line in lines))
        return
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes(path, buffer.getvalue())


def _get(config, path: str):
    for part in path.split("."):
        config = getattr(config, part)
    return config


def _set(changes: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        changes = changes.setdefault(part, {})
    changes[last] = value


if __name__ == "__main__":
    sys.exit(main())
