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

A row's reconstruction error is sum_k e_k, and the per-feature errors (H2O's
``anomaly(per_feature=True)``) sum to it.  The two scores rank rows differently.  Cross-entropy
is not zero for a perfect reconstruction: its minimum over z is the entropy of the row's grey
values, so it grows with the amount of (anti-aliased) ink in an image whether or not the row is
unusual.  Squared error
is zero for a perfect reconstruction.  Which one the command line and the detector use by
default is :data:`dae.config.ANOMALY_SCORE`.

**Distance to the typical codes** (:class:`NeighbourScore`).  The reconstruction error misses an
unusual row that the autoencoder happens to reconstruct well (a digit of another class that a
model of ones reconstructs well enough); the code of such a row may still lie away from the codes
of the typical rows.  With a weight
w > 0 a row's score is

    (e - mean(e_ref)) / sd(e_ref)  +  w (d - mean(d_ref)) / sd(d_ref),

e its reconstruction error, d the mean Euclidean distance from its code to the codes of its k
nearest reference rows (the k-nearest-neighbour "weight" of Angiulli & Pizzuti 2002, PyOD's
``KNN(method="mean")``, here in the autoencoder's code space), and e_ref, d_ref those of the
reference rows (the training rows), each leaving itself out of its own neighbours, as PyOD
does for its training rows.  A reference row is never its own neighbour, whether it is scored
in ``fit`` or later (:func:`neighbour_distances`), so the training rows' scores are those
``predict`` gives them, as scikit-learn requires, and are not lowered by a zero distance.
Both parts are standardised by the reference rows so that w weighs them in comparable units.
The default w and k are :data:`dae.config.ANOMALY_CODE_WEIGHT` and :data:`dae.config.ANOMALY_NEIGHBORS`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .autoencoder import reconstruction_loss
from .config import EVAL_ROWS

# Pairwise distances are computed for at most this many (row, reference row) pairs at a time
# (2^24 float64 values: 128 MB).
DISTANCE_PAIRS = 2**24

# Two codes closer than this times the sum of their norms are the same code (a row's own, or a
# copy's): rounding leaves float64 codes and their distances about 1e-8 of the norms apart
# (measured: 4e-8 for equal codes of 30 and 500 values by torch.cdist's matrix products).
SAME_CODE = 1e-6

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
    def error(rows, wanted):
        if score == "cross-entropy":
            e = reconstruction_loss(wanted, model.decode_logits(model.encode(rows)), score)
        else:
            e = (wanted - model.reconstruct(rows)).pow(2)
        return e if per_feature else e.sum(dim=1)
    return _by_chunks(model, error, x, target)


def codes(model, x: torch.Tensor) -> torch.Tensor:
    """The code of each row of ``x`` (``model.encode``: a dA's hidden layer, a deep autoencoder's
    code layer), computed as :func:`reconstruction_errors` computes the errors; on the CPU."""
    return _by_chunks(model, lambda rows, _: model.encode(rows), x, x)


def _by_chunks(model, f, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """f(rows, target rows) over chunks of :data:`dae.config.EVAL_ROWS` rows, without gradients, in the
    model's eval mode, device and dtype; the results concatenated on the CPU."""
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for rows, wanted in zip(x.split(EVAL_ROWS), target.split(EVAL_ROWS)):
                out.append(f(rows.to(parameter.device, parameter.dtype),
                             wanted.to(parameter.device, parameter.dtype)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def neighbour_distances(points: torch.Tensor, reference: torch.Tensor, n_neighbors: int) -> torch.Tensor:
    """The mean Euclidean distance from each row of ``points`` to its ``n_neighbors`` nearest rows of
    ``reference`` among those that differ from it, shape (n,), in float64.

    A reference row with the point's own code is not its neighbour: so a reference row's own
    distance leaves the row itself out (and any copy of it), and a new row that copies a reference
    row is scored as that row is.  Codes closer than :data:`SAME_CODE` times the sum of their norms
    count as the same code: the rounding of a code (computed with other rows, or of the distance,
    computed by matrix products) leaves the same code a little apart.  Where fewer than
    ``n_neighbors`` reference rows have another code than a point, the mean is over those that do
    (0 where none does).
    """
    check_n_neighbors(n_neighbors, len(reference) + 1)
    reference, points = reference.double(), points.double()
    reference_norms = reference.norm(dim=1)
    chunk = max(1, DISTANCE_PAIRS // len(reference))
    k, out = n_neighbors, []
    for rows in points.split(chunk):
        d, norms = torch.cdist(rows, reference), rows.norm(dim=1)
        if k < len(reference):  # the k + 1 nearest hold the k wanted unless more than the first is the row's code
            nearest, index = d.topk(k + 1, dim=1, largest=False)
            same = nearest <= SAME_CODE * (norms[:, None] + reference_norms[index])
            result = torch.where(same[:, :1], nearest[:, 1:], nearest[:, :k]).mean(dim=1)
            many = same[:, 1:].any(dim=1)
        else:
            result, many = torch.empty(len(rows), dtype=d.dtype), torch.ones(len(rows), dtype=torch.bool)
        if many.any():  # rows with copies among the reference rows: leave every copy out
            d = d[many]
            d[d <= SAME_CODE * (norms[many][:, None] + reference_norms[None, :])] = torch.inf
            nearest = d.topk(k, dim=1, largest=False).values
            found = torch.isfinite(nearest)
            result[many] = nearest.where(found, 0.0).sum(dim=1) / found.sum(dim=1).clamp_min(1)
        out.append(result)
    return torch.cat(out)


def check_n_neighbors(n_neighbors, n_reference: int | None = None) -> None:
    """Raise ValueError unless ``n_neighbors`` is a positive integer, and below ``n_reference`` where
    given (a reference row has that many others)."""
    if not (isinstance(n_neighbors, (int, np.integer)) and not isinstance(n_neighbors, bool) and n_neighbors >= 1):
        raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors!r}")
    if n_reference is not None and n_neighbors >= n_reference:
        raise ValueError(f"n_neighbors={n_neighbors} needs more than {n_neighbors} reference rows, "
                         f"got n_samples = {n_reference}")


class NeighbourScore:
    """The anomaly score that adds the distance to the typical codes to the reconstruction error
    (see the module's docstring), fitted on reference rows: their ``errors`` (n,) and ``codes`` (n, c).

    ``reference_scores`` holds the reference rows' own scores (each one's distance leaving it out);
    ``parts(e, d)`` the two standardised parts of any rows' errors and distances; calling it, their
    score.
    """

    def __init__(self, errors: torch.Tensor, codes: torch.Tensor, weight: float, n_neighbors: int):
        check_code_weight(weight)
        check_n_neighbors(n_neighbors, len(codes))
        if len(errors) != len(codes):
            raise ValueError(f"{len(errors)} errors but {len(codes)} codes")
        self.weight, self.n_neighbors, self.codes = float(weight), int(n_neighbors), codes.double()
        distances = self.distances(self.codes)
        errors = errors.double()
        self.error_mean, self.error_scale = _mean_and_scale(errors, float(errors.abs().mean()))
        code_size = float(self.codes.pow(2).sum(dim=1).mean().sqrt())  # the codes' root mean square norm
        self.distance_mean, self.distance_scale = _mean_and_scale(distances, code_size)
        self.reference_scores = self(errors, distances)

    def distances(self, codes: torch.Tensor) -> torch.Tensor:
        """The mean distance from each code to its ``n_neighbors`` nearest reference codes."""
        return neighbour_distances(codes, self.codes, self.n_neighbors)

    def parts(self, errors: torch.Tensor, distances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The errors and the distances, each standardised by the reference rows'."""
        return ((errors.double() - self.error_mean) / self.error_scale,
                (distances.double() - self.distance_mean) / self.distance_scale)

    def __call__(self, errors: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
        e, d = self.parts(errors, distances)
        return e + self.weight * d


def _mean_and_scale(values: torch.Tensor, size: float) -> tuple[float, float]:
    """The mean and standard deviation of ``values``, whose typical magnitude is ``size``.  A deviation
    below a millionth of ``size`` is rounding, not spread: it counts as that millionth (as 1 where
    ``size`` is 0), so that standardising neither divides by zero nor blows rounding up."""
    if not torch.isfinite(values).all():
        raise ValueError("the reference rows' errors or codes are not all finite")
    floor = 1e-6 * size if size > 0 else 1.0
    return float(values.mean()), max(float(values.std(correction=0)), floor)


def check_code_weight(weight) -> None:
    """Raise ValueError unless ``weight`` is a finite number >= 0."""
    ok = (isinstance(weight, (int, float, np.integer, np.floating)) and not isinstance(weight, bool)
          and math.isfinite(weight) and weight >= 0)
    if not ok:
        raise ValueError(f"code_weight must be a finite number >= 0, got {weight!r}")


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
