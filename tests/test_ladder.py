"""The fully connected ladder network of [Rasmus15] (section 3 and algorithm 1).

Every expected value below is written out by hand from the paper's equations, independently of
``dae.ladder``: the vanilla combinator, batch normalisation with the minibatch's own statistics
followed by Gaussian noise, the top-down decoder, the weighted denoising costs against the clean
path, and inference with running averages of the clean statistics.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from dae.ladder import BN_EPS, COMBINATOR_INIT, RUNNING_MOMENTUM, LadderNetwork, combinator

SIZES = (7, 6, 5, 3)  # input, two hidden layers, three classes
F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster than several (much faster on a busy machine) and deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(sizes=SIZES, noise_std=0.3, weights=(1.0, 0.5, 0.2, 0.1), seed=0, dtype=F64, random_a=False,
           input_noise_std=None):
    g = torch.Generator().manual_seed(seed)
    m = LadderNetwork(sizes, noise_std, weights, generator=g, dtype=dtype, input_noise_std=input_noise_std)
    if random_a:  # away from COMBINATOR_INIT, where z^ = 0 and no gradient reaches V yet
        with torch.no_grad():
            for a in m.a:
                a.copy_(torch.randn(a.shape, generator=g, dtype=dtype))
            for p in [*m.beta, m.gamma]:
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=dtype))
    return m


def _data(n, sizes=SIZES, seed=1, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, sizes[0], generator=g, dtype=dtype) + 0.5
    y = torch.randint(sizes[-1], (n,), generator=g)
    return x, y


def _bn(t):
    """(t - mean) / sqrt(biased var + eps) over the minibatch, by hand."""
    return (t - t.mean(0)) / torch.sqrt(t.var(0, unbiased=False) + BN_EPS)


def _act(m, l, z):
    """h_l from z_l: relu(z + beta) below the top, gamma * (z + beta) (the logits) at the top."""
    if l == len(m.sizes) - 1:
        return m.gamma * (z + m.beta[l - 1])
    return torch.relu(z + m.beta[l - 1])


def _clean_by_hand(m, x):
    """The clean path with batch statistics: z_l, (mean, 1/std) of z_pre_l and z_pre_l, and the logits."""
    zs, stats, pres, h = [x], [], [], x
    for l in range(1, len(m.sizes)):
        z_pre = h @ m.W[l - 1]
        mean, var = z_pre.mean(0), z_pre.var(0, unbiased=False)
        z = (z_pre - mean) / torch.sqrt(var + BN_EPS)
        zs.append(z), stats.append((mean, 1 / torch.sqrt(var + BN_EPS))), pres.append(z_pre)
        h = _act(m, l, z)
    return zs, stats, pres, h


def _corrupted_by_hand(m, x, sigma, g, input_sigma=None, split=None):
    """The corrupted path: z~_0 = x + sigma_0 e_0, z~_l = batchnorm(h~_{l-1} W_l) + sigma e_l, the noise drawn
    from g in that order (input first, then one N(0, 1) draw of z_l's shape per layer); sigma_0 is
    ``input_sigma``, by default sigma, and no noise is drawn for the input when it is 0.  With ``split``
    the rows before it and those from it on are batch-normalised apart, each with its own statistics."""
    sigma_0 = sigma if input_sigma is None else input_sigma
    noise = [torch.randn(x.shape, generator=g, dtype=x.dtype) if sigma_0 > 0 else torch.zeros_like(x)]
    h = x + sigma_0 * noise[0]
    zs, pres = [h], []
    for l in range(1, len(m.sizes)):
        pres.append(h @ m.W[l - 1])
        noise.append(torch.randn((len(x), m.sizes[l]), generator=g, dtype=x.dtype))
        bn = _bn(pres[-1]) if split is None else torch.cat([_bn(pres[-1][:split]), _bn(pres[-1][split:])])
        zs.append(bn + sigma * noise[-1])
        h = _act(m, l, zs[-1])
    return zs, pres, noise, h


def _decode_by_hand(m, zs, logits):
    """u_L = batchnorm(softmax(logits~)), u_l = batchnorm(z^_{l+1} V_{l+1}), z^_l = g(z~_l, u_l; a_l)."""
    L = len(m.sizes) - 1
    out = [None] * (L + 1)
    out[L] = _vanilla(zs[L], _bn(torch.softmax(logits, 1)), m.a[L])
    for l in range(L - 1, -1, -1):
        out[l] = _vanilla(zs[l], _bn(out[l + 1] @ m.V[l]), m.a[l])
    return out


# ---------------------------------------------------------------- the combinator


def _vanilla(z, u, a):
    a1, a2, a3, a4, a5, a6, a7, a8, a9, a10 = a
    mu = a1 * torch.sigmoid(a2 * u + a3) + a4 * u + a5
    v = a6 * torch.sigmoid(a7 * u + a8) + a9 * u + a10
    return (z - mu) * v + mu


def test_combinator_is_the_vanilla_combinator_of_the_paper():
    """g(z~, u) = (z~ - mu(u)) v(u) + mu(u), with a1..a10 per unit, applied elementwise."""
    g = torch.Generator().manual_seed(0)
    z, u = torch.randn(2, 9, 4, generator=g, dtype=F64)
    a = torch.randn(10, 4, generator=g, dtype=F64)
    expected = _vanilla(z, u, a)
    assert torch.allclose(combinator(z, u, a), expected, rtol=1e-12, atol=1e-12)
    # each unit uses its own column of parameters
    assert torch.allclose(combinator(z[:, 2:3], u[:, 2:3], a[:, 2:3]), expected[:, 2:3], rtol=1e-12, atol=1e-12)


def test_combinator_gradients_pass_gradcheck():
    """Autograd through the combinator is right w.r.t. z~, u and every a_i (float64 gradcheck)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 3, generator=g, dtype=F64, requires_grad=True)
    u = torch.randn(5, 3, generator=g, dtype=F64, requires_grad=True)
    a = torch.randn(10, 3, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(combinator, (z, u, a))


def test_combinator_starts_at_zero_and_the_model_starts_there():
    """At COMBINATOR_INIT mu = v = 0, so z^ = 0 whatever z~ and u; every a_l is initialised so."""
    assert COMBINATOR_INIT == (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)  # [Rasmus15]'s code
    g = torch.Generator().manual_seed(2)
    z, u = 3 * torch.randn(2, 8, 5, generator=g, dtype=F64)
    a = torch.tensor(COMBINATOR_INIT, dtype=F64).view(10, 1).expand(10, 5)
    assert torch.count_nonzero(combinator(z, u, a)) == 0
    m = _model()
    for l, a_l in enumerate(m.a):
        assert a_l.shape == (10, m.sizes[l])
        assert torch.equal(a_l, torch.tensor(COMBINATOR_INIT, dtype=F64).view(10, 1).expand_as(a_l))


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (1.0,) * 5, ()])
def test_one_denoising_weight_per_layer_is_required(weights):
    """lambda_l is given for l = 0..L, one per size; any other count is refused."""
    with pytest.raises(ValueError):
        LadderNetwork(SIZES, 0.3, weights)


