"""Each variant of the dA on MNIST, measured the same way: its final training cost, and the test
error of a logistic regression trained on its features (the codes of the 50,000 training
digits), beside logistic regression on the raw pixels.  Then, as an anomaly detector, the
reconstruction errors of test digits against those of noise and of inverted digits.

    python benchmarks/variants.py [--epochs 15] [--hidden 500] [--only masking,gaussian]

Needs scikit-learn.  A full run takes about half an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from dae import DenoisingAutoencoder, load_mnist, train

# Level 0.3 for every noise: the tutorial's masking level, and for salt-and-pepper the same
# fraction of inputs; for Gaussian noise a standard deviation of 0.3.
VARIANTS = {
    "masking": dict(noise="masking", corruption_level=0.3),
    "gaussian": dict(noise="gaussian", corruption_level=0.3),
    "salt-and-pepper": dict(noise="salt-and-pepper", corruption_level=0.3),
    "no noise": dict(corruption_level=0.0),
    "sparse (beta 0.1, rho 0.05)": dict(corruption_level=0.0, sparsity_weight=0.1, sparsity_target=0.05),
    "contractive (lambda 0.1)": dict(corruption_level=0.0, contraction=0.1),
}


def logistic_test_error(train_x, train_y, test_x, test_y) -> float:
    clf = LogisticRegression(max_iter=200)
    clf.fit(train_x, train_y)
    return float((clf.predict(test_x) != test_y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--only", help="comma-separated variant names (default: all, and raw pixels)")
    args = parser.parse_args()
    mnist = load_mnist()
    x, y = mnist.train.x, mnist.train.y.numpy()
    tx, ty = mnist.test.x, mnist.test.y.numpy()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 784-{args.hidden}, {args.epochs} epochs, "
          f"learning rate 0.1, batch 20")
    names = args.only.split(",") if args.only else ["raw pixels", *VARIANTS]
    print(f"{'variant':32s} {'final cost':>10s} {'train s':>8s} {'logreg test error':>18s}")
    anomaly_model = None
    for name in names:
        start = time.perf_counter()
        if name == "raw pixels":
            cost, seconds = float("nan"), 0.0
            error = logistic_test_error(x.numpy(), y, tx.numpy(), ty)
        else:
            g = torch.Generator().manual_seed(123)
            model = DenoisingAutoencoder(784, args.hidden, generator=g, **VARIANTS[name])
            history = train(model, x, epochs=args.epochs, generator=g)
            cost, seconds = history[-1].cost, time.perf_counter() - start
            with torch.no_grad():
                error = logistic_test_error(model.encode(x).numpy(), y, model.encode(tx).numpy(), ty)
            if name == "masking":
                anomaly_model = model
        print(f"{name:32s} {cost:10.2f} {seconds:8.1f} {error:17.2%}", flush=True)

    if anomaly_model is not None:
        g = torch.Generator().manual_seed(0)
        sets = {"test digits": tx, "uniform noise": torch.rand(10000, 784, generator=g), "inverted digits": 1 - tx}
        with torch.no_grad():
            scores = {k: anomaly_model.reconstruction_error(v).numpy() for k, v in sets.items()}
        threshold = np.quantile(scores["test digits"], 0.99)
        print("\nanomaly scores (cross-entropy of the reconstruction; the masking dA):")
        for k, v in scores.items():
            print(f"  {k:16s} median {np.median(v):8.1f}   1st-99th percentile {np.quantile(v, 0.01):8.1f}"
                  f"-{np.quantile(v, 0.99):8.1f}   above the digits' 99th percentile: {(v > threshold).mean():.1%}")


if __name__ == "__main__":
    main()
