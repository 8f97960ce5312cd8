"""Saving and loading models as safetensors plus JSON: nothing in a model file can run code.

A model is a folder with two files:

    model.safetensors   the tensors (safetensors holds raw arrays and a JSON header, no code)
    config.json         what the tensors are: {"format": "dae", "format_version": 1,
                        "kind": "DenoisingAutoencoder", "StackedDenoisingAutoencoder",
                                "LadderNetwork" or "DeepAutoencoder",
                        "n_visible": ..., ...}

The tutorial saved its models with pickle, which executes whatever the file says when it is
loaded; we never call pickle or ``torch.load``.  Every file is checked on load (its kind, its
version, each tensor's name, shape and dtype) and anything unexpected is a ModelFileError.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from .autoencoder import DenoisingAutoencoder
from .config import DAConfig, DeepConfig, from_dict
from .deep import DeepAutoencoder
from .ladder import LadderNetwork
from .stacked import StackedDenoisingAutoencoder
from .files import write_bytes, write_text

FORMAT, FORMAT_VERSION = "dae", 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"


class ModelFileError(ValueError):
    """A model folder that is missing, unreadable, or not a model this version of dae wrote."""


def save_model(model, directory: str | os.PathLike, **extra) -> None:
    """Write ``model`` (a dA, an SdA, a ladder network or a deep autoencoder) to ``directory``
    (created if needed) as model.safetensors + config.json.

    ``extra`` (JSON-serialisable, e.g. ``image_shape``) is stored in the config for tools.
    Shared parameters (an SdA layer's W and b, which its dA also holds) are stored once.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = _model_tensors(model)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": type(model).__name__,
              **_architecture(model), **extra}
    write_bytes(directory / WEIGHTS, save(tensors))
    write_text(directory / CONFIG, json.dumps(config, indent=2) + "\n")


def _model_tensors(model) -> dict[str, torch.Tensor]:
    """The parameters and the buffers (a ladder's running statistics) of ``model``, on the CPU."""
    return {name: t.detach().cpu().contiguous() for name, t in (*model.named_parameters(), *model.named_buffers())}


def _architecture(model) -> dict:
    if isinstance(model, DenoisingAutoencoder):
        return {"n_visible": model.n_visible, "n_hidden": model.n_hidden,
                "corruption_level": model.corruption_level, "noise": model.noise, "tied": model.tied,
                "loss": model.loss_name, "activation": model.activation, "sparsity_target": model.sparsity_target,
                "sparsity_weight": model.sparsity_weight, "contraction": model.contraction}
    if isinstance(model, StackedDenoisingAutoencoder):
        return {"n_visible": model.n_visible, "hidden_layer_sizes": model.hidden_layer_sizes,
                "n_classes": model.n_classes,
                "corruption_levels": [dA.corruption_level for dA in model.autoencoders],
                "dropout": model.dropout.p, "input_corruption": model.input_corruption}
    if isinstance(model, LadderNetwork):
        return {"sizes": list(model.sizes), "noise_std": model.noise_std, "input_noise_std": model.input_noise_std,
                "denoising_weights": list(model.denoising_weights), "target_gradient": model.target_gradient}
    if isinstance(model, DeepAutoencoder):
        return {"n_visible": model.n_visible, "hidden_layer_sizes": model.hidden_layer_sizes,
                "code_activation": model.code_activation, "tied": model.tied, "loss": model.loss_name,
                "corruption_levels": [dA.corruption_level for dA in model.autoencoders], "unrolled": model.unrolled}
    raise TypeError(f"cannot save a {type(model).__name__}")


def read_config(directory: str | os.PathLike) -> dict:
    """The checked config.json of a model folder."""
    path = Path(directory) / CONFIG
    if not Path(directory).is_dir():
        raise ModelFileError(f"{directory}: no such model folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing (a model folder holds {WEIGHTS} and {CONFIG})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a dae model config")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format version {config.get('format_version')!r} is not supported "
            f"by this dae (it reads version {FORMAT_VERSION})"
        )
    return config


def load_model(directory: str | os.PathLike, kind: type | None = None):
    """Load a model saved by :func:`save_model`, after checking every part of it.

    ``kind`` (a model class: DenoisingAutoencoder, StackedDenoisingAutoencoder, ...) demands that kind of model.
    """
    directory = Path(directory)
    config = read_config(directory)
    return _build(config, directory / CONFIG, kind, _read_tensors(directory / WEIGHTS), directory / WEIGHTS)


