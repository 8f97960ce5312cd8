"""Whole runs, as the command line starts them and as Python can: config in, a run folder and a summary out.

* :func:`run_train`: one dA (``dae train``); :func:`run_tutorial`: the tutorial's two dAs, corruption
  0% and 30% (``dae tutorial``); :func:`run_sda`: pre-training and fine-tuning of a stack
  (``dae sda``); :func:`run_ladder`: a ladder network (``dae ladder``); :func:`run_deep`: a deep
  autoencoder, pre-trained, unrolled and fine-tuned on reconstruction (``dae deep``).

Each: config -> data -> batches -> model -> :mod:`dae.train` -> :class:`dae.runs.RunFolder`, and
returns its summary (the dict written to ``summary.json``).  ``say`` prints the tutorial's
messages (``print`` by default; ``None`` for silence).  Checkpoints are written as the run goes,
and ``resume=FOLDER`` continues a run from its last one, bit for bit.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .autoencoder import DenoisingAutoencoder
from .batches import make_batches, steps_per_epoch
from .config import (EVAL_ROWS, LABELLED_VALIDATION_FRACTION, STREAM_BYTES, TUTORIAL_CORRUPTION_LEVELS,
                     DeepRunConfig, FinetuneConfig, LadderRunConfig, SdARunConfig, TrainRunConfig, from_dict, merge,
                     pseudo_label_weight, refit_epochs, to_dict)
from .data import (UNLABELLED, DataError, Dataset, Split, hold_out_labelled, labelled_splits, load_data,
                   reconstruction_splits, semi_supervised_splits)
from .deep import DeepAutoencoder, pca_fit
from .distributed import SINGLE, World
from .files import write_bytes
from .ladder import LadderNetwork
from .plots import (save_code_scatter, save_compared_reconstructions, save_filters, save_learning_curve,
                    save_reconstructions)
from .runs import RunFolder, generators, restore
from .saving import GENERATORS, load_generator_states, load_model, save_generator_states, save_model
from .stacked import StackedDenoisingAutoencoder
from .stream import NpyStream
from .train import (DeepEpoch, EpochResult, FinetuneEpoch, LadderEpoch, TrainState, error_rate, finetune,
                    mean_reconstruction_error, pretrain, squared_error, train, train_deep, train_ladder)

N_PICTURE_EXAMPLES = 10  # digits shown in reconstructions.png
Say = Callable[[str], None] | None


# --- one dA ------------------------------------------------------------------------------------


def run_train(config: TrainRunConfig | None = None, out=None, *, resume=None, world: World | None = None,
              say: Say = print, progress: bool = False) -> dict:
    """Train one dA as ``config`` says, into the run folder ``out`` (default ``runs/train-<time>``)."""
    world, say = world or SINGLE, say or _silent
    run, checkpoint, config = _run_and_config(config, resume, world, DenoisingAutoencoder, TrainRunConfig)
    data = load_train_data(config, world)
    x = data.train.x
    if checkpoint is None:
        run = RunFolder.create(out, "train", world)
    elif checkpoint.model.n_visible != _cols(x):
        raise DataError(f"--resume {resume}: the data {config.data} no longer fit the checkpoint's model")
    streamed = " streamed from disk" if isinstance(x, NpyStream) else ""
    say(f"Training a {_cols(x)}-{config.model.n_hidden} dA on {data.name} ({_rows(x)} examples{streamed}), "
        f"corruption {config.model.corruption_level:g}, {_where(world)}, writing to {run.path}")
    with run.removed_if_empty_on_failure():
        return _fit_dA(config, data, run, world, say, progress, checkpoint)


def run_tutorial(config: TrainRunConfig | None = None, out=None, *, world: World | None = None, say: Say = print,
                 progress: bool = False) -> dict:
    """The tutorial's experiment: the dA of ``config`` with corruption 0% and then 30%, each in its
    own sub-folder, their filters side by side and one learning curve."""
    world, say, config = world or SINGLE, say or _silent, config or TrainRunConfig()
    data = load_train_data(config, world)
    run = RunFolder.create(out, "tutorial", world)
    say(f"The tutorial's experiment on {data.name}: a {_cols(data.train.x)}-{config.model.n_hidden} dA with "
        f"corruption 0% and 30%, {_where(world)}, writing to {run.path}")
    runs, curves = [], {}
    with run.removed_if_empty_on_failure():
        run.write_config(config)
        for level in TUTORIAL_CORRUPTION_LEVELS:
            name = f"corruption_{round(level * 100)}"
            part = run.sub(name)
            summary = _fit_dA(merge(config, {"model": {"corruption_level": level}}), data, part, world, say, progress)
            runs.append(summary)
            curves[f"corruption {level:.0%}"] = [(r["epoch"], r["cost"]) for r in part.metrics]
            if run.main:
                write_bytes(run.path / f"filters_{name}.png", (part.path / "filters.png").read_bytes())
    run.picture(save_learning_curve, "learning_curve.png", curves, title=f"dA on {data.name}: mean training cost")
    summary = {"runs": runs}
    run.write_json("summary.json", summary)
    return summary


def _fit_dA(config: TrainRunConfig, data: Dataset, run: RunFolder, world: World, say, progress: bool,
            checkpoint=None) -> dict:
    """Train one dA into ``run``: checkpoints every ``checkpoint_every`` epochs, then the model,
    its pictures and its summary."""
    x = data.train.x
    init, generator = generators(config.seed, world)
    if checkpoint is None:
        model, state = DenoisingAutoencoder.from_config(_cols(x), config.model, generator=init), TrainState()
    else:
        model = checkpoint.model
        state = restore(checkpoint, world, generator, EpochResult)
    model.to(world.device)
    batches = make_batches(x, batch_size=config.training.batch_size, world=world, device=world.device)
    shuffle = isinstance(x, NpyStream) if config.training.shuffle is None else config.training.shuffle
    config = merge(config, {"training": {"shuffle": shuffle}})  # the resolved config is the one written
    run.write_config(config)
    epochs = config.training.epochs

    def report(r: EpochResult) -> None:
        say(f"Training epoch {r.epoch}, cost {r.cost:.2f}")
        run.log({"epoch": r.epoch, "cost": r.cost, "seconds": round(r.seconds, 4)})
        if r.epoch % config.checkpoint_every == 0 or r.epoch == epochs:
            run.checkpoint(model, generator, config, state)

    try:
        train(model, batches, config.training, generator=generator, callback=report, progress=progress, state=state,
              order_seed=config.seed, world=world)
    except KeyboardInterrupt:
        run.write_interrupted("dae train", epochs_done=state.epoch, epochs=epochs,
                              final_cost=state.history[-1].cost if state.history else None)
        raise
    history = state.history
    seconds = sum(r.seconds for r in history)
    say(f"The {config.model.corruption_level:.0%} corruption code ran for {seconds / 60:.2f}m ({seconds:.1f} s)")
    summary = {
        "data": data.name, "n_train": batches.n_used, "n_visible": _cols(x), **_plain(config.model),
        **_plain(config.training), "epochs": len(history), "global_batch_size": batches.batch_size * world.size,
        "world_size": world.size, "device": str(world.device), "streamed": isinstance(x, NpyStream),
        "seed": config.seed, "final_cost": history[-1].cost, "train_seconds": round(seconds, 3),
        "seconds_per_epoch": round(seconds / len(history), 4),
        "examples_per_second": round(batches.n_used * len(history) / max(seconds, 1e-9), 1),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if run.main:
        save_model(model, run.path, image_shape=data.image_shape, data=data.name)
        source = data.test or data.valid or data.train
        shown = (source.x.head(N_PICTURE_EXAMPLES) if isinstance(source.x, NpyStream)
                 else source.x[:N_PICTURE_EXAMPLES]).to(world.device)
        with torch.no_grad():
            corrupted = model.corrupt(shown, generator)
            run.picture(save_reconstructions, "reconstructions.png", shown, corrupted,
                        model.decode(model.encode(corrupted)), data.image_shape)
        run.picture(save_filters, "filters.png", model.W.detach(), data.image_shape)
        curve = {f"corruption {config.model.corruption_level:.0%}": [(r.epoch, r.cost) for r in history]}
        run.picture(save_learning_curve, "learning_curve.png", curve, title=f"dA on {data.name}: mean training cost")
    run.write_json("summary.json", summary)
    return summary


def load_train_data(config: TrainRunConfig, world: World) -> Dataset:
    """The data of ``config.data``; a .npy file over ``STREAM_BYTES`` (or any, with ``stream=True``)
    is not loaded but streamed: its training split is then an :class:`NpyStream`."""
    path = Path(config.data)
    is_npy = path.suffix.lower() == ".npy" and path.is_file()
    if config.stream and not is_npy:
        raise DataError(f"--stream reads .npy files; {config.data} is not one")
    streamed = config.stream or (config.stream is None and is_npy and path.stat().st_size > STREAM_BYTES)
    if streamed and config.image_size is None:  # with an image_size, load_data says it is not for a .npy
        stream = NpyStream(path, loss=config.model.loss)
        data = Dataset(Split(stream), None, None, stream.image_shape, stream.name)
    else:
        data = load_data(config.data, loss=config.model.loss, image_size=config.image_size)
    steps_per_epoch(_rows(data.train.x), config.training.batch_size, world, config.data)  # before any file
    return data


# --- stacked denoising autoencoders ------------------------------------------------------------


def run_sda(config: SdARunConfig | None = None, out=None, *, resume=None, world: World | None = None,
            say: Say = print, progress: bool = False, preset: str | None = None) -> dict:
    """Pre-train and fine-tune a stack as ``config`` says (default: the tutorial's ``SdA.py``), into
    the run folder ``out``.  A checkpoint follows every epoch of either phase; ``pretrained/``
    keeps the model after each pre-trained layer, with the generators' states, from which
    ``config.pretrained`` fine-tunes again."""
    world, say = world or SINGLE, say or _silent
    run, checkpoint, config = _run_and_config(config, resume, world, StackedDenoisingAutoencoder, SdARunConfig)
    if checkpoint is not None:
        preset = checkpoint.state.get("preset")
    data = load_data(config.data, loss="cross-entropy", image_size=config.image_size)
    labelled = None
    if _few_labels(config, data):
        # Pre-training on every image; fine-tuning on the labels drawn, early stopping on a fifth of them.
        part = semi_supervised_splits(data, config.labels, config.label_seed, config.data)
        kept, held = hold_out_labelled(part.labelled, data.train.y, LABELLED_VALIDATION_FRACTION, config.label_seed)
        x_pretrain, (x, y), test, n_classes = part.x, (data.train.x[kept], data.train.y[kept]), part.test, part.n_classes
        valid = (data.train.x[held], data.train.y[held]) if len(held) else None
        # A refit learns from the labels held out too (below): then none is held out.
        labelled = _labelled_record(config, part.labelled, None if config.refit else held)
        if config.finetuning.batch_size * world.size > len(x):  # the rule: a minibatch is at most the labels kept
            config = merge(config, {"finetuning": {"batch_size": max(1, len(x) // world.size)}})
            say(f"fine-tuning minibatches of {config.finetuning.batch_size}: the {len(x)} labels kept")
    else:
        if config.finetuning.pseudo_labels:
            raise DataError("pseudo-labels need unlabelled images: give --labels N, or data whose y_train marks "
                            f"unlabelled rows with {UNLABELLED}")
        (x, y), valid, test = labelled_splits(data, config.data, config.seed)
        n_classes = int(y.max()) + 1
        for name, part in (("validation", valid), ("test", test)):
            if part is not None and (int(part[1].max()) >= n_classes or n_classes < 2):
                raise DataError(f"{config.data}: labels must be integers 0..K-1 with K >= 2, and the {name} labels "
                                f"within the training labels' range 0..{n_classes - 1}")
    finetuning = config.finetuning
    if config.refit and valid is not None:  # the validation rows join the training rows
        finetuning = dataclasses.replace(finetuning, epochs=refit_epochs(finetuning.epochs, len(x), len(valid[0])))
        say(f"refit: learning from the {len(x)} training and {len(valid[0])} validation rows together, "
            f"{finetuning.epochs} fine-tuning epochs (the updates of {config.finetuning.epochs} on the "
            f"{len(x)}), no early stopping")
        x, y, valid = torch.cat([x, valid[0]]), torch.cat([y, valid[1]]), None
    if labelled is None:
        x_pretrain = x
    steps_per_epoch(len(x_pretrain), config.pretraining.batch_size, world, config.data)  # before any file
    steps_per_epoch(len(x), config.finetuning.batch_size, world, config.data)
    init, generator = generators(config.seed, world)
    if checkpoint is not None:
        model = checkpoint.model
        state = restore(checkpoint, world, generator)
        phase = checkpoint.state["phase"]
    else:
        phase, state = ("pretrain" if config.pretrain and config.pretrained is None else "finetune"), TrainState()
        if config.pretrained is not None:
            model = load_model(config.pretrained, kind=StackedDenoisingAutoencoder)
            # Dropout and input masking act in fine-tuning only: this run's settings, not those saved.
            model.dropout.p, model.input_corruption = config.model.dropout, config.model.input_corruption
            _continue_generator(Path(config.pretrained) / GENERATORS, config.seed, world, generator)
        else:
            model = StackedDenoisingAutoencoder.from_config(x.shape[1], n_classes, config.model, generator=init)
        run = RunFolder.create(out, "sda", world)
    if model.n_visible != x.shape[1] or model.n_classes != n_classes:
        raise DataError(f"the model has {model.n_visible} inputs and {model.n_classes} classes, "
                        f"the data {x.shape[1]} and {n_classes}")
    model.to(world.device)
    sizes = "-".join(str(n) for n in [x.shape[1], *model.hidden_layer_sizes, n_classes])
    n_valid = 0 if valid is None else len(valid[0])
    examples = (f"{len(x)} train, {n_valid} valid" if labelled is None else
                f"{len(x_pretrain)} unlabelled; {len(x)} labels to train on, {n_valid} for early stopping")
    say(f"SdA {sizes} on {data.name} ({examples}, {0 if test is None else len(test[0])} test examples), "
        f"preset {preset or 'none'}, {_where(world)}, writing to {run.path}")
    sda = _SdARun(config, run, model, generator, state, world, say, progress, data,
                  checkpoint.state.get("clock") if checkpoint is not None else None, preset=preset)
    try:
        with run.removed_if_empty_on_failure():
            run.write_config(config)
            if labelled is not None:
                run.write_json(LABELLED_FILE, labelled)
            if phase == "pretrain":
                sda.pretrain(x_pretrain, config.pretraining)
            return sda.finetune((x, y), valid, test, labelled, finetuning,
                                x_pretrain if finetuning.pseudo_labels else None)
    except KeyboardInterrupt:
        run.write_interrupted("dae sda", epochs_done=len(run.metrics))
        raise


class _PhasedRun:
    """The two phases of one run that pre-trains a stack (`dae sda`, `dae deep`): pre-training,
    then the phase called ``finetune``; their metrics, checkpoints and clock."""

    def __init__(self, config, run: RunFolder, model, generator, state: TrainState, world: World, say,
                 progress: bool, data: Dataset, clock: dict | None, **extra) -> None:
        self.config, self.run, self.model, self.generator, self.state = config, run, model, generator, state
        self.world, self.say, self.progress, self.data = world, say, progress, data
        self.extra = extra  # more to keep in each checkpoint (dae sda: the preset)
        self.clock = clock or {"pretrain": 0.0, "finetune": 0.0}
        self.since = time.perf_counter()

    def tick(self, phase: str) -> None:
        now = time.perf_counter()
        self.clock[phase] += now - self.since
        self.since = now

    def save(self, phase: str, epoch: int, epochs: int) -> None:
        """A checkpoint every ``checkpoint_every`` epochs (every epoch for `dae sda`) and after the
        last epoch of a layer or phase."""
        self.tick(phase)
        if epoch % getattr(self.config, "checkpoint_every", 1) == 0 or epoch == epochs:
            self.run.checkpoint(self.model, self.generator, self.config, self.state, phase=phase, clock=self.clock,
                                **self.extra)

    def pretrain(self, x: torch.Tensor, training) -> None:
        """Greedy pre-training of the model's dAs on ``x`` with the :class:`TrainingConfig` ``training``;
        ``pretrained/`` keeps the model and the generators' states after each layer."""
        config, run, say, n = self.config, self.run, self.say, len(self.model.autoencoders)

        def report(layer: int, r: EpochResult) -> None:
            say(f"Pre-training layer {layer}, epoch {r.epoch}, cost {r.cost:.2f}")
            run.log({"phase": "pretrain", "layer": layer, "epoch": r.epoch, "cost": r.cost,
                     "seconds": round(r.seconds, 4)})
            self.save("pretrain", r.epoch, training.for_layer(layer - 1, n).epochs)

        def layer_done(layer: int) -> None:
            states = self.world.gather_bytes(self.generator.get_state())  # a collective: every rank takes part
            if run.main:
                save_model(self.model, run.path / "pretrained", pretrained_layers=layer,
                           image_shape=self.data.image_shape)
                save_generator_states(run.path / "pretrained" / GENERATORS, states, config.seed)

        pretrain(self.model, x, training, generator=self.generator, callback=report, after_layer=layer_done,
                 progress=self.progress, state=self.state, order_seed=config.seed, world=self.world)
        self.tick("pretrain")
        self.state.restart()  # fine-tuning starts afresh
        say(f"The pretraining code ran for {self.clock['pretrain'] / 60:.2f}m")

    def picture_pretraining(self) -> None:
        """``pretrain_curve.png``: each layer's mean cost per epoch, from metrics.jsonl (if pre-trained)."""
        curves: dict = {}
        for m in self.run.metrics:
            if m["phase"] == "pretrain":
                curves.setdefault(f"layer {m['layer']}", []).append((m["epoch"], m["cost"]))
        if curves:
            self.run.picture(save_learning_curve, "pretrain_curve.png", curves,
                             title="Pre-training: mean cost of each layer's dA")


class _SdARun(_PhasedRun):
    """The two phases of one `dae sda` run."""

    def finetune(self, train_set, valid, test, labelled: dict | None, finetuning: FinetuneConfig,
                 unlabelled=None) -> dict:
        """Fine-tune by ``finetuning``: the config's, or a refit's (its epochs scaled)."""
        config, run, say, model = self.config, self.run, self.say, self.model
        self.picture_pretraining()

        def report(e: FinetuneEpoch) -> None:
            if e.complete:  # the validation error, or with none (a refit) the training cost
                say(f"epoch {e.epoch}, validation error {e.valid_error:.2%}" if valid is not None
                    else f"epoch {e.epoch}, training cost {e.train_loss:.4f}")
            if e.test_error is not None:
                say(f"     epoch {e.epoch}, test error of best model {e.test_error:.2%}")
            record = {"phase": "finetune", "epoch": e.epoch, "train_loss": e.train_loss,
                      "valid_error": None if valid is None or not e.complete else e.valid_error,
                      "test_error": e.test_error, "learning_rate": e.learning_rate, "seconds": round(e.seconds, 4),
                      "complete": e.complete}
            if unlabelled is not None:  # train_loss is then the labelled NLL + this weight x the pseudo-labels'
                record["pseudo_label_weight"] = pseudo_label_weight(finetuning, e.epoch)
            run.log(record)
            self.save("finetune", e.epoch, finetuning.epochs)

        if unlabelled is not None:
            f = finetuning
            weights = [pseudo_label_weight(f, e) for e in range(1, f.epochs + 1)]
            start = next((e for e, w in enumerate(weights, 1) if w > 0), None)
            full = next((e for e, w in enumerate(weights, 1) if w == f.pseudo_labels), None)
            if start is None:
                when = "0 throughout: too few epochs for its ramp"
            else:
                top = f"{f.pseudo_labels:g} at epoch {full}" if full else f"{weights[-1]:.3g} by the last epoch"
                when = f"0 up to epoch {start - 1}, rising to {top}"
            say(f"fine-tuning with pseudo-labels of all {_rows(unlabelled)} images (Lee 2013), an epoch a pass "
                f"over them; their weight: {when}")

        self.since = time.perf_counter()
        result = finetune(model, train_set, valid, test, finetuning, generator=self.generator, callback=report,
                          progress=self.progress, state=self.state, order_seed=config.seed, world=self.world,
                          unlabelled=unlabelled)
        self.tick("finetune")
        test_text = "" if result.test_error is None else f" with test performance {result.test_error:.2%}"
        valid_text = "" if valid is None else f" with best validation score of {result.best_valid_error:.2%},"
        say(f"Optimization complete{valid_text} at epoch {result.best_epoch}{test_text}")
        say(f"The fine tuning code ran for {self.clock['finetune'] / 60:.2f}m")
        pre, fine = self.clock["pretrain"], self.clock["finetune"]
        summary = {
            "data": self.data.name, "preset": self.extra["preset"], "pretrained": config.pretrain,
            "best_valid_error": None if valid is None else result.best_valid_error, "test_error": result.test_error,
            "best_epoch": result.best_epoch, "finetune_epochs_run": len(result.history),
            "stopped_by": result.stopped_by, "pretrain_seconds": round(pre, 3), "finetune_seconds": round(fine, 3),
            "total_seconds": round(pre + fine, 3), "n_train": len(train_set[0]),
            "n_valid": 0 if valid is None else len(valid[0]),
            "labels": None if labelled is None else labelled["labels"],
            "label_seed": None if labelled is None else labelled["label_seed"],
            "labelled_file": None if labelled is None else LABELLED_FILE,
            "n_test": None if test is None else len(test[0]), "n_classes": model.n_classes,
            "world_size": self.world.size, "global_batch_size": finetuning.batch_size * self.world.size,
            "device": str(self.world.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "config": to_dict(config),
        }
        if run.main:
            save_model(model, run.path, image_shape=self.data.image_shape, data=self.data.name,
                       classes=self.data.classes)  # the names of the labels, for a folder of images
            run.picture(save_filters, "filters.png", model.hidden[0].W.detach(), self.data.image_shape)
            errors = {"validation": [(e.epoch, 100 * e.valid_error) for e in result.history],
                      "test (at new bests)": [(e.epoch, 100 * e.test_error) for e in result.history
                                              if e.test_error is not None]}
            run.picture(save_learning_curve, "finetune_curve.png", errors, ylabel="error (%)",
                        title="Fine-tuning: error rates")
        run.write_json("summary.json", summary)
        return summary


# --- few labels --------------------------------------------------------------------------------

LABELLED_FILE = "labelled.json"


def _few_labels(config, data: Dataset) -> bool:
    """True when ``config`` learns from a subset of the labels (``labels`` set, or some unlabelled)."""
    y = data.train.y
    return config.labels is not None or (y is not None and bool((y == UNLABELLED).any()))


def _labelled_record(config, indices: torch.Tensor, held_out: torch.Tensor | None = None) -> dict:
    """What ``labelled.json`` holds: which training examples' labels the run read, and how they were drawn."""
    record = {"labels": len(indices), "label_seed": config.label_seed, "drawn": config.labels is not None,
              "indices": indices.tolist()}
    if held_out is not None:
        record["held_out_for_early_stopping"] = held_out.tolist()
    return record


def run_ladder(config: LadderRunConfig | None = None, out=None, *, resume=None, world: World | None = None,
               say: Say = print, progress: bool = False) -> dict:
    """Train a ladder network as ``config`` says (default: [Rasmus15]'s MNIST model with 100
    labels) into the run folder ``out``; ``labelled.json`` names the labels it read.  A checkpoint
    follows every ``checkpoint_every`` epochs, from which ``resume`` continues."""
    world, say = world or SINGLE, say or _silent
    run, checkpoint, config = _run_and_config(config, resume, world, LadderNetwork, LadderRunConfig)
    data = load_data(config.data, loss="cross-entropy", image_size=config.image_size)
    part = semi_supervised_splits(data, config.labels, config.label_seed, config.data)
    steps_per_epoch(len(part.x), config.training.batch_size, world, config.data)  # before any file is written
    init, generator = generators(config.seed, world)
    if checkpoint is not None:
        model, state = checkpoint.model, restore(checkpoint, world, generator, LadderEpoch)
        if model.n_visible != part.x.shape[1] or model.n_classes != part.n_classes:
            raise DataError(f"--resume {resume}: the data {config.data} no longer fit the checkpoint's model")
    else:
        model = LadderNetwork.from_config(part.x.shape[1], part.n_classes, config.model, generator=init)
        state = TrainState()
        run = RunFolder.create(out, "ladder", world)
    model.to(world.device)
    sizes = "-".join(map(str, model.sizes))
    say(f"Ladder network {sizes} on {data.name}: {len(part.labelled)} labelled of {len(part.x)} training examples, "
        f"{config.training.epochs} epochs, {_where(world)}, writing to {run.path}")

    def report(e: LadderEpoch) -> None:
        valid = "" if e.valid_error != e.valid_error else f", validation error {e.valid_error:.2%}"
        say(f"epoch {e.epoch}, cost {e.cost:.3f} (supervised {e.supervised:.4f}, denoising "
            f"{e.cost - e.supervised:.3f}){valid}, {e.seconds:.1f} s")
        run.log({"epoch": e.epoch, "cost": e.cost, "supervised": e.supervised, "denoising": list(e.denoising),
                 "valid_error": None if e.valid_error != e.valid_error else e.valid_error,
                 "learning_rate": e.learning_rate, "seconds": round(e.seconds, 4)})
        if e.epoch % config.checkpoint_every == 0 or e.epoch == config.training.epochs:
            run.checkpoint(model, generator, config, state)

    try:
        with run.removed_if_empty_on_failure():
            run.write_config(config)
            run.write_json(LABELLED_FILE, _labelled_record(config, part.labelled))
            start = time.perf_counter()
            train_ladder(model, part.x, (part.x_labelled, part.y_labelled), config.training, valid=part.valid,
                         generator=generator, callback=report, progress=progress, state=state,
                         order_seed=config.seed, world=world)
            seconds = sum(e.seconds for e in state.history)
            test_error = None if part.test is None else error_rate(model, *part.test, world=world)
            if test_error is not None:
                say(f"test error {test_error:.2%} after {len(state.history)} epochs ({seconds / 60:.1f} min)")
            summary = {
                "data": data.name, "labels": len(part.labelled), "label_seed": config.label_seed,
                "labelled_file": LABELLED_FILE, "n_unlabelled": len(part.x), "test_error": test_error,
                "final_valid_error": state.history[-1].valid_error if part.valid is not None else None,
                "epochs": len(state.history), "train_seconds": round(seconds, 3),
                "wall_seconds_this_call": round(time.perf_counter() - start, 3), "n_classes": part.n_classes,
                "world_size": world.size, "global_batch_size": config.training.batch_size * world.size,
                "device": str(world.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                "config": to_dict(config),
            }
            if run.main:
                save_model(model, run.path, image_shape=data.image_shape, data=data.name,
                           classes=data.classes)  # the names of the labels, for a folder of images
                run.picture(save_filters, "filters.png", model.W[0].detach(), data.image_shape)
                curves = {"supervised": [(e.epoch, e.supervised) for e in state.history],
                          "denoising": [(e.epoch, e.cost - e.supervised) for e in state.history]}
                run.picture(save_learning_curve, "curve.png", curves, logy=True,
                            title="Ladder network: mean costs per epoch")
            run.write_json("summary.json", summary)
            return summary
    except KeyboardInterrupt:
        run.write_interrupted("dae ladder", epochs_done=len(state.history))
        raise


# --- deep autoencoders -------------------------------------------------------------------------


def run_deep(config: DeepRunConfig | None = None, out=None, *, resume=None, world: World | None = None,
             say: Say = print, progress: bool = False) -> dict:
    """Pre-train a stack of dAs, unroll it into a deep autoencoder and fine-tune that on
    reconstruction, as ``config`` says (default: [Hinton06]'s 784-1000-500-250-30 on MNIST), into
    the run folder ``out``.  A checkpoint follows every ``checkpoint_every`` epochs of either
    phase, from which ``resume`` continues; ``pretrained/`` keeps the stack after each pre-trained
    layer.  PCA with as many components as the code, fitted on the same training rows, is the
    baseline in the summary and in ``reconstructions.png``."""
    world, say = world or SINGLE, say or _silent
    run, checkpoint, config = _run_and_config(config, resume, world, DeepAutoencoder, DeepRunConfig)
    data = load_data(config.data, loss=config.model.loss, image_size=config.image_size)
    train_split, valid, test = reconstruction_splits(data, config.seed)
    x = train_split.x
    if config.pretrain:
        steps_per_epoch(len(x), config.pretraining.batch_size, world, config.data)  # before any file is written
    steps_per_epoch(len(x), config.training.batch_size, world, config.data)
    init, generator = generators(config.seed, world)
    if checkpoint is not None:
        model, phase = checkpoint.model, checkpoint.state["phase"]
        state = restore(checkpoint, world, generator, DeepEpoch if phase == "finetune" else EpochResult)
        if model.n_visible != x.shape[1]:
            raise DataError(f"--resume {resume}: the data {config.data} no longer fit the checkpoint's model")
    else:
        model = DeepAutoencoder.from_config(x.shape[1], config.model, generator=init)
        phase, state = ("pretrain" if config.pretrain else "finetune"), TrainState()
        run = RunFolder.create(out, "deep", world)
    model.to(world.device)
    sizes = "-".join(str(n) for n in [model.n_visible, *model.hidden_layer_sizes])
    say(f"Deep autoencoder {sizes} on {data.name} ({len(x)} train, {0 if valid is None else len(valid.x)} valid, "
        f"{0 if test is None else len(test.x)} test examples), "
        f"{'pre-trained' if config.pretrain else 'no pre-training'}"
        f", {_where(world)}, writing to {run.path}")
    deep = _DeepRun(config, run, model, generator, state, world, say, progress, data,
                    checkpoint.state.get("clock") if checkpoint is not None else None)
    try:
        with run.removed_if_empty_on_failure():
            run.write_config(config)
            if phase == "pretrain":
                deep.pretrain(x, config.layer_pretraining)
            return deep.finetune(train_split, valid, test)
    except KeyboardInterrupt:
        run.write_interrupted("dae deep", epochs_done=len(run.metrics))
        raise


class _DeepRun(_PhasedRun):
    """The two phases of one `dae deep` run: pre-training, then fine-tuning on reconstruction."""

    def finetune(self, train_split: Split, valid: Split | None, test: Split | None) -> dict:
        config, run, say, model, world = self.config, self.run, self.say, self.model, self.world
        model.unroll()
        self.picture_pretraining()

        def report(e: DeepEpoch) -> None:
            shown = "" if valid is None else f", validation squared error {e.valid_error:.2f}"
            say(f"Fine-tuning epoch {e.epoch}, cost {e.cost:.2f}{shown}")
            run.log({"phase": "finetune", "epoch": e.epoch, "cost": e.cost,
                     "valid_squared_error": None if valid is None else e.valid_error,
                     "learning_rate": e.learning_rate, "seconds": round(e.seconds, 4)})
            self.save("finetune", e.epoch, config.training.epochs)

        self.since = time.perf_counter()
        history = train_deep(model, train_split.x, config.training, valid=None if valid is None else valid.x,
                             generator=self.generator, callback=report, progress=self.progress, state=self.state,
                             order_seed=config.seed, world=world)
        self.tick("finetune")
        say(f"The fine tuning code ran for {self.clock['finetune'] / 60:.2f}m")
        k = model.n_code
        parts = (("train", train_split), ("valid", valid), ("test", test))
        errors = {f"{name}_squared_error": None if part is None else squared_error(model, part.x, world)
                  for name, part in parts}
        test_ce = (mean_reconstruction_error(model, test.x, world)
                   if test is not None and model.loss_name == "cross-entropy" else None)
        # Only rank 0 reports PCA; a code wider than the data has no PCA of its size.
        pca = pca_fit(train_split.x, k) if run.main and k <= model.n_visible else None
        baseline = {f"pca_{name}_squared_error": None if part is None or pca is None else squared_error(pca, part.x)
                    for name, part in parts}
        if errors["test_squared_error"] is not None and run.main:
            pca_text = "" if pca is None else f"; PCA with {k} components {baseline['pca_test_squared_error']:.2f}"
            say(f"Test squared error per image {errors['test_squared_error']:.2f}{pca_text}")
        pre, fine = self.clock["pretrain"], self.clock["finetune"]
        sizes = "-".join(str(n) for n in [model.n_visible, *model.hidden_layer_sizes])
        summary = {
            "data": self.data.name, "sizes": sizes, "code_size": k, "pretrained": config.pretrain,
            **errors, "test_cross_entropy": test_ce, **baseline,
            "final_cost": history[-1].cost, "epochs": len(history), "pretrain_seconds": round(pre, 3),
            "finetune_seconds": round(fine, 3), "total_seconds": round(pre + fine, 3), "n_train": len(train_split.x),
            "n_valid": 0 if valid is None else len(valid.x), "n_test": 0 if test is None else len(test.x),
            "world_size": world.size, "global_batch_size": config.training.batch_size * world.size,
            "device": str(world.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "config": to_dict(config),
        }
        if run.main:
            save_model(model, run.path, image_shape=self.data.image_shape, data=self.data.name)
            source = test or valid or train_split
            shown = source.x[:N_PICTURE_EXAMPLES].to(world.device)
            with torch.no_grad():
                rows = {"deep autoencoder": model.reconstruct(shown)}
                if pca is not None:
                    rows[f"PCA, {k} components"] = pca.reconstruct(shown.to(pca.mean.device))
                run.picture(save_compared_reconstructions, "reconstructions.png", shown, rows, self.data.image_shape)
                if k == 2:
                    codes = torch.cat([model.encode(rows.to(world.device)).cpu() for rows in source.x.split(EVAL_ROWS)])
                    which = "test" if source is test else "validation" if source is valid else "training"
                    run.picture(save_code_scatter, "codes.png", codes, source.y,
                                title=f"The 2-D codes of {len(codes)} {which} examples of {self.data.name}")
            curve = {"fine-tuning cost (the loss)": [(e.epoch, e.cost) for e in history]}
            if valid is not None:
                curve["validation squared error"] = [(e.epoch, e.valid_error) for e in history]
            run.picture(save_learning_curve, "curve.png", curve, ylabel="per example", logy=True,
                        title="Fine-tuning the deep autoencoder")
        run.write_json("summary.json", summary)
        return summary


def _run_and_config(config, resume, world: World, kind: type, config_class: type):
    """(run folder, checkpoint, config): with ``resume``, the run folder, its last checkpoint and
    the run's own settings (a resumed run goes on as it began); else (None, None, ``config`` or
    ``config_class``'s defaults), the folder being made once the data are checked."""
    if resume is None:
        return None, None, config or config_class()
    run, checkpoint = RunFolder.resume(resume, world, kind)
    return run, checkpoint, from_dict(config_class, checkpoint.state["config"])


def _continue_generator(path: Path, seed: int, world: World, generator: torch.Generator) -> None:
    """Continue this process's random stream where the pre-training run left it, so that
    fine-tuning from ``pretrained`` draws what that run's fine-tuning drew (with the same seed,
    number of processes and kind of device; else it starts from the seed)."""
    if not path.is_file():
        return
    states, saved_seed = load_generator_states(path)
    if saved_seed == seed and len(states) == world.size:
        try:
            generator.set_state(states[world.rank])
        except (RuntimeError, TypeError):  # a state for another kind of device
            pass


def _plain(config) -> dict:
    return {k: v for k, v in to_dict(config).items() if k != "version"}


def _rows(x) -> int:
    return x.n_rows if isinstance(x, NpyStream) else x.shape[0]


def _cols(x) -> int:
    return x.n_cols if isinstance(x, NpyStream) else x.shape[1]


def _where(world: World) -> str:
    return f"on {world.device}" if world.size == 1 else f"on {world.size} processes ({world.device.type})"


def _silent(message: str) -> None:
    pass

