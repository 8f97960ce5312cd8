"""Each variant of the dA on MNIST, measured the same way: its final training cost, and the test
error of a logistic regression trained on its features (the codes of the 50,000 training
digits), beside logistic regression on the raw pixels.  Then, as an anomaly detector, the
reconstruction errors of test digits against those of noise and of inverted digits.

    python benchmarks/variants.py [--epochs 15] [--hidden 500] [--only "raw pixels|no noise"]

Needs scikit-learn.  A full run takes about half an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from sklearn.pipeline import Pipeline

from dae import DenoisingAutoencoder, TrainingDiverged, load_mnist, train
from dae.sklearn import DAETransformer

# Level 0.3 for every noise: the tutorial's masking level, and for salt-and-pepper the same
# fraction of inputs; for Gaussian noise a standard deviation of 0.3.
# Each row: the model's settings, and train()'s.  The rest is the tutorial's (784-500, 15 epochs,
# learning rate 0.1, batch 20, seed 123); relu codes and the linear decoder of squared error
# take a learning rate of 0.01, at which they do not blow up.
MASKING = dict(noise="masking", corruption_level=0.3)
VARIANTS = {
    "masking 0.3 (the tutorial's)": (MASKING, {}),
    "gaussian, sigma 0.3": (dict(noise="gaussian", corruption_level=0.3), {}),
    "salt-and-pepper 0.3": (dict(noise="salt-and-pepper", corruption_level=0.3), {}),
    "no noise": (dict(corruption_level=0.0), {}),
    "masking + sparsity (beta 0.1, rho 0.05)": (dict(MASKING, sparsity_weight=0.1, sparsity_target=0.05), {}),
    "contractive, no noise (lambda 0.1)": (dict(corruption_level=0.0, contraction=0.1), {}),
    "masking + weight decay 1e-4": (MASKING, dict(weight_decay=1e-4)),
    "masking, tanh codes": (dict(MASKING, activation="tanh"), {}),
    "masking, relu codes": (dict(MASKING, activation="relu"), dict(learning_rate=0.01)),
    "masking, untied": (dict(MASKING, tied=False), {}),
    "masking, squared error (linear decoder)": (dict(MASKING, loss="squared-error"), dict(learning_rate=0.01)),
    "masking, momentum 0.9 + cosine": (MASKING, dict(momentum=0.9, learning_rate=0.01, schedule="cosine")),
    "masking, Adam 1e-3": (MASKING, dict(optimizer="adam", learning_rate=1e-3)),
}


def logistic_test_error(train_x, train_y, test_x, test_y) -> float:
    """Test error of scikit-learn's LogisticRegression (lbfgs, at most 200 iterations)."""
    clf = LogisticRegression(max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 200 iterations, the same for every row
        clf.fit(train_x, train_y)
    return float((clf.predict(test_x) != test_y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--only", help="variant names separated by | (default: all, and raw pixels)")
    args = parser.parse_args()
    mnist = load_mnist()
    x, y = mnist.train.x, mnist.train.y.numpy()
    tx, ty = mnist.test.x, mnist.test.y.numpy()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 784-{args.hidden}, {args.epochs} epochs, "
          f"learning rate 0.1, batch 20")
    names = args.only.split("|") if args.only else ["raw pixels", "Pipeline(DAETransformer, LogisticRegression)",
                                                     *VARIANTS]
    print(f"{'variant':44s} {'final cost':>10s} {'seconds':>8s} {'logreg test error':>18s}")
    anomaly_model = None
    for name in names:
        start = time.perf_counter()
        if name == "raw pixels":
            cost, seconds = float("nan"), 0.0
            error = logistic_test_error(x.numpy(), y, tx.numpy(), ty)
        elif name.startswith("Pipeline"):
            pipe = Pipeline([("dae", DAETransformer(n_hidden=args.hidden, n_epochs=args.epochs, random_state=123)),
                             ("clf", LogisticRegression(max_iter=200))])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                pipe.fit(x.numpy(), y)
            cost, seconds = pipe["dae"].history_[-1].cost, time.perf_counter() - start
            error = 1.0 - pipe.score(tx.numpy(), ty)
        else:
            settings, training = VARIANTS[name]
            g = torch.Generator().manual_seed(123)
            model = DenoisingAutoencoder(784, args.hidden, generator=g, **settings)
            try:
                history = train(model, x, epochs=args.epochs, generator=g, **training)
            except TrainingDiverged as e:
                print(f"{name:44s} {e}", flush=True)
                continue
            cost, seconds = history[-1].cost, time.perf_counter() - start
            with torch.no_grad():
                error = logistic_test_error(model.encode(x).numpy(), y, model.encode(tx).numpy(), ty)
            if settings is MASKING and not training:
                anomaly_model = model
        print(f"{name:44s} {cost:10.2f} {seconds:8.1f} {error:17.2%}", flush=True)

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