def test_parameter_shapes_and_initial_values():
    """W_l: n_{l-1} x n_l, V_l: n_l x n_{l-1}, beta_l: n_l, gamma: n_L; beta = 0, gamma = 1; running 0 / 1."""
    m = _model()
    L = len(SIZES) - 1
    assert [tuple(w.shape) for w in m.W] == [(SIZES[l - 1], SIZES[l]) for l in range(1, L + 1)]
    assert [tuple(v.shape) for v in m.V] == [(SIZES[l], SIZES[l - 1]) for l in range(1, L + 1)]
    assert all(torch.count_nonzero(b) == 0 for b in m.beta) and torch.all(m.gamma == 1)
    for l in range(1, L + 1):
        assert torch.all(m.running_mean(l) == 0) and torch.all(m.running_var(l) == 1)


# ---------------------------------------------------------------- the encoder


def test_clean_path_normalises_every_layer_with_the_batch_statistics():
    """encode(x, 0) under no_grad: z_l (l >= 1) has per-unit mean 0 and biased variance 1 (up to BN_EPS),
    and the returned statistics are the mean and 1/sqrt(var + BN_EPS) of z_pre_l = h_{l-1} W_l."""
    m = _model(random_a=True)
    x, _ = _data(50)
    with torch.no_grad():
        zs, stats, logits = m.encode(x, 0.0)
        ezs, estats, pres, elogits = _clean_by_hand(m, x)
    assert len(zs) == len(SIZES) and len(stats) == len(SIZES) - 1
    assert torch.equal(zs[0], x)  # no noise on the clean path's input
    for l in range(1, len(SIZES)):
        assert torch.allclose(zs[l].mean(0), torch.zeros(SIZES[l], dtype=F64), atol=1e-12)
        v = pres[l - 1].var(0, unbiased=False)  # variance 1, but for BN_EPS: v / (v + BN_EPS)
        assert torch.allclose(zs[l].var(0, unbiased=False), v / (v + BN_EPS), rtol=1e-10)
        assert torch.all(zs[l].var(0, unbiased=False) > 1 - 1e-3)
        assert torch.allclose(zs[l], ezs[l], rtol=1e-10, atol=1e-10)
        assert torch.allclose(stats[l - 1][0], estats[l - 1][0], rtol=1e-10, atol=1e-10)
        assert torch.allclose(stats[l - 1][1], estats[l - 1][1], rtol=1e-10, atol=1e-10)
    # layer 1 spelled out: mean and 1/std of x W_1
    pre = x @ m.W[0]
    assert torch.allclose(stats[0][0], pre.mean(0), rtol=1e-12, atol=1e-12)
    assert torch.allclose(stats[0][1], (pre.var(0, unbiased=False) + BN_EPS).rsqrt(), rtol=1e-10)
    assert torch.allclose(logits, elogits, rtol=1e-10, atol=1e-10)


