"""dae.config: one place for every setting, its default and the rules between settings, read
alike by the command line, the Python API and the estimators; config files and checkpoints
written before a setting existed still load."""

import copy
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import dae.runs
from dae import DenoisingAutoencoder, StackedDenoisingAutoencoder, load_model, pretrain, train
from dae.cli import main
from dae.config import (CONFIG_VERSION, SDA_PRESETS, ConfigError, DAConfig, FinetuneConfig, SdAConfig, SdARunConfig,
                        TrainingConfig, TrainRunConfig, default_corruption_levels, from_dict, load_config_file, merge,
                        to_dict)
from dae.saving import CHECKPOINT, load_checkpoint

# A config of each class whose settings are, as far as the rules between them allow, not the defaults.
UNUSUAL = {
    DAConfig: DAConfig(n_hidden=7, corruption_level=0.1, noise="gaussian", loss="squared-error", activation="tanh",
                       tied=False, sparsity_target=0.1, sparsity_weight=0.0, contraction=0.01),
    TrainingConfig: TrainingConfig(epochs=(2, 3, 4), learning_rate=(0.01, 0.02, 0.03), batch_size=5, optimizer="sgd",
                                   momentum=0.5, weight_decay=0.001, schedule="cosine", shuffle=True),
    FinetuneConfig: FinetuneConfig(epochs=7, learning_rate=0.02, batch_size=3, momentum=0.5, schedule="cosine",
                                   shuffle=True, patience_epochs=3, improvement_threshold=0.9, patience_increase=3.0),
    SdAConfig: SdAConfig(hidden_layer_sizes=(20, 10, 5), corruption_levels=(0.05, 0.15, 0.25), dropout=0.1,
                         input_corruption=0.2),
}
UNUSUAL[TrainRunConfig] = TrainRunConfig(
    model=UNUSUAL[DAConfig], training=TrainingConfig(epochs=3, learning_rate=0.01, batch_size=5, momentum=0.5,
                                                     weight_decay=0.001, schedule="cosine", shuffle=True),
    data="x.npy", seed=7, device="cpu", stream=True, checkpoint_every=2)
UNUSUAL[SdARunConfig] = SdARunConfig(model=UNUSUAL[SdAConfig], pretraining=UNUSUAL[TrainingConfig],
                                     finetuning=UNUSUAL[FinetuneConfig], data="d.npz", seed=5, device="cuda:1",
                                     pretrain=False, pretrained="runs/a/pretrained")

CONFIGS = [*((cls.__name__, cls()) for cls in UNUSUAL), *((f"{cls.__name__}-unusual", c) for cls, c in UNUSUAL.items()),
           *((f"preset-{name}", c) for name, c in SDA_PRESETS.items())]


@pytest.mark.parametrize("name, config", CONFIGS, ids=[name for name, _ in CONFIGS])
def test_every_config_and_preset_goes_to_a_json_dict_and_back_unchanged(name, config):
    d = to_dict(config)
    assert d["version"] == CONFIG_VERSION
    assert json.loads(json.dumps(d)) == d  # plain JSON types
    assert from_dict(type(config), json.loads(json.dumps(d))) == config


def _leaves(d, prefix=()):
    for key, value in d.items():
        if key == "version":
            continue
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _get(d, path):
    for key in path:
        d = d[key]
    return d


def _without(d, path):
    d = copy.deepcopy(d)
    del _get(d, path[:-1])[path[-1]]
    return d


def _with(d, path, value):
    d = copy.deepcopy(d)
    _get(d, path[:-1])[path[-1]] = value
    return d


MISSING = [(cls, path) for cls in (TrainRunConfig, SdARunConfig) for path in _leaves(to_dict(UNUSUAL[cls]))]


@pytest.mark.parametrize("cls, path", MISSING, ids=[f"{cls.__name__}:{'.'.join(p)}" for cls, p in MISSING])
def test_a_dict_without_a_setting_as_a_file_from_before_it_existed_loads_with_that_settings_default(cls, path):
    written = to_dict(UNUSUAL[cls])
    expected = _with(written, path, _get(to_dict(cls()), path))  # that one setting at its default, the rest kept
    assert to_dict(from_dict(cls, _without(written, path))) == expected


def test_a_dict_without_whole_tables_or_a_version_takes_the_defaults():
    assert from_dict(SdARunConfig, {}) == SdARunConfig()
    assert from_dict(SdARunConfig, {"data": "d.npz"}) == SdARunConfig(data="d.npz")
    assert from_dict(TrainRunConfig, {"training": {"epochs": 3}}).training == TrainingConfig(epochs=3, shuffle=None)
    # A new depth without levels takes the default levels of that depth.
    assert from_dict(SdAConfig, {"hidden_layer_sizes": [4, 4, 4, 4]}).corruption_levels == (0.1, 0.2, 0.3, 0.3)
    assert SdAConfig((4,) * 5).corruption_levels == default_corruption_levels(5) == (0.1, 0.2, 0.3, 0.3, 0.3)


