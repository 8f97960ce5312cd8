"""The benchmark scripts' own rules, on made-up run folders: benchmarks/sda_presets.py chooses
the best preset by validation error alone and shows no test error of a candidate it did not choose;
benchmarks/few_labels.py runs the recipes the README gives; benchmarks/one_class.py scores its code
weights as the detector does; bench_epoch.py's written floor writes W and is reported."""

import importlib.util
import json
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as when run: the scripts import each other
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_run(out: Path, name: str, valid: float | None, test: float, seconds: float = 600.0) -> None:
    """A finished run's folder; ``valid`` None: a refit, which kept no validation rows."""
    folder = out / name
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({
        "best_valid_error": valid, "test_error": test, "best_epoch": 3, "total_seconds": seconds,
        "pretrain_seconds": seconds / 4, "finetune_seconds": 3 * seconds / 4, "threads": 1}))
    lines = [{"phase": "pretrain", "layer": 1, "epoch": 1, "cost": 90.0}]
    lines += [{"phase": "finetune", "epoch": e, "valid_error": valid and valid + 0.001 * (3 - e), "complete": True}
              for e in (1, 2, 3)]
    lines.append({"phase": "finetune", "epoch": 4, "valid_error": None, "complete": False})  # stopped inside it
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_sda_presets_chooses_on_validation_and_hides_the_test_error_of_the_rest(tmp_path, capsys, monkeypatch):
    script = load_script("sda_presets", monkeypatch)
    # "wide" has the lower test error but the higher validation error: validation must choose "best".
    make_run(tmp_path, "best-seed1", valid=0.0100, test=0.0120)
    make_run(tmp_path, "best-seed2", valid=0.0104, test=0.0118)
    make_run(tmp_path, "wide-seed1", valid=0.0110, test=0.0097)
    make_run(tmp_path, "wide-seed2", valid=0.0108, test=0.0093)
    make_run(tmp_path, "default-seed1", valid=0.0115, test=0.0130)
    script.report(tmp_path)
    text = capsys.readouterr().out
    assert "by mean validation error: best 1.02, wide 1.09; chosen: best" in text
    assert "best: validation 1.02 +- 0.03, test 1.19 +- 0.01" in text
    assert "wide: validation 1.09 +- 0.01; minutes per run: 10, 10" in text  # no test error for a candidate not chosen
    assert "0.97" not in text and "0.93" not in text and "0.95" not in text
    assert "default: validation 1.15, test 1.30" in text
    assert (tmp_path / "sda_presets.png").stat().st_size > 1000


def test_sda_presets_shows_a_refits_test_error_and_never_counts_it_as_a_candidate(tmp_path, capsys, monkeypatch):
    script = load_script("sda_presets", monkeypatch)
    make_run(tmp_path, "chosen-seed1", valid=0.0100, test=0.0110)
    make_run(tmp_path, "other-seed1", valid=0.0105, test=0.0097)
    make_run(tmp_path, "best-seed1", valid=None, test=0.0101)
    make_run(tmp_path, "best-seed2", valid=None, test=0.0105)
    script.report(tmp_path)
    text = capsys.readouterr().out
    assert "by mean validation error: chosen 1.00, other 1.05; chosen: chosen" in text
    assert "best: refit on training + validation rows, test 1.03 +- 0.03; minutes per run: 10, 10" in text
    assert re.search(r"best-seed1 +- +3 +1\.01", text)
    assert "0.97" not in text  # the candidate not chosen still shows no test error
    assert (tmp_path / "sda_presets.png").exists()
    only_refits = tmp_path / "only-refits"
    make_run(only_refits, "best-seed1", valid=None, test=0.0101)
    script.report(only_refits)
    assert "no validation curves to draw" in capsys.readouterr().out
    assert not (only_refits / "sda_presets.png").exists()
    # A candidate given on the command line keeps its validation rows, whatever the best preset does.
    monkeypatch.setattr("sys.argv", ["sda_presets.py", "--recipes", "wide", "--seeds", "1", "--recipe",
                                     'wide={"model": {"dropout": 0.4}}', "--out", str(tmp_path / "none")])
    made = []
    monkeypatch.setattr(script, "run_sda", lambda config, folder: made.append((config, folder)))
    script.main()
    [(config, folder)] = made
    assert config.refit is False and config.model.dropout == 0.4 and config.seed == script.SDA_PRESETS["best"].seed
    assert config.finetuning == script.SDA_PRESETS["best"].finetuning and folder.name == f"wide-seed{config.seed}"


def test_the_few_label_recipes_are_the_command_lines_the_readme_gives(monkeypatch, tmp_path):
    """few_labels.py's SdA with pseudo-labels is what the README tells a user to type, and it starts
    from the sda run's pre-trained stack of the same draw only when that run finished."""
    from dae.cli import SDA_OPTIONS, build_parser, config_from_args
    from dae.config import SDA_PRESETS, merge

    script = load_script("few_labels", monkeypatch)
    readme = re.sub(r" +", " ", (ROOT / "README.md").read_text().replace("\\\n", " "))  # continued lines joined
    command = ("sda --labels 1000 --pseudo-labels 3 --dropout 0.5 --finetune-corruption 0.2 "
               "--finetune-epochs 40 --patience 40")
    assert f"dae {command} #" in readme
    typed = config_from_args(build_parser().parse_args(command.split()), SDA_OPTIONS, SDA_PRESETS["default"])
    assert script.config_for("sda-pl", 1000, 0, tmp_path) == merge(typed, {"label_seed": 0})
    assert script.config_for("mlp-pl", 1000, 0, tmp_path) == merge(typed, {"pretrain": False})
    # A finished sda run of the draw lends its stack; an unfinished one does not.
    (tmp_path / "sda-N1000-draw0" / "pretrained").mkdir(parents=True)
    assert script.config_for("sda-pl", 1000, 0, tmp_path).pretrained is None
    (tmp_path / "sda-N1000-draw0" / "summary.json").write_text("{}")
    assert script.config_for("sda-pl", 1000, 0, tmp_path).pretrained == str(tmp_path / "sda-N1000-draw0" / "pretrained")
    assert script.config_for("sda-pl", 1000, 1, tmp_path).pretrained is None


