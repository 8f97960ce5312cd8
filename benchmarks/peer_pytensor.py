"""dae against the tutorial's original code, written in PyTensor, on the same data and machine.

PyTensor is the maintained successor of Theano, the library of the deeplearning.net tutorial.
This script writes the tutorial's graphs in PyTensor from its equations (float32, the
tutorial's ``dA.py`` and ``SdA.py``), runs them in the same process as dae, on MNIST's first
50,000 training images, and times the two alternately, so that both see the same machine.

1. The dA (``dA.py``, ``test_dA``): 784-500, tied weights, learning rate 0.1, batch size 20,
   15 epochs, minibatches in order, corruption 0.0 and 0.3::

       W ~ U(-4 sqrt(6 / (n_hidden + n_visible)), +...),  b = b' = 0
       x~ = x * binomial(1, 1 - corruption);  y = s(x~ W + b);  z = s(y W^T + b')
       L = -sum_j (x_j log z_j + (1 - x_j) log(1 - z_j));  cost = mean over the minibatch
       param -= lr * d cost / d param   (pytensor.grad)

   Epoch k of each PyTensor backend (``--modes``), then epoch k of ``dae.train``, then epoch
   k + 1 of each, and so on.  Printed per epoch: the seconds of each, the ratios to dae's and
   the mean cost of each; at the end the costs of the last epoch side by side and the median
   ratios, and the epochs that look disturbed by another process.  All start from the same
   initial weights (drawn as the tutorial does, ``numpy.random.RandomState(123)``, and copied
   into dae's model); the masks come from different generators (PyTensor's RandomStream,
   torch's), so at corruption 0.3 the costs differ only through the random numbers, and at
   corruption 0.0 (no random numbers at all) only through the rounding of float32 arithmetic.

2. The SdA (``SdA.py``, ``test_SdA``) at the tutorial's batch size 1: 784-1000-1000-1000-10,
   pre-training learning rate 0.001 at corruption 0.1, 0.2, 0.3, fine-tuning learning rate
   0.1.  PyTensor: the tutorial's ``pretraining_functions`` (one SGD step of layer k's dA, on
   the codes of the layers below, computed in the graph from the input at every step) and its
   fine-tuning ``train_fn`` (sigmoid layers and softmax, negative log-likelihood, SGD).  dae:
   :class:`dae.steps.DAStep` on ``model.autoencoders[k]`` with the codes of
   ``model.encode(x, layer=k)`` (computed once per layer, as ``dae.pretrain`` does) and
   :class:`dae.steps.FinetuneStep`, on one thread (``dae.train.threads_for(1)``, as dae does
   at batch size 1; ``--sda-threads`` to change it).  ``--sda-steps`` steps of each phase are
   timed on each side in turn (after 20 untimed ones), and
   extrapolated to seconds per epoch of 50,000 steps, and from those to an ESTIMATE of the
   tutorial's whole SdA run: 15 pre-training epochs of each layer and 38 fine-tuning epochs,
   the number ``dae sda --preset tutorial`` ran before patience stopped it in its measured
   run (the validation passes between epochs are not counted).

Run::

    pip install -e '.[peer]'               # pytensor; never needed by the tests
    python benchmarks/peer_pytensor.py     # about 10 minutes on 2 cores
    python benchmarks/peer_pytensor.py --epochs 2 --levels 0.3 --sda-steps 200   # a quick look

PyTensor's backends (``--modes``, default both): CVM, the C backend Theano ran the tutorial
on, and NUMBA, PyTensor 3's own default (``pytensor.function`` without a mode).  The C backend
compiles its graphs with a C compiler (gcc) and, for its speed, must link a BLAS: a pip
install finds none, and without one its matrix products fall back to a loop several times
slower (the script then says so).  ``--blas-ldflags auto`` (the default) keeps a
``blas__ldflags`` set in ``PYTENSOR_FLAGS`` or ``~/.pytensorrc``, else links a system OpenBLAS
where there is one (``apt-get install libopenblas-dev``), else leaves it to PyTensor's own
search.  Both backends run the same graph and draw the same masks, so their costs agree.
The script prints the versions, threads, CPU and BLAS it used.  Nothing in the tests imports
this file or PyTensor.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

import dae
from dae.steps import DAStep, FinetuneStep
from dae.train import CHUNK_ROWS, TrainState, threads_for

N_TRAIN = 50_000
# dA.py, test_dA
DA_HIDDEN, DA_LR, DA_BATCH, DA_SEED = 500, 0.1, 20, 123
# SdA.py, test_SdA
SDA_HIDDEN, SDA_CLASSES, SDA_SEED = (1000, 1000, 1000), 10, 89677
SDA_CORRUPTION, PRETRAIN_LR, FINETUNE_LR, PRETRAIN_EPOCHS = (0.1, 0.2, 0.3), 0.001, 0.1, 15
# The fine-tuning epochs of the measured `dae sda --preset tutorial` run (README): patience
# stopped it after epoch 38.
FINETUNE_EPOCHS = 38


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="dA epochs per corruption level (tutorial: 15)")
    parser.add_argument("--levels", default="0.0,0.3", help="dA corruption levels, comma-separated (tutorial: 0.0,0.3)")
    parser.add_argument("--sda-steps", type=int, default=2000,
                        help="batch-1 steps timed per SdA phase on each side (0: skip the SdA)")
    parser.add_argument("--modes", default="CVM,NUMBA",
                        help="PyTensor modes, comma-separated: CVM (the C backend), NUMBA (PyTensor 3's default)")
    parser.add_argument("--sda-threads", type=int, default=None,
                        help="torch threads for dae's batch-1 steps (default: 1, as dae.train does at batch 1)")
    parser.add_argument("--blas-ldflags", default="auto",
                        help="PyTensor's blas__ldflags; 'auto': its own, else -lopenblas where there is one")
    return parser.parse_args()


def setup_pytensor(blas_ldflags: str):
    """Import PyTensor in float32, with a BLAS for its C backend where one can be found."""
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    if blas_ldflags != "auto":
        flags += f",blas__ldflags={blas_ldflags}"
    elif "blas__ldflags" not in flags and not _pytensorrc_sets_blas() and _has_openblas():
        # PyTensor's own search wants libblas + libcblas, or openblas + gfortran + gomp; a plain
        # system OpenBLAS (libopenblas-dev) is enough for its C code.
        flags += ",blas__ldflags=-lopenblas"
    os.environ["PYTENSOR_FLAGS"] = flags.strip(",")
    import pytensor

    pytensor.config.floatX = "float32"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ldflags = pytensor.config.blas__ldflags  # triggers PyTensor's search where nothing was set
    for w in caught:
        if "BLAS" in str(w.message):
            print("WARNING: PyTensor found no BLAS: its C backend's matrix products fall back to a slow loop "
                  "(apt-get install libopenblas-dev, or --mode NUMBA)")
    return pytensor, ldflags


def _pytensorrc_sets_blas() -> bool:
    paths = os.environ.get("PYTENSORRC", os.path.expanduser("~/.pytensorrc")).split(os.pathsep)
    for path in paths:
        try:
            with open(path) as f:
                if "ldflags" in f.read():
                    return True
        except OSError:
            pass
    return False


def _has_openblas() -> bool:
    """True where the linker can find libopenblas.so (what -lopenblas needs)."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
              "/usr/local/lib", os.path.join(sys.prefix, "lib")):
        if os.path.exists(os.path.join(d, "libopenblas.so")):
            return True
    return False


