"""The update rules: one object per kind of step, each with a single update path.

* :class:`DAStep`: the tutorial's SGD step for one dA, written out by hand;
* :class:`AutogradStep`: autograd on ``model.loss`` and a ``torch.optim`` optimizer, for the
  variants the hand-written step does not cover (momentum, Adam, weight decay, a schedule, the
  sparsity and contractive penalties), and for fine-tuning a deep autoencoder;
* :class:`FinetuneStep`: SGD with optional momentum on the whole stack's negative
  log-likelihood, written out by hand; :class:`PseudoLabelStep`, the same on labelled and
  pseudo-labelled rows;
* :class:`LadderStep`: autograd and torch.optim on a ladder network's supervised and
  denoising costs.

Every step is called on a *block* of consecutive minibatches (a tuple ``(x,)`` or ``(x, y)`` of
k x B rows) and returns the sum over the block's rows of their cost before each update.
Data parallelism lives inside the update path: the gradients go through :class:`Updates`,
which applies them straight away for one process and all-reduces them first for several, so
there is no second copy of any step.

Why by hand.  At batch size 20 the bookkeeping of a general engine costs more than the
arithmetic.  Per dA step there are four matrix products and a handful of fused passes::

    h   = x~ W + b ;  y = s(h)                     encoder                      (GEMM 1)
    a   = y W^T + b'                               decoder logits               (GEMM 2)
    dz  = c (sigmoid(a) - x)                       dL/da for cross-entropy (c = 1), or
          c (a - x)                                for squared error (c = 2)
    dy  = (dz W) * s'(y)                           back through the encoder     (GEMM 3)
    W  -= lr/B [x~ ; dz]^T [dy ; y]                both gradient terms of tied W in one GEMM
    b  -= lr/B sum(dy) ;  b' -= lr/B sum(dz)

The last GEMM stacks x~ over dz and dy over y, so the two terms of the tied gradient
(x~^T dy + dz^T y) come out of one product of inner size 2B that updates W in place.  The
corruption of a block's inputs and its cost (from the decoder logits the steps leave behind)
are done in bulk, with vectorised passes.  The numbers are autograd's (tests/test_train.py and
tests/test_stacked.py check each step against autograd and torch.optim.SGD).
"""

from __future__ import annotations

import torch

from .autoencoder import ACTIVATIONS, DenoisingAutoencoder
from .config import TrainingConfig
from .corruption import blocks_draw_alike, corrupt, mask
from .distributed import SINGLE, World
from .stacked import StackedDenoisingAutoencoder

aten = torch.ops.aten


class Updates:
    """``target <- beta * target + alpha * G``, G the mean over the processes of a gradient.

    One process: straight into the target, by ``addmm_``/``addmv_`` (no buffer, no extra pass).
    Several: each gradient is written into one flat buffer; :meth:`flush` sums the buffer over
    the processes with a single all-reduce and applies every update.
    """

    def __init__(self, world: World, targets: list[torch.Tensor]) -> None:
        self.world, self.pending = world, []
        if world.size > 1:
            self.flat = torch.empty(sum(t.numel() for t in targets), device=targets[0].device, dtype=targets[0].dtype)
            parts = self.flat.split([t.numel() for t in targets])
            self.views = {id(t): part.view_as(t) for t, part in zip(targets, parts)}

    def addmm_(self, target: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, *, alpha: float,
               beta: float = 1.0) -> None:
        if self.world.size == 1:
            target.addmm_(m1, m2, beta=beta, alpha=alpha)
        else:
            self.pending.append((target, torch.mm(m1, m2, out=self.views[id(target)]), alpha, beta))

    def addmv_(self, target: torch.Tensor, m: torch.Tensor, v: torch.Tensor, *, alpha: float,
               beta: float = 1.0) -> None:
        if self.world.size == 1:
            target.addmv_(m, v, beta=beta, alpha=alpha)
        else:
            self.pending.append((target, torch.mv(m, v, out=self.views[id(target)]), alpha, beta))

    def flush(self) -> None:
        """Apply the gradients gathered since the last flush (several processes; else nothing to do)."""
        if not self.pending:
            return
        self.world.all_reduce_(self.flat)
        for target, gradient, alpha, beta in self.pending:
            if beta != 1.0:
                target.mul_(beta)
            target.add_(gradient, alpha=alpha / self.world.size)
        self.pending.clear()