def test_clean_path_gives_the_same_z_with_or_without_autograd():
    """The clean path is the same computation whether autograd records it or not."""
    m = _model(random_a=True)
    x, _ = _data(30)
    zs, _, logits = m.encode(x, 0.0)
    with torch.no_grad():
        zs_ng, _, logits_ng = m.encode(x, 0.0)
    for z, z_ng in zip(zs, zs_ng):
        assert torch.allclose(z, z_ng, rtol=1e-10, atol=1e-10)
    assert torch.allclose(logits, logits_ng, rtol=1e-10, atol=1e-10)


def test_corrupted_path_adds_gaussian_noise_after_normalising_with_its_own_statistics():
    """encode(x, sigma, g): z~_0 = x + sigma e_0, z~_l = batchnorm(h~_{l-1} W_l) + sigma e_l; the noise is
    drawn from g, input first, then one N(0, 1) draw of z_l's shape per layer."""
    sigma, n = 0.4, 40
    m = _model(random_a=True)
    x, _ = _data(n)
    zs, stats, logits = m.encode(x, sigma, torch.Generator().manual_seed(7))
    assert stats == []  # statistics are the clean path's business
    ezs, pres, noise, elogits = _corrupted_by_hand(m, x, sigma, torch.Generator().manual_seed(7))
    assert torch.allclose(zs[0], ezs[0], rtol=1e-12, atol=1e-12)
    for l in range(1, len(SIZES)):
        assert torch.allclose(zs[l], ezs[l], rtol=1e-10, atol=1e-10)
        # without its noise, z~_l is normalised with its own batch's statistics: mean 0 and variance 1
        clean_part = zs[l] - sigma * noise[l]
        v = pres[l - 1].var(0, unbiased=False)
        assert torch.allclose(clean_part.mean(0), torch.zeros(SIZES[l], dtype=F64), atol=1e-10)
        assert torch.allclose(clean_part.var(0, unbiased=False), v / (v + BN_EPS), rtol=1e-10)
    assert torch.allclose(logits, elogits, rtol=1e-10, atol=1e-10)