@pytest.mark.parametrize("cls, data, phrase", [
    (TrainRunConfig, {"trainig": {}}, "unknown setting trainig"),
    (TrainRunConfig, {"training": {"lr": 0.1}}, "unknown setting training.lr"),
    (SdARunConfig, {"finetuning": {"max_epochs": 3}}, "unknown setting finetuning.max_epochs"),
    (TrainRunConfig, {"version": CONFIG_VERSION + 1}, "newer than this dae"),
    (TrainRunConfig, {"training": {"epochs": "3"}}, "training.epochs must be an integer, got '3'"),
    (TrainRunConfig, {"training": {"epochs": 1.5}}, "training.epochs must be an integer"),
    (TrainRunConfig, {"model": {"tied": "yes"}}, "model.tied must be true or false"),
    (TrainRunConfig, {"model": {"n_hidden": [5, 6]}}, "model.n_hidden takes one value, not a list"),
    (TrainRunConfig, {"model": {"noise": None}}, "model.noise cannot be empty"),
    (TrainRunConfig, {"model": 5}, "model must be a table of settings"),
    (SdARunConfig, {"model": {"hidden_layer_sizes": [4, "x"]}}, "must be an integer"),
    (TrainRunConfig, {"training": {"learning_rate": float("nan")}}, "must be a finite number"),
    (TrainRunConfig, {"training": {"epochs": 0}}, "epochs must be positive"),
    (TrainRunConfig, {"training": {"learning_rate": -0.1}}, "learning_rate must be positive"),
    (TrainRunConfig, {"training": {"momentum": 1.0}}, "momentum must be in [0, 1)"),
    (TrainRunConfig, {"training": {"optimizer": "rmsprop"}}, "optimizer must be one of sgd, adam"),
    (TrainRunConfig, {"training": {"schedule": "step"}}, "schedule must be one of"),
    (TrainRunConfig, {"model": {"corruption_level": 1.0}}, "corruption_level must be in [0, 1)"),
    (TrainRunConfig, {"model": {"noise": "pink"}}, "noise must be one of"),
    (TrainRunConfig, {"seed": -1}, "seed must be a non-negative integer"),
    (TrainRunConfig, {"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (TrainRunConfig, {"checkpoint_every": 0}, "checkpoint_every must be positive"),
    (TrainRunConfig, {"training": {"epochs": [2, 3]}}, "one dA takes one epochs value"),
    (SdARunConfig, {"model": {"dropout": 1.0}}, "dropout and input_corruption must be in [0, 1)"),
    (SdARunConfig, {"model": {"hidden_layer_sizes": []}}, "hidden_layer_sizes must be one or more"),
    (SdARunConfig, {"finetuning": {"patience_epochs": 1}}, "patience_epochs must be at least 2"),
    (SdARunConfig, {"finetuning": {"improvement_threshold": 1.5}}, "improvement_threshold must be in (0, 1]"),
])
def test_unknown_settings_bad_types_and_values_out_of_range_are_one_line_config_errors(cls, data, phrase):
    with pytest.raises(ConfigError) as e:
        from_dict(cls, data)
    assert phrase in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


# --- the rules between settings: in config, for every way in ------------------------------------


def _cli_refuses(argv, phrase, capsys, tmp_path):
    out = tmp_path / "never"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dae: error: ") and err.count("\n") == 1 and phrase in err, err
    assert not out.exists()


def test_nesterov_needs_momentum_in_config_the_api_and_the_cli(capsys, tmp_path):
    phrase = "nesterov needs momentum"
    with pytest.raises(ConfigError, match=phrase):
        TrainingConfig(nesterov=True).check()
    TrainingConfig(nesterov=True, momentum=0.9).check()
    x = torch.rand(40, 8)
    with pytest.raises(ConfigError, match=phrase):
        train(DenoisingAutoencoder(8, 4), x, nesterov=True)
    with pytest.raises(ConfigError, match=phrase):
        pretrain(StackedDenoisingAutoencoder(8, [4], 2), x, nesterov=True)
    assert len(train(DenoisingAutoencoder(8, 4), x, epochs=1, nesterov=True, momentum=0.9)) == 1
    _cli_refuses(["train", "--nesterov"], phrase, capsys, tmp_path)


def test_the_sparsity_penalty_needs_sigmoid_codes_in_config_the_api_and_the_cli(capsys, tmp_path):
    phrase = "the sparsity penalty needs sigmoid codes"
    with pytest.raises(ConfigError, match=phrase):
        DAConfig(sparsity_weight=0.1, activation="tanh").check()
    with pytest.raises(ConfigError, match=phrase):
        DenoisingAutoencoder(8, 4, sparsity_weight=0.1, activation="tanh")
    DenoisingAutoencoder(8, 4, sparsity_weight=0.1)
    _cli_refuses(["train", "--sparsity-weight", "0.1", "--activation", "tanh"], phrase, capsys, tmp_path)


def test_one_corruption_level_per_layer_in_config_the_api_the_cli_and_the_estimator(capsys, tmp_path):
    phrase = "corruption_levels gives 3 levels for 2 layers"
    with pytest.raises(ConfigError, match=phrase):
        SdAConfig((4, 4), (0.1, 0.2, 0.3)).check()
    with pytest.raises(ConfigError, match=phrase):
        StackedDenoisingAutoencoder(8, [4, 4], 2, [0.1, 0.2, 0.3])
    _cli_refuses(["sda", "--hidden", "4,4", "--corruption", "0.1,0.2,0.3"], phrase, capsys, tmp_path)
    pytest.importorskip("sklearn")
    from dae.sklearn import SdAClassifier

    X, y = np.random.default_rng(0).random((40, 8)), np.arange(40) % 2
    with pytest.raises(ConfigError, match=phrase):
        SdAClassifier(hidden_layer_sizes=(4, 4), corruption_levels=(0.1, 0.2, 0.3)).fit(X, y)


def test_per_layer_epochs_and_rates_give_one_value_per_layer_everywhere(capsys, tmp_path):
    phrase = "epochs: 3 values for 2 layers"
    with pytest.raises(ConfigError, match=phrase):
        merge(SdARunConfig(), {"model": {"hidden_layer_sizes": [4, 4]}, "pretraining": {"epochs": [1, 2, 3]}})
    with pytest.raises(ConfigError, match="learning_rate: 3 values for 2 layers"):
        merge(SdARunConfig(), {"model": {"hidden_layer_sizes": [4, 4]},
                               "pretraining": {"learning_rate": [0.1, 0.2, 0.3]}})
    merge(SdARunConfig(), {"model": {"hidden_layer_sizes": [4, 4]}, "pretraining": {"epochs": [1, 2]}})
    with pytest.raises(ConfigError, match=phrase):
        pretrain(StackedDenoisingAutoencoder(8, [4, 4], 2), torch.rand(40, 8), epochs=(1, 2, 3))
    _cli_refuses(["sda", "--hidden", "4,4", "--pretrain-epochs", "1,2,3"], phrase, capsys, tmp_path)
    pytest.importorskip("sklearn")
    from dae.sklearn import SdAClassifier

    X, y = np.random.default_rng(0).random((40, 8)), np.arange(40) % 2
    with pytest.raises(ConfigError, match=phrase):
        SdAClassifier(hidden_layer_sizes=(4, 4), pretrain_epochs=[1, 2, 3]).fit(X, y)


# --- config files ----------------------------------------------------------------------------


def test_load_config_file_reads_json_and_toml_over_a_base(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"model": {"hidden_layer_sizes": [8, 4]},
                                                 "finetuning": {"epochs": 3, "momentum": 0.5}, "seed": 1}))
    (tmp_path / "c.toml").write_text('seed = 1\n[model]\nhidden_layer_sizes = [8, 4]\n'
                                     '[finetuning]\nepochs = 3\nmomentum = 0.5\n')
    base = SDA_PRESETS["tutorial"]
    expected = merge(base, {"model": {"hidden_layer_sizes": [8, 4]}, "finetuning": {"epochs": 3, "momentum": 0.5},
                            "seed": 1})
    assert load_config_file(tmp_path / "c.json", SdARunConfig, base=base) == expected
    assert load_config_file(tmp_path / "c.toml", SdARunConfig, base=base) == expected
    assert expected.model.corruption_levels == (0.1, 0.2) and expected.finetuning.batch_size == 1
    # A run's summary.json holds its config under "config".
    (tmp_path / "summary.json").write_text(json.dumps({"best_valid_error": 0.1, "config": to_dict(expected)}))
    assert load_config_file(tmp_path / "summary.json", SdARunConfig) == expected


