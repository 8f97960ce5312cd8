"""Specification of data-parallel training (torchrun, gloo) and of --device.

Two processes with batch B must train as one process with batch 2B: exactly (up to float
rounding) when nothing is random, the sparsity penalty included (its mean activation is that of
the global minibatch), and to within 1% of the final cost with the noise, which each process
draws from its own seed.  Only rank 0 prints and writes; a run resumes bit for bit with as many
processes; a streamed file gives every rank an equal share of its rows.  How the ranks share the
rows is specified in tests/test_batches.py.

A torchrun launch costs more than a small run, so the 2-process runs share one launch
(tests/torchrun_runs.py) and their 1-process twins run in this process, once per module.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dae import load_mnist
from dae.batches import StreamBatches
from dae.cli import main
import dae.distributed
from dae.distributed import RANK_SEED_STRIDE, DeviceError, World, resolve_device
from dae.saving import load_checkpoint, load_model

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}

DA = ["train", "--data", "{digits}", "--hidden", "32", "--epochs", "2"]
SDA = ["sda", "--data", "{blobs}", "--hidden", "16,8", "--corruption", "0,0", "--pretrain-epochs", "2",
       "--pretrain-lr", "0.1", "--finetune-epochs", "6", "--no-shuffle", "--finetune-corruption", "0",
       "--dropout", "0", "--momentum", "0.5"]  # nothing random after the initial weights
DA_BATCH = {2: ["--batch-size", "10"], 1: ["--batch-size", "20"]}
SDA_BATCH = {2: ["--pretrain-batch-size", "5", "--batch-size", "10"], 1: ["--pretrain-batch-size", "10",
                                                                         "--batch-size", "20"]}
RUNS = {  # name: (dae's arguments, the batch options for 2 and for 1 process)
    "exact": ([*DA, "--corruption", "0"], DA_BATCH),
    "sparse": ([*DA, "--corruption", "0", "--sparsity-weight", "0.1"], DA_BATCH),
    "noisy": (["train", "--data", "{digits}", "--hidden", "16", "--epochs", "3"], DA_BATCH),  # masking 0.3
    "stream": ([*DA, "--stream"], DA_BATCH),
    "sda": (SDA, SDA_BATCH),
    "sda-pl": (["sda", "--data", "{blobs}", "--labels", "30", "--pseudo-labels", "3", "--hidden", "16,8",
                "--pretrain-epochs", "2", "--pretrain-lr", "0.1", "--finetune-epochs", "20", "--patience", "20"],
               SDA_BATCH),
    "ladder": (["ladder", "--data", "{blobs}", "--labels", "30", "--hidden", "16,8", "--epochs", "6",
                "--denoising-weights", "10,1,0.1,0.1"],  # 20 features, not 784 pixels: a lighter input cost
               {2: ["--batch-size", "10"], 1: ["--batch-size", "20"]}),
}
STREAM_CHUNK_ROWS = 480  # as tests/torchrun_runs.py cuts streams: 4,000 rows make 9 chunks


def arguments(name: str, processes: int, data: Path, out: Path) -> list[str]:
    argv, batch = RUNS[name]
    names = {"digits": data / "digits.npy", "blobs": data / "blobs.npz"}
    return [a.format(**names) for a in argv] + batch[processes] + ["--device", "cpu", "--out", str(out)]


def summary(path) -> dict:
    return json.loads((path / "summary.json").read_text())


def metrics(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def row_hash(row: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(row, dtype=np.float32).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """digits.npy: 4,000 distinct MNIST training digits; blobs.npz: 600 rows of 3 labelled blobs."""
    folder = tmp_path_factory.mktemp("data")
    x = load_mnist().train.x[:4100].numpy()
    _, first = np.unique(x, axis=0, return_index=True)
    np.save(folder / "digits.npy", x[np.sort(first)][:4000])
    rng = np.random.default_rng(0)
    centres, y = rng.random((3, 20)), rng.integers(0, 3, 600)
    x = np.clip(centres[y] + 0.25 * rng.standard_normal((600, 20)), 0, 1).astype(np.float32)
    np.savez(folder / "blobs.npz", x_train=x[:480], y_train=y[:480], x_test=x[480:], y_test=y[480:])
    return folder


class Launch:
    def __init__(self, folder: Path, process: subprocess.CompletedProcess, records: Path) -> None:
        self.folder, self.process = folder, process
        self.ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def two(data, tmp_path_factory) -> Launch:
    """Every run of RUNS on 2 processes, and "part": "noisy" stopped after epoch 2, in one launch."""
    folder, records = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("records")
    runs = [{"argv": arguments(name, 2, data, folder / name)} for name in RUNS]
    runs.append({"argv": arguments("noisy", 2, data, folder / "part"), "interrupt_after_epoch": 2})
    process = subprocess.run([*TORCHRUN, str(HERE / "torchrun_runs.py"), json.dumps(runs), str(records)],
                             cwd=folder, env=ENV, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    return Launch(folder, process, records)


@pytest.fixture(scope="module")
def one(data, tmp_path_factory) -> Path:
    """Every run of RUNS on 1 process with twice the batch (a stream cut as in the launch)."""
    folder = tmp_path_factory.mktemp("one")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(StreamBatches.__init__.__kwdefaults__, "chunk_rows", STREAM_CHUNK_ROWS)
        for name in RUNS:
            assert main([*arguments(name, 1, data, folder / name), "--quiet"]) == 0
    return folder


def test_every_run_of_the_launch_ended_as_it_should(two):
    assert [rank["codes"] for rank in two.ranks] == [[0] * len(RUNS) + [130]] * 2


@pytest.mark.parametrize("name", ["exact", "sparse"])
def test_without_noise_two_processes_train_as_one_with_twice_the_batch(two, one, name):
    a, b = summary(one / name), summary(two.folder / name)
    assert a["world_size"] == 1 and b["world_size"] == 2 and a["global_batch_size"] == b["global_batch_size"] == 20
    assert a["n_train"] == b["n_train"] == 4000
    assert b["final_cost"] == pytest.approx(a["final_cost"], rel=1e-5)
    assert [m["cost"] for m in metrics(two.folder / name)] == pytest.approx([m["cost"] for m in metrics(one / name)],
                                                                           rel=1e-5)
    for p, q in zip(load_model(one / name).parameters(), load_model(two.folder / name).parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5)


def test_with_noise_drawn_per_process_two_processes_end_within_1_percent(two, one):
    a, b = summary(one / "noisy"), summary(two.folder / "noisy")
    assert a["corruption_level"] == b["corruption_level"] == 0.3
    assert b["final_cost"] == pytest.approx(a["final_cost"], rel=0.01)


def test_a_two_process_sda_matches_one_process_with_twice_the_batch(two, one):
    a, b = summary(one / "sda"), summary(two.folder / "sda")
    assert b["world_size"] == 2 and b["global_batch_size"] == a["global_batch_size"] == 20
    assert b["best_epoch"] == a["best_epoch"]
    assert b["best_valid_error"] == a["best_valid_error"] and b["test_error"] == a["test_error"]
    m, n = metrics(one / "sda"), metrics(two.folder / "sda")
    assert len(m) == len(n) == 2 * 2 + 6
    for x, y in zip(m, n):
        key = "cost" if x["phase"] == "pretrain" else "train_loss"
        assert y[key] == pytest.approx(x[key], rel=1e-4)


def test_a_two_process_sda_with_pseudo_labels_shares_the_images_and_learns_as_one_process_does(two, one):
    """Each process draws its own labelled minibatches, so the runs differ; both learn from 30 labels."""
    a, b = summary(one / "sda-pl"), summary(two.folder / "sda-pl")
    assert (a["world_size"], b["world_size"]) == (1, 2) and a["global_batch_size"] == b["global_batch_size"] == 20
    assert a["labels"] == b["labels"] == 30 and a["n_train"] == b["n_train"] == 24
    assert a["test_error"] <= 0.1 and b["test_error"] <= 0.1
    assert [m["epoch"] for m in metrics(two.folder / "sda-pl") if m["phase"] == "finetune"] == list(range(1, 21))


def test_a_two_process_ladder_shares_the_unlabelled_rows_and_learns_as_one_process_does(two, one):
    """Batch statistics are each process's own, so the runs differ; both learn the blobs from 30 labels."""
    a, b = summary(one / "ladder"), summary(two.folder / "ladder")
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert a["global_batch_size"] == b["global_batch_size"] == 20 and a["labels"] == b["labels"] == 30
    assert a["test_error"] <= 0.1 and b["test_error"] <= 0.1
    assert [m["epoch"] for m in metrics(two.folder / "ladder")] == [1, 2, 3, 4, 5, 6]
    assert metrics(two.folder / "ladder")[-1]["cost"] < metrics(two.folder / "ladder")[0]["cost"]


