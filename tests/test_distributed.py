"""Specification of data-parallel training (torchrun, gloo) and of --device.

Two processes with batch B must train as one process with batch 2B: exactly (up to float
rounding) when nothing is random, and to within 1% of the final cost with the noise, which
each process draws from its own seed.  Only rank 0 prints and writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dae import load_mnist
from dae.cli import main
from dae.distributed import RANK_SEED_STRIDE, DeviceError, World, resolve_device
from dae.saving import load_checkpoint, load_model

HERE = Path(__file__).parent

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def launch(cwd, nproc: int, *argv: str) -> subprocess.CompletedProcess:
    """Run `dae ARGV` under torchrun with `nproc` CPU processes (gloo)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run([*TORCHRUN, "--nproc-per-node", str(nproc), "-m", "dae", *argv, "--device", "cpu"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def summary(path) -> dict:
    return json.loads((path / "summary.json").read_text())


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """4,000 MNIST training digits as a .npy file."""
    path = tmp_path_factory.mktemp("data") / "digits.npy"
    np.save(path, load_mnist().train.x[:4000].numpy())
    return path


@pytest.mark.parametrize("corruption, tolerance", [(0.0, 1e-5), (0.3, 0.01)])
def test_two_processes_train_as_one_with_twice_the_batch(tmp_path, digits, corruption, tolerance):
    common = ["train", "--data", str(digits), "--hidden", "64", "--epochs", "2", "--corruption", str(corruption)]
    assert main([*common, "--batch-size", "20", "--out", str(tmp_path / "one"), "--quiet"]) == 0
    run = launch(tmp_path, 2, *common, "--batch-size", "10", "--out", "two")
    assert run.returncode == 0, run.stderr
    one, two = summary(tmp_path / "one"), summary(tmp_path / "two")
    assert two["world_size"] == 2 and two["global_batch_size"] == 20 and one["world_size"] == 1
    assert two["n_train"] == one["n_train"] == 4000
    assert abs(two["final_cost"] - one["final_cost"]) <= tolerance * one["final_cost"], (one["final_cost"],
                                                                                       two["final_cost"])
    # Only rank 0 wrote files (nothing else appeared beside its folder) and printed.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert run.stdout.count("Training epoch 2,") == 1


def test_a_two_process_sda_matches_one_process_with_twice_the_batch(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.random((3, 20))
    y = rng.integers(0, 3, 600)
    x = np.clip(centres[y] + 0.25 * rng.standard_normal((600, 20)), 0, 1).astype(np.float32)
    np.savez(tmp_path / "blobs.npz", x_train=x[:480], y_train=y[:480], x_test=x[480:], y_test=y[480:])
    # Nothing random after the initial weights: no noise, no dropout, minibatches in order.
    common = ["sda", "--data", str(tmp_path / "blobs.npz"), "--hidden", "16,8", "--corruption", "0,0",
              "--pretrain-epochs", "2", "--pretrain-lr", "0.1", "--finetune-epochs", "6", "--no-shuffle",
              "--finetune-corruption", "0", "--dropout", "0", "--momentum", "0.5"]
    assert main([*common, "--pretrain-batch-size", "10", "--batch-size", "20", "--out", str(tmp_path / "one"),
                 "--quiet"]) == 0
    run = launch(tmp_path, 2, *common, "--pretrain-batch-size", "5", "--batch-size", "10", "--out", "two")
    assert run.returncode == 0, run.stderr
    one, two = summary(tmp_path / "one"), summary(tmp_path / "two")
    assert two["world_size"] == 2 and two["global_batch_size"] == 20
    assert two["best_epoch"] == one["best_epoch"]
    assert two["best_valid_error"] == one["best_valid_error"] and two["test_error"] == one["test_error"]
    a = [m for m in map(json.loads, (tmp_path / "one" / "metrics.jsonl").read_text().splitlines())]
    b = [m for m in map(json.loads, (tmp_path / "two" / "metrics.jsonl").read_text().splitlines())]
    assert len(a) == len(b)
    for m, n in zip(a, b):
        key = "cost" if m["phase"] == "pretrain" else "train_loss"
        assert n[key] == pytest.approx(m[key], rel=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs.npz", "one", "two"]


def test_a_torchrun_run_resumes_bit_for_bit_with_as_many_processes(tmp_path, digits):
    common = ["train", "--data", str(digits), "--hidden", "16", "--batch-size", "10", "--epochs", "3",
              "--device", "cpu"]
    assert launch(tmp_path, 2, *common, "--out", "whole").returncode == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    stopped = subprocess.run([*TORCHRUN, "--nproc-per-node", "2", str(HERE / "torchrun_interrupted.py"), *common,
                              "--out", "part"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert stopped.returncode != 0
    assert json.loads((tmp_path / "part" / "summary.json").read_text())["interrupted"] is True
    checkpoint = load_checkpoint(tmp_path / "part" / "checkpoint.safetensors")
    assert checkpoint.state["world_size"] == 2 and checkpoint.state["epoch"] == 2
    assert {"rank_generator.0", "rank_generator.1"} <= set(checkpoint.tensors)

    alone = subprocess.run([sys.executable, "-m", "dae", "train", "--resume", str(tmp_path / "part")],
                           capture_output=True, text=True, env=env)
    assert alone.returncode == 2 and alone.stderr.count("\n") == 1 and "2 process(es)" in alone.stderr
    resumed = subprocess.run([*TORCHRUN, "--nproc-per-node", "2", "-m", "dae", "train", "--resume", "part"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    whole, part = load_model(tmp_path / "whole"), load_model(tmp_path / "part")
    assert all(torch.equal(p, q) for p, q in zip(whole.parameters(), part.parameters()))
    assert summary(tmp_path / "part")["final_cost"] == summary(tmp_path / "whole")["final_cost"]


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
    assert "unknown device" in capsys.readouterr().err
    assert main([*argv, "--device", "cpu", "--quiet"]) == 0
    assert summary(tmp_path / "o")["device"] == "cpu"


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


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("streamed, shuffle", [(False, False), (False, True), (True, False), (True, True)])
def test_each_rank_reads_a_disjoint_share_of_every_epoch(tmp_path, size, streamed, shuffle):
    from dae.stream import NpyStream
    from dae.training import _order_generator, _Rows

    n, B = 1000, 10
    x = torch.arange(n, dtype=torch.float32).repeat(2, 1).t().contiguous()  # row i holds i
    np.save(tmp_path / "x.npy", x.numpy())
    data = NpyStream(tmp_path / "x.npy", loss="squared-error", chunk_bytes=70 * 8, rows_multiple=B) if streamed else x
    shares, steps = [], set()
    for rank in range(size):
        rows = _Rows(data, B, World(rank, size), torch.device("cpu"), torch.float32)
        n_steps, blocks = rows.epoch(_order_generator(4, 1) if shuffle else None, per_chunk=3)
        share = torch.cat(list(blocks))[:, 0].long()
        assert len(share) == n_steps * B
        shares.append(share)
        steps.add(n_steps)
    assert len(steps) == 1  # every rank runs the same number of steps
    seen = torch.cat(shares)
    assert len(set(seen.tolist())) == len(seen)  # disjoint
    assert len(seen) >= n - size * (70 + B)  # at most a chunk per rank left out
    if not streamed and not shuffle:  # global minibatch i is rows i*size*B ... of the data, rank r the r-th B
        assert shares[1][:B].tolist() == list(range(B, 2 * B))


def test_two_processes_stream_disjoint_chunks_and_train_as_one(tmp_path, digits):
    common = ["train", "--data", str(digits), "--stream", "--hidden", "32", "--epochs", "2"]
    assert main([*common, "--batch-size", "20", "--out", str(tmp_path / "one"), "--quiet"]) == 0
    run = launch(tmp_path, 2, *common, "--batch-size", "10", "--out", "two")
    assert run.returncode == 0, run.stderr
    one, two = summary(tmp_path / "one"), summary(tmp_path / "two")
    assert two["streamed"] and two["shuffle"] and two["world_size"] == 2 and two["n_train"] == 4000
    assert two["final_cost"] == pytest.approx(one["final_cost"], rel=0.01)