class DAStep:
    """The hand-written SGD step of one dA, with preallocated buffers (see the module docstring)."""

    def __init__(self, model: DenoisingAutoencoder, batch_size: int, block_steps: int, world: World = SINGLE) -> None:
        B, V, H = batch_size, model.n_visible, model.n_hidden
        factory = {"device": model.W.device, "dtype": model.W.dtype}
        self.model, self.B, self.block_steps = model, B, block_steps
        # For each minibatch of a block, L[i] stacks x~ (rows :B) over dz (rows B:);
        # R stacks dy over y.  Then L[i]^T R is the whole tied-weight gradient.
        self.L = torch.empty(block_steps, 2 * B, V, **factory)
        self.A = torch.empty(block_steps, B, V, **factory)  # decoder logits
        self.R = torch.empty(2 * B, H, **factory)
        self.ones = torch.ones(B, **factory)
        # Cross-entropy against a sigmoid output and squared error against a linear one both
        # have dL/da = c (z - x); c = 2 for ||x - z||^2.  c/B (the minibatch mean) goes in alpha.
        self.cross_entropy = model.loss_name == "cross-entropy"
        self.c = 1.0 if self.cross_entropy else 2.0
        self.updates = Updates(world, list(model.parameters()))
        self.alpha = 0.0

    def set_learning_rate(self, lr: float) -> None:
        self.alpha = -lr * self.c / self.B

    def state_dict(self) -> dict:
        return {}  # plain SGD keeps no state

    def load_state_dict(self, state: dict) -> None:
        pass

    def __call__(self, block: tuple[torch.Tensor, ...], generator: torch.Generator) -> float:
        """SGD over the consecutive minibatches of ``block[0]``; the sum of their costs."""
        m, B = self.model, self.B
        x = block[0]
        k = x.shape[0] // B
        xs = x.view(k, B, -1)
        L, A, R = self.L[:k], self.A[:k], self.R
        if not blocks_draw_alike(m.noise, B * xs.shape[2]):  # then one draw per minibatch, as model.loss
            for i in range(k):
                corrupt(xs[i], m.noise, m.corruption_level, generator, out=L[i, :B])
        else:
            corrupt(xs, m.noise, m.corruption_level, generator, out=L[:, :B])

        W, b, b_prime, Wd = m.W, m.b, m.b_prime, m.decoder_weight
        Wd_t = Wd.t()
        dy, y = R[:B], R[B:]
        dy_t = dy.t()
        ones, alpha, tied, updates = self.ones, self.alpha, m.W_prime is None, self.updates
        activation = ACTIVATIONS[m.activation]
        activate, activation_grad = activation.apply_, activation.backward_
        addmm, mm, sigmoid, sub = torch.addmm, torch.mm, torch.sigmoid, torch.sub
        cross_entropy = self.cross_entropy
        for i in range(k):
            Li, a, xi = L[i], A[i], xs[i]
            x_tilde, dz = Li[:B], Li[B:]
            addmm(b, x_tilde, W, out=y)
            activate(y)
            addmm(b_prime, y, Wd_t, out=a)
            if cross_entropy:
                sigmoid(a, out=dz)
                dz.sub_(xi)
            else:
                sub(a, xi, out=dz)
            mm(dz, Wd, out=dy)
            activation_grad(dy, y)
            updates.addmv_(b, dy_t, ones, alpha=alpha)
            updates.addmv_(b_prime, dz.t(), ones, alpha=alpha)
            if tied:
                updates.addmm_(W, Li.t(), R, alpha=alpha)
            else:
                updates.addmm_(W, x_tilde.t(), dy, alpha=alpha)
                updates.addmm_(Wd, dz.t(), y, alpha=alpha)
            updates.flush()
        return self._cost(xs, A)

    def _cost(self, xs: torch.Tensor, A: torch.Tensor) -> float:
        """Sum over the block of L(x, z), from the logits A the steps computed (before each update)."""
        flat_x, flat_a = xs.reshape(-1), A.view(-1)
        if self.cross_entropy:
            # L = sum softplus(a) - x a, the stable form of -x log s(a) - (1 - x) log(1 - s(a)).
            xa = torch.dot(flat_x, flat_a)
            aten.softplus.out(flat_a, 1, 20, out=flat_a)
            return float(flat_a.sum(dtype=torch.float64) - xa)
        flat_a.sub_(flat_x)
        return float(torch.dot(flat_a, flat_a))


