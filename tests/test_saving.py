"""Models are saved as safetensors + JSON, and loading one never runs code from it."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from dae import DenoisingAutoencoder, ModelFileError, StackedDenoisingAutoencoder, load_model, save_model


@pytest.mark.parametrize("tied", [True, False])
def test_a_saved_model_loads_back_identical(tmp_path, tied):
    m = DenoisingAutoencoder(12, 5, corruption_level=0.2, tied=tied, loss="squared-error", activation="tanh",
                             generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.b.uniform_()
        m.b_prime.uniform_()
    save_model(m, tmp_path / "m", image_shape=[3, 4])
    loaded = load_model(tmp_path / "m")
    assert (loaded.n_visible, loaded.n_hidden, loaded.tied) == (12, 5, tied)
    assert (loaded.corruption_level, loaded.loss_name, loaded.activation) == (0.2, "squared-error", "tanh")
    for (name, p), q in zip(m.named_parameters(), loaded.parameters()):
        assert torch.equal(p, q), name
    assert json.loads((tmp_path / "m" / "config.json").read_text())["image_shape"] == [3, 4]
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]  # no temporary left


def _stack():
    m = StackedDenoisingAutoencoder(6, [5, 4], 3, [0.1, 0.25], dropout=0.2, input_corruption=0.1,
                                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-1, 1)
    return m


def test_a_saved_stack_loads_back_identical_with_its_dropout_and_input_corruption(tmp_path):
    m = _stack()
    save_model(m, tmp_path / "s")
    loaded = load_model(tmp_path / "s", kind=StackedDenoisingAutoencoder)
    assert (loaded.hidden_layer_sizes, loaded.n_classes) == (m.hidden_layer_sizes, 3)
    assert [dA.corruption_level for dA in loaded.autoencoders] == [0.1, 0.25]
    assert (loaded.dropout.p, loaded.input_corruption) == (0.2, 0.1)
    assert loaded.config == m.config
    for (name, p), q in zip(m.named_parameters(), loaded.parameters()):
        assert torch.equal(p, q), name
    x = torch.rand(5, 6)
    assert torch.equal(loaded.predict_proba(x), m.predict_proba(x))
    with pytest.raises(ModelFileError, match="not a DenoisingAutoencoder"):
        load_model(tmp_path / "s", kind=DenoisingAutoencoder)


def test_a_stack_saved_before_the_softmax_layer_was_a_module_still_loads(tmp_path):
    # Older files name the softmax layer's tensors log_W and log_b, and have no dropout or
    # input_corruption in config.json: they load as a stack without either.
    m = _stack()
    save_model(m, tmp_path / "s")
    tensors = {name: p.detach().clone() for name, p in m.named_parameters()}
    tensors["log_W"], tensors["log_b"] = tensors.pop("classifier.W"), tensors.pop("classifier.b")
    save_file(tensors, tmp_path / "s" / "model.safetensors")
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    del config["dropout"], config["input_corruption"]
    (tmp_path / "s" / "config.json").write_text(json.dumps(config))
    loaded = load_model(tmp_path / "s")
    assert torch.equal(loaded.classifier.W, m.classifier.W) and torch.equal(loaded.classifier.b, m.classifier.b)
    assert (loaded.dropout.p, loaded.input_corruption) == (0.0, 0.0)


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_posing_as_a_model_is_refused_and_never_runs(tmp_path):
    save_model(DenoisingAutoencoder(4, 2), tmp_path / "m")
    target = tmp_path / "pwned"
    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps(_Payload(str(target))))
    with pytest.raises(ModelFileError, match="not a valid safetensors file"):
        load_model(tmp_path / "m")
    assert not target.exists()


def _saved(tmp_path):
    save_model(DenoisingAutoencoder(4, 2), tmp_path / "m")
    return tmp_path / "m"


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "config.json").unlink(), "missing"),
        (lambda f: (f / "model.safetensors").unlink(), "missing"),
        (lambda f: (f / "config.json").write_text("{not json"), "not a readable JSON"),
        (lambda f: (f / "config.json").write_text("[1, 2]"), "not a dae model config"),
        (lambda f: _edit_config(f, format_version=99), "format version 99"),
        (lambda f: _edit_config(f, kind="Pickle"), "unknown model kind"),
        (lambda f: _edit_config(f, kind="StackedDenoisingAutoencoder"), "hidden_layer_sizes"),
        (lambda f: _edit_config(f, n_hidden=3), r"expected torch.float32 \(4, 3\)"),
        (lambda f: _edit_config(f, n_hidden=-1), "n_hidden"),
        (lambda f: _edit_config(f, corruption_level=1.5), "corruption_level"),
        (lambda f: _edit_config(f, loss="hinge"), "loss"),
        (lambda f: _edit_config(f, tied=False), "expected"),
        (lambda f: save_file({"W": torch.zeros(4, 2)}, f / "model.safetensors"), "holds tensors"),
        (lambda f: save_file({"W": torch.zeros(4, 2, dtype=torch.float64), "b": torch.zeros(2),
                              "b_prime": torch.zeros(4)}, f / "model.safetensors"), "float64"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 3), "not a valid safetensors"),
    ],
)
def test_damaged_model_folders_are_refused_with_a_clear_message(tmp_path, damage, message):
    folder = _saved(tmp_path)
    damage(folder)
    with pytest.raises(ModelFileError, match=message):
        load_model(folder)


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError, match="no such model folder"):
        load_model(tmp_path / "nope")


# --- random and mutated bytes: only clean errors ---------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _mutations(original: bytes):
    """Random bytes, or the original with bytes flipped, cut off, or inserted."""
    n = len(original)
    flips = st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(1, 255)), min_size=1, max_size=8).map(
        lambda changes: bytes(b ^ dict(changes).get(i, 0) for i, b in enumerate(original)))
    cuts = st.integers(0, n).map(lambda k: original[:k])
    inserts = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=16)).map(
        lambda t: original[:t[0]] + t[1] + original[t[0]:])
    return st.one_of(st.binary(max_size=512), flips, cuts, inserts)


_FOLDER_CACHE = {}


def _valid_files(tmp_path_factory):
    if not _FOLDER_CACHE:
        folder = tmp_path_factory.mktemp("valid")
        save_model(DenoisingAutoencoder(5, 3, tied=False), folder)
        _FOLDER_CACHE["weights"] = (folder / "model.safetensors").read_bytes()
        _FOLDER_CACHE["config"] = (folder / "config.json").read_bytes()
    return _FOLDER_CACHE


@pytest.mark.parametrize("which", ["weights", "config"])
def test_mutated_model_files_give_only_clean_errors(tmp_path_factory, which):
    originals = _valid_files(tmp_path_factory)
    folder = tmp_path_factory.mktemp("fuzz")

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_mutations(originals[which]))
    def check(data):
        (folder / "model.safetensors").write_bytes(originals["weights"])
        (folder / "config.json").write_bytes(originals["config"])
        (folder / ("model.safetensors" if which == "weights" else "config.json")).write_bytes(data)
        try:
            load_model(folder)
        except ModelFileError:
            pass

    check()


@pytest.mark.parametrize("size, message", [(10**7, "expected torch.float32"), (10**12, "overflow")])
def test_a_config_claiming_huge_sizes_is_refused_without_allocating_them(tmp_path, size, message):
    folder = _saved(tmp_path)
    _edit_config(folder, n_visible=size, n_hidden=size)  # 4 * 10^14 bytes or more, were it allocated
    with pytest.raises(ModelFileError, match=message):
        load_model(folder)


def test_mutated_checkpoints_give_only_clean_errors(tmp_path_factory):
    from dae.saving import load_checkpoint, save_checkpoint

    folder = tmp_path_factory.mktemp("ckpt")
    model = DenoisingAutoencoder(5, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.loss(torch.rand(4, 5)).backward()
    optimizer.step()
    save_checkpoint(folder / "c.safetensors", model, torch.Generator().manual_seed(0), {"epoch": 1},
                    optimizer.state_dict(), tensors={"extra": torch.ones(2)})
    original = (folder / "c.safetensors").read_bytes()
    loaded = load_checkpoint(folder / "c.safetensors")
    assert loaded.state == {"epoch": 1} and torch.equal(loaded.tensors["extra"], torch.ones(2))
    assert set(loaded.optimizer_state["state"]) == {0, 1, 2}

    @settings(max_examples=200, deadline=None)
    @given(_mutations(original))
    def check(data):
        (folder / "m.safetensors").write_bytes(data)
        try:
            load_checkpoint(folder / "m.safetensors")
        except ModelFileError:
            pass

    check()