def test_few_labels_reuses_a_finished_run_of_its_own_recipe_only(monkeypatch, tmp_path):
    """A finished run folder stands in the table only if it ran this recipe: one of an earlier
    default (the ladder's 50 epochs before its 150) stops the script, naming the setting."""
    import pytest
    from dae.config import merge, to_dict

    script = load_script("few_labels", monkeypatch)
    folder = tmp_path / "ladder-N1000-draw0"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"test_error": 0.0123, "total_seconds": 60.0}))
    config = script.config_for("ladder", 1000, 0)
    (folder / "run_config.json").write_text(json.dumps(to_dict(config)))
    assert script.run_one("ladder", 1000, 0, tmp_path, existing_only=True)["test_error"] == 0.0123
    earlier = merge(config, {"training": {"epochs": config.training.epochs // 3}})
    (folder / "run_config.json").write_text(json.dumps(to_dict(earlier)))
    with pytest.raises(SystemExit, match=r"another recipe \(training\.epochs = 50, this recipe's: 150\)"):
        script.run_one("ladder", 1000, 0, tmp_path, existing_only=True)


def test_few_labels_writes_the_wall_time_into_a_new_runs_summary(monkeypatch, tmp_path):
    """A run it starts (here a stand-in for run_ladder) gets its benchmark_wall_seconds; a ladder's
    config has no pre-trained stack to add the minutes of (this once crashed after a 2-hour run)."""
    script = load_script("few_labels", monkeypatch)

    def fake_run(config, folder, say=None):
        folder.mkdir(parents=True)
        return {"test_error": 0.02, "train_seconds": 1.0}

    monkeypatch.setattr(script, "run_ladder", fake_run)
    summary = script.run_one("ladder", 100, 0, tmp_path)
    assert summary["test_error"] == 0.02 and summary["benchmark_wall_seconds"] >= 0.0
    assert json.loads((tmp_path / "ladder-N100-draw0" / "summary.json").read_text()) == summary


def test_few_labels_ladder_epochs_and_constant_targets_change_the_ladders_recipe_only(monkeypatch):
    """--ladder-epochs E and --constant-targets: the ladder's epochs and its targets as constants;
    the SdA's recipes stay as they are."""
    from dae.config import merge

    script = load_script("few_labels", monkeypatch)
    base = script.config_for("ladder", 100, 2)
    assert base.model.target_gradient and base.training.epochs == 150
    short = script.config_for("ladder", 100, 2, ladder_epochs=50, constant_targets=True)
    assert short == merge(base, {"training": {"epochs": 50}, "model": {"target_gradient": False}})
    assert script.config_for("sda", 100, 2, ladder_epochs=50, constant_targets=True) == script.config_for("sda", 100, 2)


def test_one_class_weighs_the_code_distance_as_the_detector_does(monkeypatch):
    """The benchmark fits one detector and scores each weight w from its two parts: each must be the
    score of the detector fitted with code_weight=w, the one `dae score` and the default would use."""
    import numpy as np
    from dae.sklearn import AutoencoderOutlierDetector, DAETransformer

    script = load_script("one_class", monkeypatch)
    rng = np.random.default_rng(0)
    X, rows = rng.random((120, 10)), rng.random((15, 10))
    def detector(w):
        return AutoencoderOutlierDetector(DAETransformer(n_hidden=4, n_epochs=3, random_state=0), code_weight=w).fit(X)
    fitted = detector(1.0)
    parts = script._Parts(fitted)
    for w in script.CODE_WEIGHTS:
        np.testing.assert_allclose(script._weighed(fitted, *parts(rows), w), -detector(w).score_samples(rows),
                                   rtol=1e-10)
    np.testing.assert_array_equal(parts(rows)[0], fitted.reconstruction_error(rows))


def test_bench_epochs_written_floor_writes_w_and_is_reported_beside_the_floor(capsys, monkeypatch):
    script = load_script("bench_epoch", monkeypatch)
    x, W = torch.rand(40, 12), torch.zeros(12, 5)
    script.gemm_floor(x, W, B=20)
    assert torch.equal(W, torch.zeros(12, 5))  # the floor only reads W
    script.gemm_floor(x, W, B=20, written=True)
    assert (W < 0).all()  # its products (of positive numbers, alpha < 0) add into W, as an SGD step does
    times = iter([1.0, 1.2, 1.5, 0.9, 1.1, 1.6])  # per round: floor, written floor, epoch
    script.against_floor(lambda: next(times), lambda r: next(times), 2, "dae.train", written=lambda: next(times))
    text = capsys.readouterr().out
    assert "round 1: floor 1.000 s, written 1.200 s, epoch 1.500 s, ratio 1.500" in text
    assert "ratio epoch / floor: 1.667 (best times)" in text
    assert "written floor (best of 2): 1.100 s per epoch, 1.222 x the floor; ratio epoch / written floor: 1.364" in text
