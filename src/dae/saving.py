"""Saving and loading models as safetensors plus JSON: nothing in a model file can run code.

A model is a folder with two files:

    model.safetensors   the tensors (safetensors holds raw arrays and a JSON header, no code)
    config.json         what the tensors are: {"format": "dae", "format_version": 1,
                        "kind": "DenoisingAutoencoder", "n_visible": ..., ...}

The tutorial saved its models with pickle, which executes whatever the file says when it is
loaded; we never call pickle or ``torch.load``.  Every file is checked on load (its kind, its
version, each tensor's name, shape and dtype) and anything unexpected is a ModelFileError.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .autoencoder import ACTIVATIONS, LOSSES, DenoisingAutoencoder
from .files import write_bytes, write_text

FORMAT, FORMAT_VERSION = "dae", 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"


class ModelFileError(ValueError):
    """A model folder that is missing, unreadable, or not a model this version of dae wrote."""


def save_model(model: DenoisingAutoencoder, directory: str | os.PathLike, **extra) -> None:
    """Write ``model`` to ``directory`` (created if needed) as model.safetensors + config.json.

    ``extra`` (JSON-serialisable, e.g. ``image_shape``) is stored in the config for tools.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": type(model).__name__,
        "n_visible": model.n_visible,
        "n_hidden": model.n_hidden,
        "corruption_level": model.corruption_level,
        "tied": model.tied,
        "loss": model.loss_name,
        "activation": model.activation,
        **extra,
    }
    write_bytes(directory / WEIGHTS, save(tensors))
    write_text(directory / CONFIG, json.dumps(config, indent=2) + "\n")


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


def load_model(directory: str | os.PathLike) -> DenoisingAutoencoder:
    """Load a DenoisingAutoencoder saved by :func:`save_model`, after checking every part of it."""
    directory = Path(directory)
    config = read_config(directory)
    where = directory / CONFIG
    if config.get("kind") != "DenoisingAutoencoder":
        raise ModelFileError(f"{where}: a {config.get('kind')!r} model, not a DenoisingAutoencoder")
    n_visible, n_hidden = config.get("n_visible"), config.get("n_hidden")
    level = config.get("corruption_level")
    checks = [
        (_positive_int(n_visible), "n_visible must be a positive integer"),
        (_positive_int(n_hidden), "n_hidden must be a positive integer"),
        (isinstance(level, (int, float)) and math.isfinite(level) and 0 <= level < 1, "corruption_level must be in [0, 1)"),
        (isinstance(config.get("tied"), bool), "tied must be true or false"),
        (config.get("loss") in LOSSES, f"loss must be one of {', '.join(LOSSES)}"),
        (config.get("activation") in ACTIVATIONS, f"activation must be one of {', '.join(ACTIVATIONS)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ModelFileError(f"{where}: {message}")
    model = DenoisingAutoencoder(
        n_visible, n_hidden, corruption_level=float(level), tied=config["tied"],
        loss=config["loss"], activation=config["activation"],
    )
    tensors = _read_tensors(directory / WEIGHTS)
    expected = {name: p for name, p in model.named_parameters()}
    if set(tensors) != set(expected):
        raise ModelFileError(
            f"{directory / WEIGHTS}: holds tensors {sorted(tensors)}, expected {sorted(expected)}"
        )
    with torch.no_grad():
        for name, p in expected.items():
            t = tensors[name]
            if t.shape != p.shape or t.dtype != p.dtype:
                raise ModelFileError(
                    f"{directory / WEIGHTS}: tensor {name} is {t.dtype} {tuple(t.shape)}, "
                    f"expected {p.dtype} {tuple(p.shape)}"
                )
            p.copy_(t)
    return model


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0]})") from None


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