def test_corrupted_path_noise_has_the_stated_std_on_every_layer():
    """For a large batch, z~_l - batchnorm(h~_{l-1} W_l) is N(0, sigma^2) noise on every unit (and z~_0 - x
    on the input), whatever the order of the draws: the noise is added after normalisation, not before."""
    sigma, n = 0.3, 4000
    m = _model(random_a=True)
    x, _ = _data(n)
    with torch.no_grad():
        zs, _, _ = m.encode(x, sigma, torch.Generator().manual_seed(3))
    noise = [zs[0] - x]
    h = zs[0]
    for l in range(1, len(SIZES)):
        noise.append(zs[l] - _bn(h @ m.W[l - 1]))
        h = _act(m, l, zs[l])
    tol = 5 * sigma / math.sqrt(2 * n)  # five standard errors of a std estimate
    for l, e in enumerate(noise):
        assert torch.all((e.std(0) - sigma).abs() < tol), l
        assert torch.all(e.mean(0).abs() < 5 * sigma / math.sqrt(n)), l


# ---------------------------------------------------------------- running statistics


def _set_running(m, seed=5):
    g = torch.Generator().manual_seed(seed)
    for l in range(1, len(m.sizes)):
        m.running_mean(l).copy_(torch.randn(m.sizes[l], generator=g, dtype=m.gamma.dtype))
        m.running_var(l).copy_(torch.rand(m.sizes[l], generator=g, dtype=m.gamma.dtype) + 0.5)


def test_update_running_lerps_towards_the_clean_batch_statistics():
    """encode(x, 0, update_running=True): running_mean += RUNNING_MOMENTUM (batch mean - running_mean), and
    running_var likewise towards the unbiased batch variance; update_running=False leaves them alone."""
    m = _model(random_a=True)
    _set_running(m)
    x, _ = _data(20)
    old = [(m.running_mean(l).clone(), m.running_var(l).clone()) for l in range(1, len(SIZES))]
    with torch.no_grad():
        m.encode(x, 0.0)
    for l in range(1, len(SIZES)):
        assert torch.equal(m.running_mean(l), old[l - 1][0]) and torch.equal(m.running_var(l), old[l - 1][1])
    with torch.no_grad():
        _, _, pres, _ = _clean_by_hand(m, x)
        m.encode(x, 0.0, update_running=True)
    for l in range(1, len(SIZES)):
        mean, var = old[l - 1]
        assert torch.allclose(m.running_mean(l), torch.lerp(mean, pres[l - 1].mean(0), RUNNING_MOMENTUM),
                              rtol=1e-12, atol=1e-12)
        assert torch.allclose(m.running_var(l), torch.lerp(var, pres[l - 1].var(0, unbiased=True), RUNNING_MOMENTUM),
                              rtol=1e-12, atol=1e-12)


def test_costs_update_the_running_statistics_once_per_call_in_training_mode_only():
    """costs() in train mode moves the running statistics by one step towards the clean statistics of the
    unlabelled batch (not the labelled or corrupted passes); in eval mode it leaves them alone."""
    m = _model(random_a=True)
    _set_running(m)
    xl, yl = _data(10, seed=2)
    xu, _ = _data(30, seed=3)
    reference = copy.deepcopy(m)
    with torch.no_grad():
        reference.encode(xu, 0.0, update_running=True)
    m.train()
    m.costs(xl, yl, xu, torch.Generator().manual_seed(0))
    for l in range(1, len(SIZES)):
        assert torch.allclose(m.running_mean(l), reference.running_mean(l), rtol=1e-12, atol=1e-12)
        assert torch.allclose(m.running_var(l), reference.running_var(l), rtol=1e-12, atol=1e-12)
    m.eval()
    before = {k: v.clone() for k, v in m.named_buffers()}
    m.costs(xl, yl, xu, torch.Generator().manual_seed(0))
    assert all(torch.equal(v, before[k]) for k, v in m.named_buffers())


# ---------------------------------------------------------------- inference


