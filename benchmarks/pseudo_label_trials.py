"""The trials that chose the few-label SdA's pseudo-label recipe, on held-out labels only.

A scratch version of the fine-tuning with pseudo-labels (autograd and torch.optim, not the
library's hand-written step), run on a `benchmarks/few_labels.py` SdA run's pre-trained stack
and its own labels: it trains on the four fifths of the N labels kept and prints, after every
epoch, the error on the fifth held out (labelled.json's ``held_out_for_early_stopping``).  No
other label is read; the test set is never touched.  An epoch is 600 steps, each a minibatch
of 100 of the labels kept and, once the pseudo-label weight is above 0, 100 of the 60,000
images with their pseudo-labels (Lee 2013, eq. 16 ramp, over the fractions
dae.config.PSEUDO_LABEL_RAMP of the run).  The trials reported in the README (draw 0, N = 1000):

    python benchmarks/pseudo_label_trials.py --run runs/few_labels/sda-N1000-draw0 \
        --epochs 24 --dropout 0.5 --input-corruption 0.2 --schedule cosine --clean    # clean pseudo-labels
    ... the same without --clean                     # Lee's: the labels of the noisy pass itself
    ... the same with --alpha 0                      # no pseudo-labels, the same regularisation
    python benchmarks/pseudo_label_trials.py --run runs/few_labels/sda-N1000-draw0 --epochs 30
                                                     # Lee's, with the default preset's regularisation
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dae.config import PSEUDO_LABEL_RAMP
from dae.data import load_data
from dae.saving import load_model
from dae.stacked import StackedDenoisingAutoencoder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a few_labels.py sda run folder (labelled.json, pretrained/)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--alpha", type=float, default=3.0, help="alpha_f, the pseudo-label weight (Lee 2013: 3)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--input-corruption", type=float, default=0.1)
    p.add_argument("--clean", action="store_true", help="pseudo-labels from the network without its noise")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    a = p.parse_args()
    torch.set_num_threads(1)
    run = Path(a.run)
    record = json.loads((run / "labelled.json").read_text())
    data = load_data("mnist", loss="cross-entropy")
    x_all = torch.cat([data.train.x, data.valid.x])  # every training image: the unlabelled data
    held = torch.tensor(record["held_out_for_early_stopping"])
    drawn = torch.tensor(record["indices"])
    kept = drawn[~torch.isin(drawn, held)]
    xl, yl = data.train.x[kept], data.train.y[kept]
    xh, yh = data.train.x[held], data.train.y[held]
    model = load_model(run / "pretrained", kind=StackedDenoisingAutoencoder)
    model.dropout.p, model.input_corruption = a.dropout, a.input_corruption
    g = torch.Generator().manual_seed(1234)
    optimizer = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    print(f"{len(x_all)} unlabelled, {len(kept)} labels kept, {len(held)} held out", flush=True)
    batch = 100
    steps = len(x_all) // batch
    t1, t2 = PSEUDO_LABEL_RAMP

    def held_out_error() -> float:
        model.eval()
        with torch.no_grad():
            e = float((model.predict(xh) != yh).float().mean())
        model.train()
        return e

    best = (1.0, 0)
    for epoch in range(1, a.epochs + 1):
        t = (epoch - 1) / a.epochs
        alpha = 0.0 if t < t1 else a.alpha * min(1.0, (t - t1) / (t2 - t1))
        factor = 1.0 if a.schedule == "constant" else 0.5 * (1 + math.cos(math.pi * t))
        for group in optimizer.param_groups:
            group["lr"] = a.lr * factor
        order = torch.randperm(len(x_all), generator=g)
        start, total_l, total_u = time.time(), 0.0, 0.0
        model.train()
        for s in range(steps):
            xu = x_all[order[s * batch:(s + 1) * batch]]
            pick = torch.randperm(len(xl), generator=g)[:batch]
            if alpha > 0:
                if a.clean:
                    with torch.no_grad():
                        pseudo = model.predict(xu)
                logits = model(torch.cat([xl[pick], xu]), g)
                if not a.clean:
                    pseudo = logits[batch:].detach().argmax(1)
                loss_l = F.cross_entropy(logits[:batch], yl[pick])
                loss_u = F.cross_entropy(logits[batch:], pseudo)
                loss = loss_l + alpha * loss_u
            else:
                loss_l = F.cross_entropy(model(xl[pick], g), yl[pick])
                loss_u = torch.zeros(())
                loss = loss_l
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_l += loss_l.item()
            total_u += loss_u.item()
        e = held_out_error()
        if e <= best[0]:
            best = (e, epoch)
        print(f"epoch {epoch} alpha {alpha:.2f} lr {a.lr * factor:.3f} labelled cost {total_l / steps:.4f} "
              f"pseudo-label cost {total_u / steps:.4f} held-out error {e:.2%} best {best[0]:.2%} at {best[1]} "
              f"{time.time() - start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