class _TorchOptimStep:
    """What the steps on a torch.optim optimizer (``self.optimizer``) share."""

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.optimizer.load_state_dict(state)


class AutogradStep(_TorchOptimStep):
    """Steps by autograd on ``model.loss`` and a torch.optim optimizer; the same corruption is
    drawn, in the same order, as by :class:`DAStep`.  A :class:`dae.deep.DeepAutoencoder`
    (whose loss draws nothing) is fine-tuned by it too."""

    def __init__(self, model: DenoisingAutoencoder, config: TrainingConfig, block_steps: int,
                 world: World = SINGLE) -> None:
        self.model, self.B, self.block_steps, self.world = model, config.batch_size, block_steps, world
        self.optimizer = make_optimizer(model, ("W", "W_prime"), config)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        # The sparsity penalty's mean activation is that of the whole global minibatch.
        self.mean = None if world.size == 1 else world.mean_rows

    def __call__(self, block: tuple[torch.Tensor, ...], generator: torch.Generator) -> float:
        total = 0.0
        with torch.enable_grad():
            for xb in block[0].split(self.B):
                loss = self.model.loss(xb, generator, self.mean)
                self.optimizer.zero_grad(set_to_none=False)
                loss.backward()
                _average_gradients(self.params, self.world)
                self.optimizer.step()
                total += loss.item() * len(xb)
        return total


def make_optimizer(model: torch.nn.Module, decayed: tuple[str, ...], config: TrainingConfig,
                   fused: bool = False) -> torch.optim.Optimizer:
    """The config's torch.optim optimizer over ``model``'s parameters; weight decay applies to
    those whose name's first or last part is in ``decayed`` (``W``, a list's ``W.0``, a
    submodule's ``autoencoders.0.W``): the weights, not the biases."""
    named = list(model.named_parameters())
    is_decayed = [name.split(".")[0] in decayed or name.split(".")[-1] in decayed for name, _ in named]
    weights = [p for (_, p), d in zip(named, is_decayed) if d]
    others = [p for (_, p), d in zip(named, is_decayed) if not d]
    groups = [{"params": weights, "weight_decay": config.weight_decay}, {"params": others, "weight_decay": 0.0}]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.learning_rate, fused=fused or None)
    return torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum, nesterov=config.nesterov)


def _average_gradients(params: list[torch.Tensor], world: World) -> None:
    """Replace each gradient by its mean over the processes: the gradient of the global minibatch."""
    if world.size == 1:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    world.all_reduce_(flat).div_(world.size)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p))


class LadderStep(_TorchOptimStep):
    """One step per minibatch of unlabelled rows, by autograd on the ladder's costs
    (:meth:`dae.ladder.LadderNetwork.costs`): with each minibatch of B unlabelled rows goes a
    minibatch of min(B, n) of the n labelled examples, drawn afresh (without replacement within
    it), as [Rasmus15]'s code pairs 100 labelled with 100 unlabelled examples.  Besides the total
    it returns, the step sums the supervised and each layer's denoising cost: :meth:`take_parts`."""

    def __init__(self, model, labelled: tuple[torch.Tensor, torch.Tensor], config: TrainingConfig,
                 block_steps: int, world: World = SINGLE) -> None:
        self.model, self.B, self.block_steps, self.world = model, config.batch_size, block_steps, world
        self.x_labelled, self.y_labelled = labelled
        # The fused Adam kernel: a fifth of a step's time without it (784-1000-500-250-250-250-10, B = 100).
        self.optimizer = make_optimizer(model, ("W", "V"), config, fused=config.optimizer == "adam")
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.parts = torch.zeros(1 + len(model.sizes), dtype=torch.float64)

    def take_parts(self) -> torch.Tensor:
        """The sums over rows, since the last call, of the supervised cost and of each layer's
        weighted denoising cost (the parts of the total that the calls returned)."""
        parts, self.parts = self.parts, torch.zeros_like(self.parts)
        return parts

    def __call__(self, block: tuple[torch.Tensor, ...], generator: torch.Generator) -> float:
        n = len(self.y_labelled)
        total = 0.0
        with torch.enable_grad():
            for xb in block[0].split(self.B):
                pick = torch.randperm(n, generator=generator, device=generator.device)[: self.B]
                supervised, denoising = self.model.costs(self.x_labelled[pick], self.y_labelled[pick], xb, generator)
                loss = supervised + sum(denoising)
                self.optimizer.zero_grad(set_to_none=False)
                loss.backward()
                _average_gradients(self.params, self.world)
                self.optimizer.step()
                parts = torch.stack([supervised.detach(), *(d.detach() for d in denoising)])
                self.parts += parts.double().cpu() * len(xb)
                total += float(parts.sum()) * len(xb)
        return total