def openblas_threads() -> str:
    name = ctypes.util.find_library("openblas")
    if not name:
        return "n/a"
    try:
        return str(ctypes.CDLL(name).openblas_get_num_threads())
    except (OSError, AttributeError):
        return "?"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- the tutorial's graphs in PyTensor ---------------------------------------------------------


def uniform_weights(rng: np.random.RandomState, n_in: int, n_out: int) -> np.ndarray:
    """The tutorial's initial W of a sigmoid layer or dA: U(+-4 sqrt(6 / (n_in + n_out)))."""
    r = 4.0 * np.sqrt(6.0 / (n_in + n_out))
    return np.asarray(rng.uniform(low=-r, high=r, size=(n_in, n_out)), dtype="float32")


def da_cost_updates(pt, pytensor, srng, x, W, b, b_prime, corruption, lr):
    """dA.get_cost_updates: the mean cross-entropy of the reconstruction of the corrupted x, and SGD."""
    x_tilde = pt.cast(srng.binomial(n=1, p=1 - corruption, size=x.shape), "float32") * x
    y = pt.sigmoid(pt.dot(x_tilde, W) + b)
    z = pt.sigmoid(pt.dot(y, W.T) + b_prime)
    L = -pt.sum(x * pt.log(z) + (1 - x) * pt.log(1 - z), axis=1)
    cost = pt.mean(L)
    params = [W, b, b_prime]
    grads = pytensor.grad(cost, params)
    return cost, [(p, p - lr * g) for p, g in zip(params, grads)]


