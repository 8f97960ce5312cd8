"""The benchmark scripts' own rules, on made-up run folders: benchmarks/sda_presets.py chooses
the best preset by validation error alone and shows no test error of a candidate it did not choose."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as when run: the scripts import each other
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_run(out: Path, name: str, valid: float, test: float, seconds: float = 600.0) -> None:
    folder = out / name
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({
        "best_valid_error": valid, "test_error": test, "best_epoch": 3, "total_seconds": seconds,
        "pretrain_seconds": seconds / 4, "finetune_seconds": 3 * seconds / 4, "threads": 1}))
    lines = [{"phase": "pretrain", "layer": 1, "epoch": 1, "cost": 90.0}]
    lines += [{"phase": "finetune", "epoch": e, "valid_error": valid + 0.001 * (3 - e), "complete": True}
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