def test_forward_is_the_clean_path_with_the_running_statistics():
    """forward(x) normalises z_pre_l with running_mean and running_var (+ BN_EPS), not with the batch's, so a
    row's logits do not depend on the rest of the batch; it changes no running statistic."""
    m = _model(random_a=True).eval()
    _set_running(m)
    x, _ = _data(25)
    before = {k: v.clone() for k, v in m.named_buffers()}
    with torch.no_grad():
        out = m(x)
        h = x
        for l in range(1, len(SIZES)):
            z = (h @ m.W[l - 1] - m.running_mean(l)) / torch.sqrt(m.running_var(l) + BN_EPS)
            h = _act(m, l, z)
        assert torch.allclose(out, h, rtol=1e-10, atol=1e-10)
        assert torch.allclose(m(x[:3]), out[:3], rtol=1e-10, atol=1e-10)
    assert all(torch.equal(v, before[k]) for k, v in m.named_buffers())


def test_predict_and_predict_proba_agree_with_forward():
    """predict_proba = softmax(forward) (rows sum to 1), predict = its argmax; no autograd graph."""
    m = _model(random_a=True).eval()
    _set_running(m)
    x, _ = _data(25)
    p = m.predict_proba(x)
    assert p.shape == (25, SIZES[-1]) and not p.requires_grad
    assert torch.allclose(p.sum(1), torch.ones(25, dtype=F64), atol=1e-12)
    assert torch.allclose(p, torch.softmax(m(x), 1).detach(), rtol=1e-12, atol=1e-12)
    assert torch.equal(m.predict(x), p.argmax(1))
    assert torch.equal(m.predict(x), m(x).argmax(1))


# ---------------------------------------------------------------- the decoder and the costs


def test_decoder_denoises_top_down_through_the_combinator():
    """u_L = batchnorm(softmax(logits~)), u_l = batchnorm(z^_{l+1} V_{l+1}), z^_l = g(z~_l, u_l) with a_l."""
    m = _model(random_a=True)
    x, _ = _data(30)
    zs, _, logits = m.encode(x, 0.3, torch.Generator().manual_seed(4))
    out = m.decode(zs, logits)
    expected = _decode_by_hand(m, zs, logits)
    assert len(out) == len(SIZES)
    for l in range(len(SIZES)):
        assert out[l].shape == (30, SIZES[l])
        assert torch.allclose(out[l], expected[l], rtol=1e-10, atol=1e-10)


def _costs_by_hand(m, xl, yl, xu, seed, target_gradient=True):
    """[Rasmus15]'s cost, by hand, with the noise drawn in costs()'s order: one corrupted pass of the
    labelled rows over the unlabelled ones, each part batch-normalised with its own statistics (the two
    parts' costs are those of two passes apart, only the order of the noise draws differs)."""
    g = torch.Generator().manual_seed(seed)
    n = len(xl)
    zs, _, _, logits = _corrupted_by_hand(m, torch.cat([xl, xu]), m.noise_std, g, m.input_noise_std, split=n)
    supervised = F.cross_entropy(logits[:n], yl)
    with torch.set_grad_enabled(target_gradient):  # the targets: constants unless target_gradient
        clean, stats, _, _ = _clean_by_hand(m, xu)
    noisy, logits = [z[n:] for z in zs], logits[n:]
    z_hat = _decode_by_hand(m, noisy, logits)
    denoising = []
    for l, w in enumerate(m.denoising_weights):
        zh = z_hat[l] if l == 0 else (z_hat[l] - stats[l - 1][0]) * stats[l - 1][1]
        denoising.append(w / m.sizes[l] * ((clean[l] - zh) ** 2).sum(1).mean())
    return supervised, denoising


@pytest.mark.parametrize("input_noise_std, target_gradient", [(None, True), (0.5, True), (0.0, True), (None, False),
                                                             (0.5, False)])