def pytensor_da(pytensor, pt, RandomStream, data, corruption: float, mode: str):
    """test_dA's train_da(index) for one corruption level, and the initial W it drew."""
    rng = np.random.RandomState(DA_SEED)
    srng = RandomStream(rng.randint(2**30))  # as the tutorial: theano_rng first, then W
    W0 = uniform_weights(rng, 784, DA_HIDDEN)
    W = pytensor.shared(W0.copy(), name="W")
    b = pytensor.shared(np.zeros(DA_HIDDEN, "float32"), name="b")
    b_prime = pytensor.shared(np.zeros(784, "float32"), name="b_prime")
    index, x = pt.lscalar("index"), pt.matrix("x")
    cost, updates = da_cost_updates(pt, pytensor, srng, x, W, b, b_prime, corruption, DA_LR)
    fn = pytensor.function([index], cost, updates=updates, mode=mode,
                           givens={x: data[index * DA_BATCH:(index + 1) * DA_BATCH]})
    return fn, W0


class PyTensorSdA:
    """SdA.py's network, its pretraining_functions and its fine-tuning train_fn, at batch size 1."""

    def __init__(self, pytensor, pt, RandomStream, data_x, data_y, mode: str, batch_size: int = 1):
        rng = np.random.RandomState(SDA_SEED)
        srng = RandomStream(rng.randint(2**30))  # SdA.__init__ draws theano_rng's seed first
        sizes = [784, *SDA_HIDDEN]
        self.W0 = [uniform_weights(rng, a, b) for a, b in zip(sizes, sizes[1:])]
        self.W = [pytensor.shared(w.copy(), name=f"W{k}") for k, w in enumerate(self.W0)]
        self.b = [pytensor.shared(np.zeros(n, "float32"), name=f"b{k}") for k, n in enumerate(SDA_HIDDEN)]
        self.b_prime = [pytensor.shared(np.zeros(n, "float32"), name=f"bvis{k}") for k, n in enumerate(sizes[:-1])]
        self.log_W = pytensor.shared(np.zeros((SDA_HIDDEN[-1], SDA_CLASSES), "float32"), name="log_W")
        self.log_b = pytensor.shared(np.zeros(SDA_CLASSES, "float32"), name="log_b")
        index, x, y = pt.lscalar("index"), pt.matrix("x"), pt.ivector("y")
        B = batch_size
        givens_x = {x: data_x[index * B:(index + 1) * B]}
        layers = [x]
        for W, b in zip(self.W, self.b):
            layers.append(pt.sigmoid(pt.dot(layers[-1], W) + b))
        corruption, lr = pt.scalar("corruption"), pt.scalar("lr")
        self.pretrain_fns = []
        for k in range(len(SDA_HIDDEN)):
            cost, updates = da_cost_updates(pt, pytensor, srng, layers[k], self.W[k], self.b[k], self.b_prime[k],
                                            corruption, lr)
            self.pretrain_fns.append(pytensor.function(
                [index, corruption, lr], cost,
                updates=updates, givens=givens_x, mode=mode))
        p_y_given_x = pt.special.softmax(pt.dot(layers[-1], self.log_W) + self.log_b, axis=-1)
        nll = -pt.mean(pt.log(p_y_given_x)[pt.arange(y.shape[0]), y])
        params = [p for pair in zip(self.W, self.b) for p in pair] + [self.log_W, self.log_b]
        grads = pytensor.grad(nll, params)
        self.train_fn = pytensor.function(
            [index], nll, updates=[(p, p - FINETUNE_LR * g) for p, g in zip(params, grads)], mode=mode,
            givens={**givens_x, y: data_y[index * B:(index + 1) * B]})