class FinetuneStep:
    """One step of SGD (with optional momentum) on the mean negative log-likelihood of the
    whole stack, written out by hand; the model's own parts say what to compute.

    Forward: the inputs masked at ``model.input_corruption``; h_k = s(h_{k-1} W_k + b_k), times
    the model's dropout mask; logits = h_L W + b.  Backward: the gradient of the mean NLL at
    the logits is (softmax - onehot) / B; through a sigmoid layer it is (d W^T) * h (1 - h)
    (times the same dropout mask).  Update, as torch.optim.SGD: v = momentum v + g;
    W -= lr v; without momentum, W -= lr g.  The masks are drawn in the order of
    ``model(x, generator)`` in training mode, so both give the same numbers.
    """

    def __init__(self, model: StackedDenoisingAutoencoder, momentum: float, batch_size: int, block_steps: int,
                 world: World = SINGLE, max_rows: int | None = None) -> None:
        self.model, self.B, self.block_steps, self.momentum = model, batch_size, block_steps, momentum
        self.weights = [(layer.W, layer.b) for layer in model.hidden] + [(model.classifier.W, model.classifier.b)]
        self.velocity = [(torch.zeros_like(W), torch.zeros_like(b)) for W, b in self.weights] if momentum else None
        # The gradients go into the velocity (with momentum) or straight into the weights.
        targets = self.velocity or self.weights
        self.updates = Updates(world, [t for pair in targets for t in pair])
        rows, W = max_rows or batch_size, model.classifier.W  # max_rows: the most rows of one step
        self.rows = torch.arange(rows, device=W.device)
        self.ones = torch.ones(rows, device=W.device, dtype=W.dtype)
        self.lr = 0.0

    def set_learning_rate(self, lr: float) -> None:
        self.lr = lr

    def state_dict(self) -> dict:
        """The velocity as torch.optim.SGD names it (its ``momentum_buffer``s), for checkpoints."""
        if self.velocity is None:
            return {}
        tensors = [t for pair in self.velocity for t in pair]
        return {"state": {i: {"momentum_buffer": t} for i, t in enumerate(tensors)}, "param_groups": []}

    def load_state_dict(self, state: dict) -> None:
        if self.velocity is None or not state:
            return
        tensors = [t for pair in self.velocity for t in pair]
        for i, t in enumerate(tensors):
            t.copy_(state["state"][i]["momentum_buffer"])

    def __call__(self, block: tuple[torch.Tensor, ...], generator: torch.Generator) -> float:
        x, y = block
        return sum(float(self._step(xb, yb, generator).sum()) for xb, yb in zip(x.split(self.B), y.split(self.B)))

    def _step(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
              row_weights: torch.Tensor | None = None) -> torch.Tensor:
        """One update on the rows (x, y); each row's NLL before it.  The cost minimised is the
        mean NLL, or the sum of the NLLs weighted by ``row_weights``."""
        model, n = self.model, len(x)
        if model.input_corruption:
            x = mask(x, model.input_corruption, generator)
        inputs, outputs, masks, h = [x], [], [], x
        for W, b in self.weights[:-1]:
            h = torch.addmm(b, h, W).sigmoid_()
            outputs.append(h)
            if model.dropout.p:
                keep = model.dropout.mask(h, generator)
                masks.append(keep)
                h = h * keep
            inputs.append(h)
        W, b = self.weights[-1]
        log_p = torch.log_softmax(torch.addmm(b, h, W), dim=1)
        rows, ones = self.rows[:n], self.ones[:n]
        nll = -log_p[rows, y]
        d = log_p.exp_()
        d[rows, y] -= 1.0
        if row_weights is None:
            d.div_(n)
        else:
            d.mul_(row_weights[:, None])
        deltas = [d]
        for k in range(len(self.weights) - 1, 0, -1):  # back through the (dropped-out) sigmoid layers
            g = d @ self.weights[k][0].t()
            if masks:
                g.mul_(masks[k - 1])
            d = aten.sigmoid_backward(g, outputs[k - 1])
            deltas.append(d)
        deltas.reverse()
        updates, lr = self.updates, self.lr
        if self.velocity is None:
            for (W, b), h, d in zip(self.weights, inputs, deltas):
                updates.addmm_(W, h.t(), d, alpha=-lr)
                updates.addmv_(b, d.t(), ones, alpha=-lr)
            updates.flush()
        else:
            for (vW, vb), h, d in zip(self.velocity, inputs, deltas):
                updates.addmm_(vW, h.t(), d, alpha=1.0, beta=self.momentum)
                updates.addmv_(vb, d.t(), ones, alpha=1.0, beta=self.momentum)
            updates.flush()
            for (W, b), (vW, vb) in zip(self.weights, self.velocity):
                W.add_(vW, alpha=-lr)
                b.add_(vb, alpha=-lr)
        return nll


