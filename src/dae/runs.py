"""A run folder: what a run leaves on disk, and the seeding of its randomness.

:class:`RunFolder` owns the folder's creation (and its removal if the run fails before writing
anything), ``run_config.json``, ``metrics.jsonl``, checkpoints, ``summary.json`` (also the one an
interrupted run leaves) and pictures.  Every rank of a data-parallel run calls it alike: the
collective operations (gathering every rank's random state for a checkpoint, agreeing that the
folder could be made) happen inside, and only rank 0 writes.  Every file is written to a
temporary name and renamed into place (:mod:`dae.files`).

Checkpoint layout (one safetensors file, written atomically): the model's parameters; the
random generator's state (every rank's, under torchrun); the step's optimizer state; the best
parameters so far; and in the metadata the run's config (a versioned dict, see
:mod:`dae.config`), the :class:`dae.train.TrainState` counters, the metrics so far and the
clock.  Reading it back fills settings a checkpoint lacks with their defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime
from pathlib import Path

import torch

from .config import to_dict
from .distributed import World
from .files import write_text
from .saving import CHECKPOINT, ModelFileError, load_checkpoint, save_checkpoint
from .train import EpochResult, FinetuneEpoch, TrainState, as_generator

CONFIG = "run_config.json"  # beside the model's own config.json


class RunError(ValueError):
    """A run that cannot start: an output folder that is not usable, a checkpoint that does not fit."""


def generators(seed: int, world: World) -> tuple[torch.Generator, torch.Generator]:
    """(the generator of the initial weights, this process's generator of training noise): the one
    place where a run's randomness is seeded.

    The weights are drawn on the CPU from ``seed`` on every process, so that they do not depend
    on the device or the number of processes.  On one CPU process the noise continues that same
    generator (the tutorial's single stream); elsewhere each process has its own, seeded with
    :meth:`World.seed`, on its device.
    """
    init = as_generator(seed, "cpu")
    if world.device.type == "cpu" and world.main:
        return init, init
    return init, as_generator(world.seed(seed), world.device)


class RunFolder:
    """The output folder of one run (see the module docstring)."""

    def __init__(self, path: Path, world: World, *, created: bool, metrics: list[dict] | None = None) -> None:
        self.path, self.world, self.created = path, world, created
        self.metrics: list[dict] = list(metrics or [])

    @classmethod
    def create(cls, requested: str | os.PathLike | None, command: str, world: World) -> RunFolder:
        """A new folder: the one asked for (new, or empty), or ``runs/<command>-<time>``."""
        path, created, error = Path(requested or "."), False, None
        if world.main:
            try:
                path, created = _make_folder(requested, command)
            except RunError as e:
                error = e
        if not world.all_ok(error is None):  # every rank stops if rank 0 could not make it
            raise error or RunError("rank 0 could not create the output folder (see its message)")
        return cls(path, world, created=created)

    @classmethod
    def resume(cls, path: str | os.PathLike, world: World, kind: type):
        """(the folder, its checkpoint) of a run to continue."""
        path = Path(path)
        try:
            checkpoint = load_checkpoint(path / CHECKPOINT, kind=kind)
        except ModelFileError as e:
            raise RunError(f"--resume {path}: {e}") from None
        if "config" not in checkpoint.state:
            raise RunError(f"--resume {path}: the checkpoint was written by an older dae whose options this one "
                           f"cannot read; start the run again")
        saved = checkpoint.state.get("world_size", 1)
        if saved != world.size:
            raise RunError(f"--resume {path}: the run had {saved} process(es); resume it with as many, not {world.size}")
        return cls(path, world, created=False, metrics=checkpoint.state.get("metrics")), checkpoint

    @property
    def main(self) -> bool:
        return self.world.main

    @contextlib.contextmanager
    def removed_if_empty_on_failure(self):
        """If what runs inside fails, remove the folders this run made that are still empty, so
        a run that never started leaves no trace (a folder the user made is kept)."""
        try:
            yield
        except BaseException:
            if self.main and self.path.is_dir():
                folders = sorted((p for p in self.path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
                for folder in folders + [self.path]:  # the deepest first
                    with contextlib.suppress(OSError):
                        if [p.name for p in folder.iterdir()] == [CONFIG]:  # a config alone: nothing else written
                            (folder / CONFIG).unlink()
                        if folder != self.path or self.created:
                            folder.rmdir()  # only an empty folder can be removed
            raise

    def sub(self, name: str) -> RunFolder:
        """A folder inside this one for a part of the run (``dae tutorial``'s two dAs)."""
        if self.main:
            (self.path / name).mkdir(exist_ok=True)
        return RunFolder(self.path / name, self.world, created=True)

    def write_config(self, config) -> None:
        """``run_config.json``: the full resolved config, which ``--config`` reads back."""
        self.write_json(CONFIG, to_dict(config))

    def write_json(self, name: str, data) -> None:
        if self.main:
            write_text(self.path / name, json.dumps(data, indent=2) + "\n")

    def log(self, record: dict) -> None:
        """Add a line to ``metrics.jsonl`` (the whole file is rewritten atomically)."""
        self.metrics.append(record)
        if self.main:
            write_text(self.path / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.metrics))

    def picture(self, save, name: str, *args, **kwargs) -> None:
        """``save(path, *args, **kwargs)`` on rank 0, e.g. ``run.picture(save_filters, "filters.png", W, shape)``."""
        if self.main:
            save(self.path / name, *args, **kwargs)

    def checkpoint(self, model, generator: torch.Generator, config, state: TrainState, **extra) -> None:
        """Write ``checkpoint.safetensors``: everything needed to continue exactly.  A collective:
        every rank calls it (each rank's generator state is gathered)."""
        tensors = {f"best.{k}": v for k, v in (state.best_params or {}).items()}
        if self.world.size > 1:
            states = self.world.gather_bytes(generator.get_state())
            tensors.update({f"rank_generator.{r}": s for r, s in enumerate(states)})
        if self.main:
            saved = {"config": to_dict(config), "train_state": _state_json(state), "metrics": self.metrics,
                     "world_size": self.world.size, **extra}
            save_checkpoint(self.path / CHECKPOINT, model, generator, saved, state.optimizer, tensors=tensors)

    def write_interrupted(self, resume_command: str | None, **counts) -> None:
        """The ``summary.json`` of a run stopped by Ctrl-C: how far it got and how to go on."""
        resumable = resume_command is not None and (self.path / CHECKPOINT).exists()
        self.write_json("summary.json", {"interrupted": True, **counts,
                                         "resume": f"{resume_command} --resume {self.path}" if resumable else None})


def restore(checkpoint, world: World, generator: torch.Generator, record_class=None) -> TrainState:
    """The TrainState of a checkpoint; ``generator`` is put back in the state this process's
    generator had then.  (The run's config is ``from_dict(cls, checkpoint.state["config"])``.)"""
    state = TrainState(**{k: v for k, v in checkpoint.state["train_state"].items() if k != "history"})
    record = record_class or (FinetuneEpoch if checkpoint.state.get("phase") == "finetune" else EpochResult)
    state.history = [record(**r) for r in checkpoint.state["train_state"]["history"]]
    state.optimizer = checkpoint.optimizer_state
    best = {k[5:]: v for k, v in checkpoint.tensors.items() if k.startswith("best.")}
    state.best_params = best or None
    saved = checkpoint.tensors.get(f"rank_generator.{world.rank}") if world.size > 1 else checkpoint.generator_state
    try:
        generator.set_state(saved)
    except (RuntimeError, TypeError):
        raise RunError(f"the checkpoint's random state is for another kind of device than {world.device}") from None
    return state


def _state_json(state: TrainState) -> dict:
    return {"epoch": state.epoch, "iteration": state.iteration, "history": [vars(r) for r in state.history],
            "reference_cost": state.reference_cost, "stopped_by": state.stopped_by, "layer": state.layer,
            "patience": state.patience, "best_valid_error": state.best_valid_error, "best_epoch": state.best_epoch,
            "test_error": state.test_error}


def _make_folder(requested: str | os.PathLike | None, command: str) -> tuple[Path, bool]:
    """(the folder, True if it was made here rather than given empty by the user)."""
    if requested is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path, n = Path("runs") / f"{command}-{stamp}", 1
        while path.exists():
            n += 1
            path = Path("runs") / f"{command}-{stamp}-{n}"
    else:
        path = Path(requested)
        if path.exists() and not path.is_dir():
            raise RunError(f"--out {requested}: exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            raise RunError(f"--out {requested}: folder is not empty; choose a new or empty one")
    try:
        existed = path.is_dir()
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError("not writable")
    except OSError as e:
        raise RunError(f"--out {path}: cannot create or write the folder ({e.strerror or e})") from None
    return path, not existed
