"""The denoising autoencoder as the tutorial and [Vincent08] define it."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dae import DAConfig, DenoisingAutoencoder, mask, train
from dae.corruption import NOISES, blocks_draw_alike, corrupt, drop_probability, gaussian, keep_mask, salt_and_pepper
from dae.stacked import Dropout
from dae.steps import DAStep


def test_initial_weights_are_uniform_in_the_tutorial_interval_and_biases_zero():
    g = torch.Generator().manual_seed(0)
    m = DenoisingAutoencoder(784, 500, generator=g)
    r = 4 * math.sqrt(6 / (500 + 784))  # tutorial: 4 * sqrt(6 / (n_hidden + n_visible))
    assert m.W.shape == (784, 500)
    assert m.W.abs().max() <= r
    assert m.W.abs().max() > 0.99 * r  # fills the interval ...
    assert abs(m.W.std().item() - r / math.sqrt(3)) < 0.01 * r  # ... uniformly (std of U(-r, r))
    assert torch.count_nonzero(m.b) == 0 and torch.count_nonzero(m.b_prime) == 0


def test_tied_weights_have_no_decoder_matrix_and_untied_ones_do():
    tied = DenoisingAutoencoder(10, 4)
    untied = DenoisingAutoencoder(10, 4, tied=False)
    assert tied.W_prime is None and tied.decoder_weight is tied.W
    assert untied.W_prime.shape == (10, 4)
    assert sum(p.numel() for p in tied.parameters()) == 10 * 4 + 4 + 10
    assert sum(p.numel() for p in untied.parameters()) == 2 * 10 * 4 + 4 + 10


def test_a_da_built_on_existing_parameters_shares_them_and_leaves_them_as_they_were():
    W = nn.Parameter(torch.full((6, 3), 0.5))
    b = nn.Parameter(torch.full((3,), 0.25))
    m = DenoisingAutoencoder(6, 3, W=W, b=b)
    assert m.W is W and m.b is b
    assert torch.all(W == 0.5) and torch.all(b == 0.25)
    with torch.no_grad():
        m.W.add_(1.0)
    assert torch.all(W == 1.5)


def test_shared_parameters_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="W must have shape"):
        DenoisingAutoencoder(6, 3, W=nn.Parameter(torch.zeros(3, 6)))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.75])
def test_masking_zeroes_the_stated_fraction_and_leaves_the_rest_untouched(p):
    x = torch.rand(400, 500) + 1.0  # no zeros to begin with
    g = torch.Generator().manual_seed(1)
    x_tilde = mask(x, p, generator=g)
    zeroed = (x_tilde == 0).float().mean().item()
    sigma = math.sqrt(p * (1 - p) / x.numel())
    assert abs(zeroed - p) <= 5 * sigma + 1e-12
    kept = x_tilde != 0
    assert torch.equal(x_tilde[kept], x[kept])


@pytest.mark.parametrize("p", [0.1, 0.2, 0.3, 0.5, 0.75])
def test_every_lane_of_the_mask_bits_drops_at_the_stated_probability(p):
    # Four elements' bits come from one 64-bit number whose sign bit is always 0: each of the four
    # positions mod 4 must drop at drop_probability(p), which is p to 2^-15.
    q = drop_probability(p)
    assert p <= q < p + 2 ** -15 and (q * 2 ** 15).is_integer()
    dropped = 1.0 - keep_mask(torch.empty(4 * 250_000), p, torch.Generator().manual_seed(3))
    sigma = math.sqrt(q * (1 - q) / 250_000)
    for lane in range(4):
        assert abs(dropped[lane::4].mean().item() - q) <= 5 * sigma, lane
    assert set(dropped.unique().tolist()) <= {0.0, 1.0}


def test_mask_bits_are_the_same_drawn_at_once_or_in_pieces_of_four():
    # What lets the fast step draw a block of minibatches at once (numel a multiple of 4).
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    whole = keep_mask(torch.empty(6, 10), 0.3, g1)
    pieces = [keep_mask(torch.empty(2, 10), 0.3, g2), keep_mask(torch.empty(4, 10), 0.3, g2)]
    assert torch.equal(whole, torch.cat(pieces))
    assert torch.equal(g1.get_state(), g2.get_state())
    assert blocks_draw_alike("masking", 20) and not blocks_draw_alike("masking", 30)


def test_a_dropout_mask_has_mean_one_and_two_values():
    m = Dropout(0.3).mask(torch.empty(1000, 1000), torch.Generator().manual_seed(5))
    scale = 1 / (1 - drop_probability(0.3))
    values = m.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(scale)
    assert abs(m.mean().item() - 1.0) < 5 * math.sqrt(0.3 * 0.7 / 1e6) * scale


def test_masking_is_independent_across_inputs():
    # Each input is zeroed independently: the fraction zeroed per column and per row has the
    # binomial spread, and neighbouring inputs are not correlated.
    g = torch.Generator().manual_seed(2)
    z = (mask(torch.ones(2000, 300), 0.3, generator=g) == 0).float()
    assert abs(z.mean(0).std().item() - math.sqrt(0.3 * 0.7 / 2000)) < 0.003
    corr = torch.corrcoef(torch.stack([z[:, :-1].reshape(-1), z[:, 1:].reshape(-1)]))[0, 1]
    assert abs(corr.item()) < 0.01


def test_cross_entropy_matches_the_tutorial_formula_and_stays_finite_when_saturated():
    m = DenoisingAutoencoder(20, 7, generator=torch.Generator().manual_seed(3))
    x = torch.rand(5, 20, dtype=torch.float64)
    m = m.double()
    z = m.reconstruct(x)
    tutorial = -torch.sum(x * torch.log(z) + (1 - x) * torch.log(1 - z), dim=1)  # dA.py's L
    assert torch.allclose(m.reconstruction_error(x), tutorial)
    with torch.no_grad():
        m.b_prime.fill_(200.0)  # z rounds to 1: log(1 - z) would be -inf
    err = m.reconstruction_error(torch.zeros(2, 20, dtype=torch.float64))
    assert torch.all(torch.isfinite(err))
    assert torch.allclose(err, torch.full((2,), 20 * 200.0, dtype=torch.float64), rtol=0.02)


def test_squared_error_model_has_a_linear_decoder():
    m = DenoisingAutoencoder(5, 3, loss="squared-error", generator=torch.Generator().manual_seed(4))
    x = torch.randn(4, 5) * 3
    y = m.encode(x)
    assert torch.allclose(m.decode(y), y @ m.W.t() + m.b_prime)
    assert torch.allclose(m.reconstruction_error(x), ((m.decode(y) - x) ** 2).sum(1))


def test_loss_is_the_minibatch_mean_of_the_error_on_the_corrupted_input():
    m = DenoisingAutoencoder(12, 4, corruption_level=0.5, generator=torch.Generator().manual_seed(5))
    x = torch.rand(6, 12)
    loss = m.loss(x, generator=torch.Generator().manual_seed(9))
    x_tilde = mask(x, 0.5, generator=torch.Generator().manual_seed(9))
    a = m.decode_logits(m.encode(x_tilde))
    expected = F.binary_cross_entropy_with_logits(a, x, reduction="sum") / 6
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"corruption_level": 1.0}, "corruption_level"),
        ({"corruption_level": -0.1}, "corruption_level"),
        ({"loss": "hinge"}, "loss"),
        ({"activation": "softmax"}, "activation"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenoisingAutoencoder(4, 2, **kwargs)


def test_gaussian_noise_has_mean_zero_and_the_stated_standard_deviation():
    x = torch.rand(500, 400)
    noise = gaussian(x, 0.25, generator=torch.Generator().manual_seed(3)) - x
    assert abs(noise.mean().item()) < 5 * 0.25 / math.sqrt(x.numel())
    assert abs(noise.std().item() - 0.25) < 0.003


@pytest.mark.parametrize("nu", [0.1, 0.4])
def test_salt_and_pepper_sets_the_stated_fraction_to_0_or_1_in_equal_shares(nu):
    x = torch.rand(500, 400) * 0.8 + 0.1  # no 0s or 1s to begin with
    x_tilde = salt_and_pepper(x, nu, generator=torch.Generator().manual_seed(4))
    zeros, ones = (x_tilde == 0).float().mean().item(), (x_tilde == 1).float().mean().item()
    sigma = math.sqrt(nu * (1 - nu) / x.numel())
    assert abs(zeros + ones - nu) < 5 * sigma
    assert abs(zeros / (zeros + ones) - 0.5) < 5 * math.sqrt(0.25 / (nu * x.numel()))
    untouched = (x_tilde != 0) & (x_tilde != 1)
    assert torch.equal(x_tilde[untouched], x[untouched])


# Shapes (minibatches per block k, batch size B, inputs V): B x V a multiple of 16 and not, because
# torch's normal_ on the CPU fills 16 numbers at a time and redraws a ragged tail, so Gaussian noise
# drawn for a whole block is not the concatenation of the minibatches' draws unless B x V is.
FAST_STEP_BLOCKS = [(3, 8, 20), (4, 5, 30)]


@pytest.mark.parametrize("k, B, V", FAST_STEP_BLOCKS, ids=lambda v: str(v))
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("noise", NOISES)
def test_the_fast_step_draws_the_corruption_of_model_loss_over_a_block_of_minibatches(noise, tied, k, B, V):
    # The hand-written step corrupts a block of k >= 2 minibatches at once; its steps must be
    # autograd's on model.loss(xb, generator), minibatch after minibatch, from a generator in
    # the same state.  (Gaussian noise was once drawn into a strided view of the block's
    # buffer, so its numbers depended on the blocking and differed from model.corrupt's.)
    model = DenoisingAutoencoder(V, 7, corruption_level=0.3, noise=noise, tied=tied,
                                 generator=torch.Generator().manual_seed(0)).double()
    reference = copy.deepcopy(model)
    x = torch.rand(k * B, V, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lr = 0.1
    step = DAStep(model, B, block_steps=k)
    step.set_learning_rate(lr)
    with torch.no_grad():
        total = step((x,), torch.Generator().manual_seed(9))

    g = torch.Generator().manual_seed(9)
    costs = []
    for xb in x.split(B):
        reference.zero_grad()
        loss = reference.loss(xb, g)
        loss.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= lr * p.grad
        costs.append(loss.item() * B)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)
    assert total == pytest.approx(sum(costs), rel=1e-10)  # the step returns the block's summed cost


@pytest.mark.parametrize("noise", NOISES)
def test_corrupting_into_a_strided_view_gives_the_numbers_of_corrupt(noise):
    # The fast step writes x~ into the top half of a buffer that also holds the gradients.
    x = torch.rand(3, 8, 20)
    buffer = torch.zeros(3, 16, 20)
    corrupt(x, noise, 0.3, torch.Generator().manual_seed(5), out=buffer[:, :8])
    assert torch.equal(buffer[:, :8], corrupt(x, noise, 0.3, torch.Generator().manual_seed(5)))
    assert not buffer[:, 8:].any()


@pytest.mark.parametrize("noise", NOISES)
def test_every_noise_process_lowers_the_cost_with_the_fast_step(noise):
    m = DenoisingAutoencoder(20, 8, corruption_level=0.3, noise=noise, generator=torch.Generator().manual_seed(0))
    history = train(m, torch.rand(200, 20, generator=torch.Generator().manual_seed(1)), epochs=3, batch_size=10,
                    generator=0)
    assert history[-1].cost < history[0].cost


def test_a_model_built_from_its_config_has_that_config():
    config = DAConfig(n_hidden=6, corruption_level=0.2, noise="gaussian", loss="squared-error", activation="tanh",
                      tied=False, sparsity_target=0.1, sparsity_weight=0.0, contraction=0.5)
    m = DenoisingAutoencoder.from_config(9, config)
    assert m.config == config
    assert (m.n_visible, m.n_hidden, m.noise, m.activation, m.loss_name) == (9, 6, "gaussian", "tanh", "squared-error")
    assert m.W_prime is not None and m.contraction == 0.5