# --- the runs -----------------------------------------------------------------------------------

DISTURBED = 1.3  # an epoch this much slower than its side's median was probably shared with another process


def run_da(pytensor, pt, RandomStream, x: torch.Tensor, data, levels, epochs: int, modes) -> list:
    """Per corruption level: (level, {side: [cost per epoch]}, {side: [seconds per epoch]})."""
    n_batches = len(x) // DA_BATCH
    sides = [f"PyTensor {m}" for m in modes] + ["dae"]
    width = max(len(side) for side in sides) + 4
    summary = []
    for level in levels:
        fns, compile_s = {}, 0.0
        for mode in modes:
            compile_start = time.perf_counter()
            fns[mode], W0 = pytensor_da(pytensor, pt, RandomStream, data, level, mode)
            compile_s += time.perf_counter() - compile_start
        g = torch.Generator().manual_seed(DA_SEED)
        model = dae.DenoisingAutoencoder(784, DA_HIDDEN, corruption_level=level, generator=g)
        with torch.no_grad():
            model.W.copy_(torch.from_numpy(W0))  # the same initial weights on every side
        state = TrainState()
        print(f"\ndA 784-{DA_HIDDEN}, corruption {level:.1f}, batch {DA_BATCH}, lr {DA_LR}: seconds per epoch, "
              f"ratio to dae, mean cost (PyTensor compile {compile_s:.1f} s, not counted)")
        print("epoch" + "".join(f"{side + ' s':>{width}}" for side in sides)
              + "".join(f"{m + '/dae':>{len(m) + 6}}" for m in modes)
              + "".join(f"{side + ' cost':>{width + 5}}" for side in sides))
        costs = {side: [] for side in sides}
        seconds = {side: [] for side in sides}
        for epoch in range(1, epochs + 1):
            for mode in modes:
                fn = fns[mode]
                start = time.perf_counter()
                c = [fn(i) for i in range(n_batches)]
                seconds[f"PyTensor {mode}"].append(time.perf_counter() - start)
                costs[f"PyTensor {mode}"].append(float(np.mean(np.asarray(c, dtype=np.float64))))
            state.stopped_by = None  # continue the same run for one more epoch
            start = time.perf_counter()
            dae.train(model, x, epochs=epoch, learning_rate=DA_LR, batch_size=DA_BATCH, generator=g, state=state)
            seconds["dae"].append(time.perf_counter() - start)
            costs["dae"].append(state.history[-1].cost)
            print(f"{epoch:>5}" + "".join(f"{seconds[side][-1]:>{width}.2f}" for side in sides)
                  + "".join(f"{seconds[f'PyTensor {m}'][-1] / seconds['dae'][-1]:>{len(m) + 6}.2f}" for m in modes)
                  + "".join(f"{costs[side][-1]:>{width + 5}.4f}" for side in sides), flush=True)
        summary.append((level, costs, seconds))
    return summary


