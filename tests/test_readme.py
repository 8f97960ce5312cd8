"""The README's promises: its Python examples run (made small where they would take minutes),
its `dae` command lines are ones the command accepts, and CI runs its test command.

Each example is found by a line of it, and made small by replacing exact pieces of it: when the
README changes, a piece that is no longer there fails the test, which then needs updating."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from dae import load_mnist
from dae.cli import build_parser
from dae.config import ANOMALY_CODE_WEIGHT

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON = re.findall(r"```python\n(.*?)```", README, re.S)
BASH = re.findall(r"```bash\n(.*?)```", README, re.S)


def example(marker: str, replacements: dict[str, str]) -> str:
    """The one Python block of the README that contains ``marker``, with ``replacements`` made."""
    blocks = [b for b in PYTHON if marker in b]
    assert len(blocks) == 1, f"{len(blocks)} Python blocks of README.md contain {marker!r}"
    code = blocks[0]
    for old, new in replacements.items():
        assert code.count(old) == 1, f"the README example no longer has {old!r} once: update this test"
        code = code.replace(old, new)
    return code


def run(code: str, namespace: dict | None = None) -> dict:
    namespace = dict(namespace or {})
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_the_da_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = run(example("model = DenoisingAutoencoder(784", {"epochs=15": "epochs=1"}))
    assert (tmp_path / "my_da" / "model.safetensors").is_file()
    assert len(ns["history"]) == 1 and ns["codes"].shape == (10000, 500) and ns["errors"].shape == (10000,)


def test_the_whole_run_example_runs_on_a_small_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small_sda = {"model": {"hidden_layer_sizes": [20]}, "pretraining": {"epochs": 1}, "finetuning": {"epochs": 1}}
    run(example("run_train(", {'{"epochs": 5}': '{"epochs": 1}',
                               'SDA_PRESETS["default"]': f'merge(SDA_PRESETS["default"], {small_sda!r})'}))
    da = json.loads((tmp_path / "runs" / "my-da" / "summary.json").read_text())
    sda = json.loads((tmp_path / "runs" / "my-sda" / "summary.json").read_text())
    assert da["epochs"] == 1 and da["n_train"] == 50000
    assert sda["config"]["model"]["hidden_layer_sizes"] == [20] and 0 < sda["test_error"] < 0.5


def test_the_sda_example_runs_on_a_small_setting():
    ns = run(example("StackedDenoisingAutoencoder(784", {"[1000, 1000, 1000]": "[20, 20, 20]",
                                                         "epochs=10": "epochs=1", "epochs=80": "epochs=1"}))
    assert ns["codes"].shape == (10000, 20) and ns["p"].shape == (10000, 10)
    assert 0 < ns["result"].test_error < 0.9


@pytest.mark.filterwarnings("ignore:lbfgs failed to converge")
def test_the_scikit_learn_example_runs_on_a_small_setting():
    pytest.importorskip("sklearn")
    mnist = load_mnist()
    X, y = mnist.train.x[:300].numpy(), mnist.train.y[:300].numpy()
    ns = run(example("from dae.sklearn import DAETransformer, LadderClassifier", {
        "DAETransformer(n_hidden=500, random_state=0)": "DAETransformer(n_hidden=20, n_epochs=1, random_state=0)",
        "SdAClassifier(random_state=0)": "SdAClassifier(hidden_layer_sizes=[20], pretrain_epochs=1, "
                                         "finetune_epochs=2, random_state=0)",
        "LadderClassifier(random_state=0)": "LadderClassifier(hidden_layer_sizes=[20], n_epochs=1, random_state=0)"}),
        {"X": X, "y": y})
    assert ns["search"].best_params_["dae__corruption_level"] in (0.0, 0.3)
    assert ns["clf"].predict(X).shape == (300,) and set(ns["clf"].classes_) == set(y[:100].tolist())


def test_the_detector_example_runs_on_a_small_setting():
    pytest.importorskip("sklearn")
    mnist = load_mnist()
    ns = run(example("AutoencoderOutlierDetector(DAETransformer", {
        "DAETransformer(n_hidden=64, random_state=0)": "DAETransformer(n_hidden=8, n_epochs=1, random_state=0)"}),
        {"X_normal": mnist.train.x[:200].numpy(), "X_new": mnist.test.x[:50].numpy()})
    errors, per_pixel = ns["errors"], ns["per_pixel"]
    assert set(ns["labels"].tolist()) <= {-1, 1} and per_pixel.shape == (50, 784)
    assert np.allclose(per_pixel.sum(axis=1), errors) and ns["distances"].shape == (50,)
    detector, X_normal = ns["detector"], mnist.train.x[:200].numpy()
    e0, d0 = detector.reconstruction_error(X_normal), detector.code_distance(X_normal)  # the training rows'
    w = detector.code_weight
    expected = (errors - e0.mean()) / e0.std() + w * (ns["distances"] - d0.mean()) / d0.std()
    assert np.allclose(ns["normality"], -expected)
    assert np.array_equal(ns["margin"] < 0, ns["labels"] == -1)
    assert detector.code_weight == ANOMALY_CODE_WEIGHT and ns["plain"].code_weight == 0
    assert ns["deep"].get_params()["autoencoder__hidden_layer_sizes"] == (256, 64, 16)


def _dae_command_lines() -> list[list[str]]:
    """The arguments of every `dae ...` (or `torchrun ... -m dae ...`) line in the README's bash blocks."""
    found = []
    for block in BASH:
        for line in block.replace("\\\n", " ").splitlines():
            m = re.search(r"(?:^|[\s/])dae\s+(\w.*)$", line.split("  #")[0])
            if m:
                found.append(shlex.split(m.group(1)))
    return found


def test_every_dae_command_line_in_the_readme_is_accepted():
    lines = _dae_command_lines()
    commands = {argv[0] for argv in lines}
    assert {"tutorial", "train", "sda", "ladder", "deep", "encode", "score"} <= commands, commands
    parser = build_parser()
    for argv in lines:
        parser.parse_args(argv)  # a UsageError names what the command no longer accepts


def test_every_option_in_the_readmes_tables_is_an_option_of_dae(capsys):
    known = set()
    for command in ("train", "tutorial", "sda", "ladder", "deep", "encode", "score"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        known |= set(re.findall(r"(?<![\w-])--[a-z][\w-]*", capsys.readouterr().out))
    cells = re.findall(r"^\|([^|\n]*`--[^|\n]*)\|", README, re.M)  # the first cell of a table row
    listed = {flag for cell in cells for flag in re.findall(r"--[a-z][\w-]*", cell)}
    assert len(listed) > 10 and listed <= known, sorted(listed - known)


def test_ci_runs_the_readme_test_command():
    commands = [c.strip() for c in BASH]
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()