class PseudoLabelStep(FinetuneStep):
    """Fine-tuning on labelled and unlabelled rows at once, with pseudo-labels [Lee13].

    The block's rows are unlabelled; with each minibatch of B of them goes a minibatch of
    min(B, n) of the n labelled examples, drawn afresh (as :class:`LadderStep` does).  The cost
    of the step is the labelled rows' mean NLL plus ``weight`` (alpha(t), set each epoch by
    :func:`dae.config.pseudo_label_weight`) times the unlabelled rows' mean NLL of their
    pseudo-labels.  A pseudo-label is the class the network predicts without its noise (no
    dropout, no input masking), taken as if it were true; [Lee13] takes the prediction of the
    noisy forward pass itself, which did worse on held-out labels here
    (benchmarks/pseudo_label_trials.py; the README's *Few labels*).
    While the weight is 0 only the labelled minibatch is trained on.

    [Lee13] D.-H. Lee. Pseudo-Label: the simple and efficient semi-supervised learning method for
        deep neural networks. ICML 2013 workshop on challenges in representation learning.
    """

    def __init__(self, model: StackedDenoisingAutoencoder, labelled: tuple[torch.Tensor, torch.Tensor],
                 momentum: float, batch_size: int, block_steps: int, world: World = SINGLE) -> None:
        super().__init__(model, momentum, batch_size, block_steps, world, max_rows=2 * batch_size)
        self.x_labelled, self.y_labelled = labelled
        self.weight = 0.0

    def __call__(self, block: tuple[torch.Tensor, ...], generator: torch.Generator) -> float:
        n, total = len(self.y_labelled), 0.0
        for xb in block[0].split(self.B):
            pick = torch.randperm(n, generator=generator, device=generator.device)[: self.B]
            x, y, k = self.x_labelled[pick], self.y_labelled[pick], len(pick)
            if self.weight == 0:
                total += float(self._step(x, y, generator).mean()) * len(xb)
                continue
            pseudo = self.model.predict(xb)
            row_weights = torch.full((k + len(xb),), self.weight / len(xb), dtype=xb.dtype, device=xb.device)
            row_weights[:k] = 1.0 / k
            nll = self._step(torch.cat([x, xb]), torch.cat([y, pseudo]), generator, row_weights)
            total += (float(nll[:k].mean()) + self.weight * float(nll[k:].mean())) * len(xb)
        return total