def _build(config: dict, where: Path, kind: type | None, tensors: dict[str, torch.Tensor], tensors_where: Path):
    """The model that ``config`` describes, holding ``tensors``; every field, name, shape and
    dtype is checked first.  The architecture is first built on the "meta" device, which
    allocates nothing, so that a config claiming huge sizes cannot exhaust memory."""
    builders = {"DenoisingAutoencoder": _build_dA, "StackedDenoisingAutoencoder": _build_sda,
                "LadderNetwork": _build_ladder, "DeepAutoencoder": _build_deep}
    if config.get("kind") not in builders:
        raise ModelFileError(f"{where}: unknown model kind {config.get('kind')!r}")
    if kind is not None and config["kind"] != kind.__name__:
        raise ModelFileError(f"{where}: a {config['kind']}, not a {kind.__name__}")
    build = builders[config["kind"]]
    tensors = {_LEGACY_NAMES.get(name, name): t for name, t in tensors.items()}
    try:
        with torch.device("meta"):
            meta = build(config)
            expected = {**dict(meta.named_parameters()), **dict(meta.named_buffers())}
    except (TypeError, ValueError, RuntimeError) as e:  # RuntimeError: sizes beyond any memory
        raise ModelFileError(f"{where}: {str(e).splitlines()[0]}") from None
    if set(tensors) != set(expected):
        raise ModelFileError(f"{tensors_where}: holds tensors {sorted(tensors)}, expected {sorted(expected)}")
    for name, p in expected.items():
        t = tensors[name]
        if t.shape != p.shape or t.dtype != p.dtype:
            raise ModelFileError(f"{tensors_where}: tensor {name} is {t.dtype} {tuple(t.shape)}, "
                                 f"expected {p.dtype} {tuple(p.shape)}")
    model = build(config)
    with torch.no_grad():
        for name, p in (*model.named_parameters(), *model.named_buffers()):
            p.copy_(tensors[name])
    return model


# --- checkpoints ------------------------------------------------------------------------------
#
# One safetensors file holds everything needed to continue a run exactly: the parameters, the
# random generator's state (as a uint8 tensor), and in the file's metadata the architecture and
# a JSON "state" (the epoch, the history, the options).  One file is written atomically, so a
# checkpoint is always whole: the previous one until the new one is complete.

CHECKPOINT = "checkpoint.safetensors"
_GENERATOR, _OPTIMIZER, _EXTRA = "_generator_state", "_optimizer", "_extra"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    model: object  # a dA, an SdA, a ladder network or a deep autoencoder, with the saved weights
    generator_state: torch.Tensor  # for torch.Generator.set_state
    state: dict  # the JSON state saved with it
    optimizer_state: dict  # a torch.optim state_dict, or {}
    tensors: dict[str, torch.Tensor]  # the extra tensors saved with it