@pytest.mark.parametrize("name, text, phrase", [
    ("bad.toml", "[model\n", "not a valid TOML file"),
    ("bad.json", "{", "not a valid JSON file"),
    ("unknown.json", '{"model": {"hidden": [4]}}', "unknown setting model.hidden"),
    ("list.json", "[1, 2]", "must be a table of settings"),
])
def test_a_bad_config_file_is_a_one_line_config_error_naming_the_file(tmp_path, name, text, phrase):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config_file(tmp_path / name, SdARunConfig)
    assert str(e.value).startswith(str(tmp_path / name)) and phrase in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="No such file"):
        load_config_file(tmp_path / "missing.json", SdARunConfig)


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "binary.npy"
    np.save(path, (np.random.default_rng(0).random((300, 16)) < 0.3).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.random((300, 16)).astype(np.float32)
    path = tmp_path_factory.mktemp("labelled") / "lab.npz"
    np.savez(path, x_train=x, y_train=(x[:, 0] > 0.5).astype(np.int64))
    return path


def _run_config(out):
    return json.loads((out / "run_config.json").read_text())


def test_dae_train_config_reruns_a_runs_run_config_and_options_override_it(binary, tmp_path):
    first = tmp_path / "a"
    assert main(["train", "--data", str(binary), "--hidden", "5", "--epochs", "2", "--batch-size", "5", "--lr", "0.05",
                 "--corruption", "0.2", "--seed", "3", "--quiet", "--out", str(first)]) == 0
    written = _run_config(first)
    assert from_dict(TrainRunConfig, written) == merge(TrainRunConfig(), {
        "data": str(binary), "model": {"n_hidden": 5, "corruption_level": 0.2}, "seed": 3,
        "training": {"epochs": 2, "batch_size": 5, "learning_rate": 0.05, "shuffle": False}})
    again = tmp_path / "b"
    assert main(["train", "--config", str(first / "run_config.json"), "--quiet", "--out", str(again)]) == 0
    assert _run_config(again) == written
    a, b = load_model(first), load_model(again)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # the same run again
    changed = tmp_path / "c"
    assert main(["train", "--config", str(first / "run_config.json"), "--epochs", "3", "--momentum", "0.5",
                 "--quiet", "--out", str(changed)]) == 0
    assert _run_config(changed) == _with(_with(written, ("training", "epochs"), 3), ("training", "momentum"), 0.5)


def test_dae_sda_config_reruns_a_runs_run_config_and_options_override_it(labelled, tmp_path):
    first = tmp_path / "a"
    assert main(["sda", "--data", str(labelled), "--preset", "tutorial", "--hidden", "6", "--pretrain-epochs", "1",
                 "--finetune-epochs", "2", "--quiet", "--out", str(first)]) == 0
    written = _run_config(first)
    assert from_dict(SdARunConfig, written) == merge(SDA_PRESETS["tutorial"], {
        "data": str(labelled), "model": {"hidden_layer_sizes": [6]}, "pretraining": {"epochs": [1]},
        "finetuning": {"epochs": 2}})
    changed = tmp_path / "b"
    assert main(["sda", "--config", str(first / "run_config.json"), "--finetune-epochs", "3", "--quiet",
                 "--out", str(changed)]) == 0
    # The tutorial's recipe (batch size 1, no momentum) comes from the file, not the default preset.
    assert _run_config(changed) == _with(written, ("finetuning", "epochs"), 3)
    assert json.loads((changed / "summary.json").read_text())["config"] == _run_config(changed)


def test_a_checkpoint_whose_config_lacks_a_setting_resumes_with_its_default_and_finishes(binary, tmp_path,
                                                                                          monkeypatch):
    args = ["train", "--data", str(binary), "--hidden", "5", "--epochs", "3", "--batch-size", "5", "--quiet"]
    whole = tmp_path / "whole"
    assert main([*args, "--out", str(whole)]) == 0
    real_save = dae.runs.save_checkpoint

    def save_then_stop(path, model, generator, state, optimizer_state=None, tensors=None):
        real_save(path, model, generator, state, optimizer_state, tensors)
        raise KeyboardInterrupt  # Ctrl-C after epoch 1's checkpoint

    monkeypatch.setattr(dae.runs, "save_checkpoint", save_then_stop)
    part = tmp_path / "part"
    assert main([*args, "--out", str(part)]) == 130
    monkeypatch.undo()
    # As if written before `nesterov` and `checkpoint_every` existed.
    path = part / CHECKPOINT
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    state = json.loads(metadata["state"])
    del state["config"]["training"]["nesterov"], state["config"]["checkpoint_every"]
    save_file(tensors, path, metadata={**metadata, "state": json.dumps(state)})
    assert "nesterov" not in load_checkpoint(path).state["config"]["training"]
    assert main(["train", "--resume", str(part), "--quiet"]) == 0
    a, b = load_model(whole), load_model(part)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert _run_config(part) == _run_config(whole)