def test_only_rank_0_writes_and_prints(two, one):
    assert {p.name for p in two.folder.iterdir()} == {*RUNS, "part"}
    for name in RUNS:
        ours = sorted(str(p.relative_to(two.folder / name)) for p in (two.folder / name).rglob("*"))
        assert ours == sorted(str(p.relative_to(one / name)) for p in (one / name).rglob("*"))
    out = two.process.stdout
    assert out.count("Training epoch 1, cost") == 5  # exact, sparse, noisy, stream, part: once each
    assert out.count("Pre-training layer 1, epoch 1,") == 2  # sda, sda-pl: once each
    assert out.count("Optimization complete") == 2


def test_a_torchrun_run_resumes_bit_for_bit_with_as_many_processes(two, capsys):
    part, whole = two.folder / "part", two.folder / "noisy"
    assert summary(part)["interrupted"] is True
    checkpoint = load_checkpoint(part / "checkpoint.safetensors")
    assert checkpoint.state["world_size"] == 2 and checkpoint.state["train_state"]["epoch"] == 2
    assert {"rank_generator.0", "rank_generator.1"} <= set(checkpoint.tensors)

    assert main(["train", "--resume", str(part)]) == 2  # with 1 process
    err = capsys.readouterr().err
    assert err.startswith("dae: error: ") and err.count("\n") == 1 and "2 process(es)" in err
    resumed = subprocess.run([*TORCHRUN, "-m", "dae", "train", "--resume", "part"], cwd=two.folder, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("Training epoch 3, cost") == 1 and "Training epoch 2," not in resumed.stdout
    assert all(torch.equal(p, q) for p, q in zip(load_model(whole).parameters(), load_model(part).parameters()))
    assert summary(part)["final_cost"] == summary(whole)["final_cost"]
    assert [m["cost"] for m in metrics(part)] == [m["cost"] for m in metrics(whole)]


def test_a_streamed_file_gives_every_rank_an_equal_share_and_n_train_counts_the_rows_used(two, one, data):
    b = summary(two.folder / "stream")
    assert b["streamed"] and b["shuffle"] and b["world_size"] == 2
    every_row = {row_hash(row) for row in np.load(data / "digits.npy")}
    epochs = [rank["streamed_epochs"] for rank in two.ranks]
    assert len(epochs[0]) == len(epochs[1]) == 2
    for first, second in zip(*epochs):
        assert len(first) == len(second) == b["n_train"] // 2  # an equal share
        assert not set(first) & set(second)  # disjoint
        assert set(first) | set(second) <= every_row and len(set(first) | set(second)) == b["n_train"]
    # 4,000 rows in 9 chunks of 480 (the last of 160), all divisible by 2 x 10: none left out.
    assert b["n_train"] == 4000
    assert b["final_cost"] == pytest.approx(summary(one / "stream")["final_cost"], rel=0.01)


def test_rank_seeds_are_distinct_and_rank_0_keeps_the_run_seed():
    seeds = [World(rank, 4).seed(123) for rank in range(4)]
    assert seeds[0] == 123 and len(set(seeds)) == 4 and seeds[1] == 123 + RANK_SEED_STRIDE


def test_devices_resolve_and_a_missing_gpu_is_a_clean_error(tmp_path, capsys):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    np.save(tmp_path / "x.npy", np.zeros((40, 4), np.float32))
    argv = ["train", "--data", str(tmp_path / "x.npy"), "--hidden", "2", "--epochs", "1", "--out", str(tmp_path / "o")]
    if not torch.cuda.is_available():
        assert main([*argv, "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dae: error: device cuda: no CUDA GPU") and err.count("\n") == 1
        assert not (tmp_path / "o").exists()
    assert main([*argv, "--device", "cuda:x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dae: error: ") and err.count("\n") == 1 and "cuda:x" in err
    assert main([*argv, "--device", "cpu", "--quiet"]) == 0
    assert summary(tmp_path / "o")["device"] == "cpu"


def test_a_rank_leaves_the_group_after_a_barrier_when_its_run_finished_and_at_once_after_an_error(
        tmp_path, monkeypatch, capsys):
    """No rank tears down its connections while another may still be reading from them; but after
    an error the other ranks may never reach a barrier, so none is waited for."""
    calls: list[str] = []
    monkeypatch.setattr(dae.distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dae.distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dae.distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    np.save(tmp_path / "x.npy", np.zeros((40, 4), np.float32))
    argv = ["train", "--data", str(tmp_path / "x.npy"), "--hidden", "2", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "ok")]) == 0
    assert calls == ["barrier", "destroy"]
    calls.clear()
    assert main([*argv, "--lr", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert calls == ["destroy"] and "dae: error: " in capsys.readouterr().err


def test_encode_refuses_to_run_under_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["encode", "--model", "m", "--data", "mnist", "--out", str(tmp_path / "f.npy")]) == 2
    assert "without torchrun" in capsys.readouterr().err


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


@needs_gpu
def test_training_on_the_gpu_matches_the_cpu(tmp_path, digits):
    common = ["train", "--data", str(digits), "--hidden", "64", "--epochs", "2", "--corruption", "0", "--quiet"]
    assert main([*common, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    assert main([*common, "--device", "cuda", "--out", str(tmp_path / "gpu")]) == 0
    cpu, gpu = summary(tmp_path / "cpu"), summary(tmp_path / "gpu")
    assert gpu["device"].startswith("cuda")
    assert gpu["final_cost"] == pytest.approx(cpu["final_cost"], rel=1e-4)


@needs_gpu
def test_sda_encode_and_score_run_on_the_gpu(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((300, 16)).astype(np.float32), rng.integers(0, 2, 300)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    assert main(["sda", "--data", str(tmp_path / "d.npz"), "--hidden", "8", "--pretrain-epochs", "1",
                 "--finetune-epochs", "2", "--device", "cuda", "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert summary(tmp_path / "s")["device"].startswith("cuda")
    np.save(tmp_path / "x.npy", x)
    assert main(["encode", "--model", str(tmp_path / "s"), "--data", str(tmp_path / "x.npy"), "--device", "cuda",
                 "--out", str(tmp_path / "f.npy")]) == 0
    assert np.load(tmp_path / "f.npy").shape == (300, 8)