def test_costs_are_the_papers_supervised_and_denoising_costs(input_noise_std, target_gradient):
    """supervised = cross-entropy of the corrupted path's logits on the labelled rows; denoising_l =
    lambda_l / n_l * mean_n ||z_l - (z^_l - mean_l) / std_l||^2 with z_l, mean_l, std_l from the clean path.
    The gradients match those of the hand-written cost, differentiated through the clean path as the
    authors' code is (target_gradient=True, the default) or with constant targets (False).  The input's
    noise is its own setting (the authors' code's "super_noise_std"), by default the layers'."""
    m = _model(random_a=True, input_noise_std=input_noise_std)
    assert m.input_noise_std == (m.noise_std if input_noise_std is None else input_noise_std)
    assert m.target_gradient
    m.target_gradient = target_gradient
    xl, yl = _data(12, seed=2)
    xu, _ = _data(40, seed=3)
    s, d = m.costs(xl, yl, xu, torch.Generator().manual_seed(9))
    es, ed = _costs_by_hand(m, xl, yl, xu, 9, target_gradient)
    assert len(d) == len(SIZES)
    assert torch.allclose(s, es, rtol=1e-10)
    for l in range(len(SIZES)):
        assert torch.allclose(d[l], ed[l], rtol=1e-10), l
    params = list(m.parameters())
    got = torch.autograd.grad(s + sum(d), params, retain_graph=True)
    expected = torch.autograd.grad(es + sum(ed), params)
    for (name, _), a, b in zip(m.named_parameters(), got, expected):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12), name
    os, od = _costs_by_hand(m, xl, yl, xu, 9, not target_gradient)  # the setting matters to every W
    mine, other = (torch.autograd.grad(c + sum(cs), list(m.W)) for c, cs in ((s, d), (os, od)))
    assert all(not torch.allclose(a, b, rtol=1e-3) for a, b in zip(mine, other))


def test_denoising_costs_are_non_negative_and_a_zero_weight_switches_a_layer_off():
    """One denoising cost per layer, each >= 0; lambda_l = 0 gives exactly 0 for layer l and only for it."""
    m = _model(weights=(1.0, 0.0, 2.0, 0.0), random_a=True)
    xl, yl = _data(8, seed=2)
    xu, _ = _data(30, seed=3)
    s, d = m.costs(xl, yl, xu, torch.Generator().manual_seed(0))
    assert s.ndim == 0 and s > 0
    assert len(d) == len(SIZES) and all(c.ndim == 0 and c >= 0 for c in d)
    assert d[1].item() == 0.0 and d[3].item() == 0.0
    assert d[0] > 0 and d[2] > 0


def test_without_noise_the_supervised_cost_is_cross_entropy_of_the_batch_normalised_clean_logits():
    """With noise_std = 0 the corrupted path is the clean one: supervised = CE(encode(x, 0) logits, y)."""
    m = _model(noise_std=0.0, random_a=True)
    xl, yl = _data(12, seed=2)
    xu, _ = _data(20, seed=3)
    s, _ = m.costs(xl, yl, xu)
    with torch.no_grad():
        _, _, logits = m.encode(xl, 0.0)
    assert torch.allclose(s, F.cross_entropy(logits, yl), rtol=1e-10)


def test_gradients_reach_every_parameter():
    """The training loss (supervised + sum of denoising costs) sends a gradient into every W_l, V_l, beta_l,
    gamma and every one of the ten combinator rows a_l[i] of every layer."""
    m = _model(random_a=True)
    xl, yl = _data(12, seed=2)
    xu, _ = _data(40, seed=3)
    s, d = m.costs(xl, yl, xu, torch.Generator().manual_seed(1))
    (s + sum(d)).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    for l, a in enumerate(m.a):
        assert torch.all(a.grad.abs().sum(1) > 0), l


def test_with_all_denoising_weights_zero_nothing_reaches_the_decoder():
    """With lambda = 0 everywhere, only the supervised cost remains: V and the combinators get zero gradient,
    the encoder still learns."""
    m = _model(weights=(0.0,) * len(SIZES), random_a=True)
    xl, yl = _data(12, seed=2)
    xu, _ = _data(40, seed=3)
    s, d = m.costs(xl, yl, xu, torch.Generator().manual_seed(1))
    (s + sum(d)).backward()
    for p in [*m.V, *m.a]:
        assert p.grad is None or torch.count_nonzero(p.grad) == 0
    assert all(w.grad.abs().sum() > 0 for w in m.W)