def run_sda(pytensor, pt, RandomStream, x: torch.Tensor, y: torch.Tensor, data, labels, steps: int, modes,
            dae_threads: int | None) -> dict:
    """{side: [seconds per epoch of pre-training layers 1-3 and of fine-tuning]}, extrapolated from ``steps``."""
    nets, compile_s = {}, 0.0
    for mode in modes:
        compile_start = time.perf_counter()
        nets[mode] = PyTensorSdA(pytensor, pt, RandomStream, data, labels, mode)
        compile_s += time.perf_counter() - compile_start
    g = torch.Generator().manual_seed(SDA_SEED)
    model = dae.StackedDenoisingAutoencoder(784, SDA_HIDDEN, SDA_CLASSES, SDA_CORRUPTION, generator=g)
    with torch.no_grad():
        for layer, w in zip(model.hidden, nets[modes[0]].W0):
            layer.W.copy_(torch.from_numpy(w))  # the same initial weights on every side
    block = CHUNK_ROWS  # rows per call of a dae step at batch size 1, as dae.train takes them
    warm = 20  # untimed steps first, on each side
    sides = [f"PyTensor {m}" for m in modes] + ["dae"]
    width = max(len(side) for side in sides) + 4
    threads = "1 thread, as dae.train at batch size 1" if dae_threads is None else f"{dae_threads} threads"
    print(f"\nSdA 784-{'-'.join(map(str, SDA_HIDDEN))}-{SDA_CLASSES} at batch size 1 (dae on {threads}): "
          f"{steps} steps of each phase timed on each side, extrapolated to seconds per epoch of {N_TRAIN:,} steps; "
          f"mean cost of the timed steps (PyTensor compile {compile_s:.1f} s, not counted)")
    print(f"{'phase':<24}" + "".join(f"{side + ' s':>{width}}" for side in sides)
          + "".join(f"{m + '/dae':>{len(m) + 6}}" for m in modes)
          + "".join(f"{side + ' cost':>{width + 5}}" for side in sides))
    per_epoch = {side: [] for side in sides}
    xs, ys = x[: warm + steps], y[: warm + steps]
    timed = range(warm, warm + steps)

    def report(name: str, seconds: dict, costs: dict) -> None:
        for side in sides:
            per_epoch[side].append(seconds[side] / steps * N_TRAIN)
        print(f"{name:<24}" + "".join(f"{per_epoch[side][-1]:>{width}.1f}" for side in sides)
              + "".join(f"{seconds[f'PyTensor {m}'] / seconds['dae']:>{len(m) + 6}.2f}" for m in modes)
              + "".join(f"{costs[side]:>{width + 5}.4f}" for side in sides), flush=True)

    threads_context = threads_for(1) if dae_threads is None else _torch_threads(dae_threads)
    with torch.no_grad(), threads_context:
        for k, level in enumerate(SDA_CORRUPTION):
            seconds, costs = {}, {}
            for mode in modes:
                fn = nets[mode].pretrain_fns[k]
                for i in range(warm):
                    fn(i, level, PRETRAIN_LR)
                start = time.perf_counter()
                c = [fn(i, level, PRETRAIN_LR) for i in timed]
                seconds[f"PyTensor {mode}"] = time.perf_counter() - start
                costs[f"PyTensor {mode}"] = float(np.mean(np.asarray(c, dtype=np.float64)))
            step = DAStep(model.autoencoders[k], 1, block)
            step.set_learning_rate(PRETRAIN_LR)
            codes = model.encode(xs, layer=k)  # dae.pretrain computes a layer's codes once, for all its epochs
            step((codes[:warm],), g)
            start = time.perf_counter()
            total = sum(step((codes[i:min(i + block, warm + steps)],), g) for i in range(warm, warm + steps, block))
            seconds["dae"], costs["dae"] = time.perf_counter() - start, total / steps
            report(f"pre-train layer {k + 1} ({level:.1f})", seconds, costs)
        seconds, costs = {}, {}
        for mode in modes:
            fn = nets[mode].train_fn
            for i in range(warm):
                fn(i)
            start = time.perf_counter()
            c = [fn(i) for i in timed]
            seconds[f"PyTensor {mode}"] = time.perf_counter() - start
            costs[f"PyTensor {mode}"] = float(np.mean(np.asarray(c, dtype=np.float64)))
        step = FinetuneStep(model, 0.0, 1, block)
        step.set_learning_rate(FINETUNE_LR)
        step((xs[:warm], ys[:warm]), g)
        start = time.perf_counter()
        total = sum(step((xs[i:min(i + block, warm + steps)], ys[i:min(i + block, warm + steps)]), g)
                    for i in range(warm, warm + steps, block))
        seconds["dae"], costs["dae"] = time.perf_counter() - start, total / steps
        report("fine-tune", seconds, costs)
    return per_epoch