def save_checkpoint(path: str | os.PathLike, model, generator: torch.Generator, state: dict,
                    optimizer_state: dict | None = None, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model``, ``generator``'s state, ``state`` (JSON-serialisable), a torch.optim
    ``optimizer_state`` (its state_dict, if any) and extra named ``tensors`` to ``path``."""
    extra = tensors or {}
    tensors = _model_tensors(model)
    tensors.update({f"{_EXTRA}.{name}": t.detach().cpu().contiguous() for name, t in extra.items()})
    tensors[_GENERATOR] = generator.get_state()
    optimizer = None
    if optimizer_state:
        optimizer = {"param_groups": optimizer_state["param_groups"], "scalars": {}}
        for index, entries in optimizer_state["state"].items():
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{_OPTIMIZER}.{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    optimizer["scalars"].setdefault(str(index), {})[key] = value
    config = {"format": FORMAT + "-checkpoint", "format_version": FORMAT_VERSION, "kind": type(model).__name__,
              **_architecture(model)}
    metadata = {"config": json.dumps(config), "state": json.dumps(state), "optimizer": json.dumps(optimizer)}
    write_bytes(path, save(tensors, metadata=metadata))


def load_checkpoint(path: str | os.PathLike, kind: type | None = None) -> Checkpoint:
    """A checkpoint written by :func:`save_checkpoint`, checked as :func:`load_model` checks."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no checkpoint here")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        config, state = json.loads(metadata["config"]), json.loads(metadata["state"])
        optimizer = json.loads(metadata.get("optimizer", "null"))
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelFileError(f"{path}: not a dae checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                             ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT + "-checkpoint" or not isinstance(state, dict):
        raise ModelFileError(f"{path}: not a dae checkpoint")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: checkpoint format version {config.get('format_version')!r} is not supported")
    tensors = _read_tensors(path)
    generator_state = tensors.pop(_GENERATOR, None)
    if generator_state is None or generator_state.dtype != torch.uint8:
        raise ModelFileError(f"{path}: the random generator's state is missing")
    optimizer_state: dict = {}
    if optimizer is not None:
        try:
            entries: dict[int, dict] = {int(i): dict(v) for i, v in optimizer["scalars"].items()}
            for name in [n for n in tensors if n.startswith(_OPTIMIZER + ".")]:
                _, index, key = name.split(".", 2)
                entries.setdefault(int(index), {})[key] = tensors.pop(name)
            optimizer_state = {"state": entries, "param_groups": list(optimizer["param_groups"])}
        except (TypeError, ValueError, KeyError, AttributeError):
            raise ModelFileError(f"{path}: the optimizer's state is damaged") from None
    extra = {name[len(_EXTRA) + 1:]: tensors.pop(name) for name in list(tensors) if name.startswith(_EXTRA + ".")}
    return Checkpoint(_build(config, path, kind, tensors, path), generator_state, state, optimizer_state, extra)


# Files written before the softmax layer became a module named its tensors so.
_LEGACY_NAMES = {"log_W": "classifier.W", "log_b": "classifier.b"}


def _build_dA(config: dict) -> DenoisingAutoencoder:
    _check(_positive_int(config.get("n_visible")), "n_visible must be a positive integer")
    missing = [k for k in ("n_hidden", "corruption_level", "noise", "tied", "loss", "activation") if k not in config]
    _check(not missing, f"missing {', '.join(missing)}")
    # Files written before the penalties were saved lack them: they take their defaults (off).
    settings = {f.name: config[f.name] for f in dataclasses.fields(DAConfig) if f.name in config}
    return DenoisingAutoencoder.from_config(config["n_visible"], from_dict(DAConfig, settings))


def _build_sda(config: dict) -> StackedDenoisingAutoencoder:
    sizes, levels = config.get("hidden_layer_sizes"), config.get("corruption_levels")
    _check(_positive_int(config.get("n_visible")), "n_visible must be a positive integer")
    _check(isinstance(sizes, list) and sizes and all(map(_positive_int, sizes)),
           "hidden_layer_sizes must be a list of positive integers")
    _check(isinstance(levels, list) and len(levels) == len(sizes) and all(map(_level, levels)),
           "corruption_levels must hold one level in [0, 1) per layer")
    _check(_positive_int(config.get("n_classes")) and config["n_classes"] >= 2, "n_classes must be at least 2")
    dropout, noise = config.get("dropout", 0.0), config.get("input_corruption", 0.0)  # 0: files from before them
    _check(_level(dropout) and _level(noise), "dropout and input_corruption must be in [0, 1)")
    return StackedDenoisingAutoencoder(config["n_visible"], sizes, config["n_classes"], [float(v) for v in levels],
                                       dropout=float(dropout), input_corruption=float(noise))


def _build_ladder(config: dict) -> LadderNetwork:
    sizes, weights, noise = config.get("sizes"), config.get("denoising_weights"), config.get("noise_std")
    _check(isinstance(sizes, list) and len(sizes) >= 3 and all(map(_positive_int, sizes)),
           "sizes must be a list of at least three positive integers")
    _check(isinstance(weights, list) and len(weights) == len(sizes)
           and all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                   for w in weights), "denoising_weights must hold one number >= 0 per size")
    input_noise = config.get("input_noise_std", noise)  # files from before it: the noise_std
    _check(all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
               for v in (noise, input_noise)), "noise_std and input_noise_std must be numbers >= 0")
    target_gradient = config.get("target_gradient", False)  # files from before it were trained without
    _check(isinstance(target_gradient, bool), "target_gradient must be true or false")
    return LadderNetwork(sizes, float(noise), [float(w) for w in weights], input_noise_std=float(input_noise),
                         target_gradient=target_gradient)


def _build_deep(config: dict) -> DeepAutoencoder:
    _check(_positive_int(config.get("n_visible")), "n_visible must be a positive integer")
    missing = [k for k in ("hidden_layer_sizes", "code_activation", "tied", "loss", "corruption_levels", "unrolled")
               if k not in config]
    _check(not missing, f"missing {', '.join(missing)}")
    _check(isinstance(config["unrolled"], bool), "unrolled must be true or false")
    settings = {f.name: config[f.name] for f in dataclasses.fields(DeepConfig)}
    model = DeepAutoencoder.from_config(config["n_visible"], from_dict(DeepConfig, settings))
    if config["unrolled"]:
        model.unroll()
    return model


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _level(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 1


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0]})") from None


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# --- random states ----------------------------------------------------------------------------
#
# `dae sda` keeps, beside each pre-trained model, the random generators' states at that point
# (one per process), so that fine-tuning rerun with --pretrained draws the same shuffles, masks
# and dropout as the run that made it.

GENERATORS = "generators.safetensors"


def save_generator_states(path: str | os.PathLike, states: list[torch.Tensor], seed: int) -> None:
    """Write the generator state of each process (rank order) and the run's seed to ``path``."""
    tensors = {f"rank.{r}": s.detach().cpu().contiguous() for r, s in enumerate(states)}
    write_bytes(path, save(tensors, metadata={"seed": str(seed), "world_size": str(len(states))}))


def load_generator_states(path: str | os.PathLike) -> tuple[list[torch.Tensor], int]:
    """(the states, the seed) that :func:`save_generator_states` wrote to ``path``."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        seed, n = int(metadata["seed"]), int(metadata["world_size"])
        tensors = load_file(path)
        states = [tensors[f"rank.{r}"] for r in range(n)]
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelFileError(f"{path}: not a dae generators file ({str(e).splitlines()[0] if str(e) else e!r})"
                             ) from None
    if any(s.dtype != torch.uint8 or s.ndim != 1 for s in states):
        raise ModelFileError(f"{path}: not a dae generators file (bad state tensors)")
    return states, seed
