"""The README's promises: its Python example runs, and CI runs its test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_python_example_runs(tmp_path, monkeypatch):
    example = re.findall(r"```python\n(.*?)```", README, re.S)[0]  # the dA's; the SdA's takes 14 minutes
    monkeypatch.chdir(tmp_path)
    assert "epochs=15" in example
    exec(compile(example.replace("epochs=15", "epochs=1"), "README.md", "exec"), {})
    assert (tmp_path / "my_da" / "model.safetensors").is_file()


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_the_sda_example_runs_on_a_small_setting():
    example = re.findall(r"```python\n(.*?)```", README, re.S)[1]
    small = example.replace("[1000, 1000, 1000]", "[20, 20, 20]").replace("epochs=10", "epochs=1")
    small = small.replace("max_epochs=80", "max_epochs=1")
    assert small.count("20, 20, 20") == 1 and "max_epochs=1," in small
    namespace = {}
    exec(compile(small, "README.md", "exec"), namespace)
    assert namespace["codes"].shape == (10000, 20) and namespace["p"].shape == (10000, 10)
    assert 0 < namespace["result"].test_error < 0.9