class _torch_threads:
    """Run with n torch threads; restore the count afterwards."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.before)


def print_summary(args, summary, per_epoch) -> None:
    print("\n=== summary ===")
    disturbed = []
    for level, costs, seconds in summary:
        first = next(iter(costs))
        finals = ", ".join(f"{side} {c[-1]:.4f}" for side, c in costs.items())
        diff = (costs["dae"][-1] - costs[first][-1]) / costs[first][-1]
        medians = ", ".join(f"{side} {statistics.median(s):.2f}" for side, s in seconds.items())
        print(f"dA corruption {level:.1f}, cost at epoch {len(costs['dae'])}: {finals} (dae vs {first}: {diff:+.2%}); "
              f"median seconds per epoch: {medians}")
        for side, s in seconds.items():
            median = statistics.median(s)
            disturbed += [f"corruption {level:.1f} epoch {e} {side} ({t:.2f} s)" for e, t in enumerate(s, 1)
                          if t > DISTURBED * median]
    modes = [side for side in (summary[0][2] if summary else per_epoch) if side != "dae"]
    for side in modes if summary else []:
        ratios = [p / d for _, _, seconds in summary for p, d in zip(seconds[side], seconds["dae"])]
        print(f"dA median ratio of seconds per epoch, {side} / dae: {statistics.median(ratios):.2f} "
              f"(over {len(ratios)} epochs)")
    if summary:
        print("dA epochs more than %.1fx their side's median (probably disturbed by another process): %s"
              % (DISTURBED, "; ".join(disturbed) or "none"))
    if per_epoch:
        for side, (p1, p2, p3, f) in per_epoch.items():
            print(f"SdA at batch 1, seconds per epoch (extrapolated from {args.sda_steps} steps), {side}: "
                  f"pre-training {p1:.1f} + {p2:.1f} + {p3:.1f} = {p1 + p2 + p3:.1f} (layers 1-3), fine-tuning {f:.1f}")
        totals = {side: PRETRAIN_EPOCHS * (p1 + p2 + p3) + FINETUNE_EPOCHS * f
                  for side, (p1, p2, p3, f) in per_epoch.items()}
        print(f"SdA whole run, an ESTIMATE from the measured per-step times (not a measured run): "
              f"{PRETRAIN_EPOCHS} pre-training epochs per layer + {FINETUNE_EPOCHS} fine-tuning epochs (the number "
              f"dae's tutorial preset ran before patience stopped it), validation passes not counted:")
        for side, total in totals.items():
            ratio = "" if side == "dae" else f", {total / totals['dae']:.1f}x dae's"
            print(f"    {side}: {total / 3600:.2f} h ({total / 60:.0f} min){ratio}")


def main() -> None:
    args = parse_args()
    levels = [float(v) for v in args.levels.split(",") if v.strip()]
    modes = [m.strip().upper() for m in args.modes.split(",") if m.strip()]
    wall_start = time.perf_counter()
    pytensor, ldflags = setup_pytensor(args.blas_ldflags)
    import pytensor.tensor as pt
    from pytensor.tensor.random.utils import RandomStream

    # RandomStream is the tutorial's RandomStreams; PyTensor 3 deprecates it for shared_rng,
    # which PyTensor 2 lacks.  The masks it draws are the same either way.
    warnings.filterwarnings("ignore", message="RandomStream is deprecated", category=FutureWarning)

    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"pytensor {pytensor.__version__}, dae {dae.__version__}")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start; "
          f"torch threads {torch.get_num_threads()}; OpenBLAS threads {openblas_threads()}")
    default_linker = type(pytensor.compile.mode.get_default_mode().linker).__name__
    print(f"PyTensor: modes {', '.join(modes)} (its default linker here: {default_linker}), "
          f"floatX {pytensor.config.floatX}, cxx {pytensor.config.cxx or 'none'}, blas__ldflags {ldflags!r}")

    mnist = dae.load_mnist()
    x, y = mnist.train.x[:N_TRAIN].contiguous(), mnist.train.y[:N_TRAIN]
    data = pytensor.shared(x.numpy().astype("float32"), name="train_x", borrow=True)
    labels = pt.cast(pytensor.shared(y.numpy().astype("float32"), name="train_y"), "int32")  # as load_data
    print(f"data: MNIST's first {len(x):,} training images, {x.dtype}; minibatches in order")

    summary = run_da(pytensor, pt, RandomStream, x, data, levels, args.epochs, modes) if args.epochs else []
    per_epoch = (run_sda(pytensor, pt, RandomStream, x, y, data, labels, args.sda_steps, modes, args.sda_threads)
                 if args.sda_steps else {})
    print_summary(args, summary, per_epoch)
    print(f"load average {os.getloadavg()[0]:.2f} at the end; total wall time of this script: "
          f"{time.perf_counter() - wall_start:.0f} s")


if __name__ == "__main__":
    main()