# ---------------------------------------------------------------- learning from unlabelled data


def _toy_problem(seed, dim=20):
    """Two classes: clusters at x_0 = -2 and +2 (std 0.5), a label-free spread of std 3 along x_1 and 18
    nuisance dimensions of std 1.5; the lot rotated at random into 20-D.  10 labels (5 per class) let an MLP
    fit the nuisance dimensions; 1000 unlabelled points reveal the two clusters."""
    g = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))

    def sample(n):
        y = torch.arange(n) % 2
        x = torch.randn(n, dim, generator=g) * torch.tensor([0.5, 3.0] + [1.5] * (dim - 2))
        x[:, 0] += 4.0 * y - 2.0
        return x @ rotation, y

    (xu, _), (xt, yt), (xl, yl) = sample(1000), sample(2000), sample(10)
    return xl, yl, xu, xt, yt


def _train_error(weights, seed, xl, yl, xu, xt, yt, steps=150):
    g = torch.Generator().manual_seed(seed)
    m = LadderNetwork((20, 30, 10, 2), 0.5, weights, generator=g)
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    m.train()
    for _ in range(steps):
        s, d = m.costs(xl, yl, xu, g)
        opt.zero_grad()
        (s + sum(d)).backward()
        opt.step()
    m.eval()
    return (m.predict(xt) != yt).float().mean().item()


def test_unlabelled_data_lower_the_test_error_of_a_tiny_ladder():
    """With 10 labels, the denoising costs on 1000 unlabelled points (lambda as in [Rasmus15]'s MNIST
    network: heaviest on the input) give a clearly lower test error than the same network, noise and
    Adam steps with every lambda = 0, for each of three seeds."""
    ladder, supervised = [], []
    for seed in range(3):
        data = _toy_problem(seed)
        ladder.append(_train_error((10.0, 1.0, 0.1, 0.1), seed, *data))
        supervised.append(_train_error((0.0, 0.0, 0.0, 0.0), seed, *data))
    assert all(a < b for a, b in zip(ladder, supervised)), (ladder, supervised)
    assert sum(ladder) < 0.5 * sum(supervised), (ladder, supervised)
    assert sum(ladder) / 3 < 0.08, ladder


def test_a_one_row_batch_is_refused_before_the_running_statistics_move():
    """Batch normalisation of one row is undefined: a clear error, and the statistics stay whole."""
    model = LadderNetwork((7, 6, 5, 3), 0.3, (1, 1, 1, 1)).train()
    x = torch.randn(40, 7)
    before = [model.running_var(l).clone() for l in (1, 2, 3)]
    for labelled, unlabelled in ((x[:4], x[:1]), (x[:1], x[:4])):
        with pytest.raises(ValueError, match="at least two rows"):
            model.costs(labelled, torch.randint(3, (len(labelled),)), unlabelled)
    with torch.no_grad(), pytest.raises(ValueError, match="at least two rows"):
        model.encode(x[:1], 0.0, update_running=True)
    assert all(torch.equal(b, model.running_var(l)) for b, l in zip(before, (1, 2, 3)))


def test_population_statistics_are_the_clean_paths_over_every_row():
    """What inference normalises with after training: each layer's exact mean and unbiased variance."""
    torch.manual_seed(0)
    model = LadderNetwork((7, 6, 5, 3), 0.3, (1, 1, 1, 1), generator=torch.Generator().manual_seed(1))
    x = torch.randn(300, 7, dtype=torch.float32)
    model.set_population_statistics(x, chunk_rows=64)
    h = x
    for l in (1, 2, 3):
        z = h @ model.W[l - 1]
        assert torch.allclose(model.running_mean(l), z.mean(0), atol=1e-5)
        assert torch.allclose(model.running_var(l), z.var(0), rtol=1e-4)
        h = torch.relu((z - z.mean(0)) / torch.sqrt(z.var(0) + BN_EPS) + model.beta[l - 1])  # the top's h unused
