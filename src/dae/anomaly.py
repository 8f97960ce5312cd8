"""Anomaly scores from an autoencoder's reconstruction errors, and the threshold that flags outliers.

An autoencoder trained on typical rows reconstructs typical rows well and unusual rows badly,
so the reconstruction error of a row is an anomaly score: higher means less like the training
data.  This module computes it for any of dae's autoencoders (anything with ``reconstruct(x)``;
the cross-entropy score also needs ``encode``, ``decode_logits`` and ``loss_name``), and turns
the training rows' errors into a threshold.  It knows nothing of scikit-learn or files:
:class:`dae.sklearn.AutoencoderOutlierDetector` and ``dae score`` are built on it.

Scores (:data:`SCORES`), per feature k of a row x with reconstruction z = reconstruct(x):

* ``"squared-error"``: e_k = (x_k - z_k)^2.
* ``"cross-entropy"``: e_k = -[x_k log z_k + (1 - x_k) log(1 - z_k)], the tutorial's L, computed
  from the decoder's logits (stable where z rounds to 0 or 1); needs a sigmoid decoder.

A row's score is sum_k e_k, and the per-feature errors (H2O's ``anomaly(per_feature=True)``) sum
to it.  The two scores rank rows differently.  Cross-entropy is not zero for a perfect
reconstruction: its minimum over z is the entropy of the row's grey values, so it grows with
the amount of (anti-aliased) ink in an image whether or not the row is unusual.  Squared error
is zero for a perfect reconstruction.  Which one the command line and the detector use by
default is :data:`dae.config.ANOMALY_SCORE`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .autoencoder import reconstruction_loss
from .config import EVAL_ROWS

SCORES = ("squared-error", "cross-entropy")

# contamination="auto": a row is an outlier above Tukey's upper fence, Q3 + 1.5 (Q3 - Q1), of the
# training errors (J. W. Tukey, Exploratory Data Analysis, 1977: the "outside" values of a box plot).
TUKEY_FENCE = 1.5


def check_score(score) -> None:
    """Raise ValueError unless ``score`` is one of :data:`SCORES`."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")


def check_contamination(contamination) -> None:
    """Raise ValueError unless ``contamination`` is "auto" or a fraction in (0, 0.5], as
    scikit-learn's ``IsolationForest`` requires."""
    if isinstance(contamination, str) and contamination == "auto":
        return
    ok = (isinstance(contamination, (int, float, np.integer, np.floating)) and not isinstance(contamination, bool)
          and math.isfinite(contamination) and 0 < contamination <= 0.5)
    if not ok:
        raise ValueError(f"contamination must be 'auto' or a fraction in (0, 0.5], got {contamination!r}")


def reconstruction_errors(model, x: torch.Tensor, score: str, per_feature: bool = False,
                          target: torch.Tensor | None = None) -> torch.Tensor:
    """The reconstruction error of each row of ``x`` under ``score``: shape (n,), or (n, d)
    with ``per_feature`` (the rows of which sum to the (n,) totals).

    ``model``: a dae autoencoder (``DenoisingAutoencoder``, ``DeepAutoencoder``).  The rows are
    reconstructed from ``x`` without corruption, in chunks of :data:`dae.config.EVAL_ROWS`, without
    gradients and in the model's eval mode, on the model's device and in its dtype; the result
    is on the CPU.  ``target`` (default: ``x``) is what the reconstruction is compared with.
    Raises ValueError for an unknown score, or for cross-entropy with a model whose decoder is
    not a sigmoid (one trained with the squared error).
    """
    check_score(score)
    if score == "cross-entropy" and getattr(model, "loss_name", None) != "cross-entropy":
        raise ValueError("the cross-entropy score needs a model with a sigmoid decoder (one trained with the "
                         f"cross-entropy loss), not one trained with {getattr(model, 'loss_name', 'another loss')}")
    target = x if target is None else target
    if target.shape != x.shape:
        raise ValueError(f"target has shape {tuple(target.shape)}, x has {tuple(x.shape)}")
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    errors = []
    try:
        with torch.no_grad():
            for rows, wanted in zip(x.split(EVAL_ROWS), target.split(EVAL_ROWS)):
                rows = rows.to(parameter.device, parameter.dtype)
                wanted = wanted.to(parameter.device, parameter.dtype)
                if score == "cross-entropy":
                    e = reconstruction_loss(wanted, model.decode_logits(model.encode(rows)), score)
                else:
                    e = (wanted - model.reconstruct(rows)).pow(2)
                errors.append((e if per_feature else e.sum(dim=1)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(errors)


def threshold_from_contamination(errors, contamination) -> float:
    """The error above which a row is an outlier, from the training rows' ``errors``.

    A fraction q: the (1 - q) quantile of the errors (linear interpolation, numpy's default),
    so that the rows with an error above it are the q n worst of the n training rows, within
    one (fewer where errors tie at the threshold).  This is scikit-learn's rule
    (``IsolationForest``'s ``offset_`` is the q-quantile of ``score_samples``, here minus the errors).

    "auto": Tukey's upper fence Q3 + 1.5 IQR of the errors (:data:`TUKEY_FENCE`).  scikit-learn's
    "auto" for ``IsolationForest`` (an offset of -0.5) is specific to its score, which lies on a
    fixed scale where 0.5 is the boundary of Liu et al. (2008); a reconstruction error has no
    fixed scale (it grows with the number of features and depends on the loss and the units),
    so the threshold must come from the training errors' own spread.  It flags about 0.35% of
    normally distributed errors (above 2.7 standard deviations), more of right-skewed ones.
    """
    check_contamination(contamination)
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 1 or errors.size == 0 or not np.isfinite(errors).all():
        raise ValueError("errors must be a non-empty 1-D array of finite values")
    if isinstance(contamination, str):  # "auto"
        q1, q3 = np.quantile(errors, [0.25, 0.75])
        return float(q3 + TUKEY_FENCE * (q3 - q1))
    return float(np.quantile(errors, 1.0 - float(contamination)))
