"""The SdA chapter: draw order of SdA.py, the dAs sharing W and b with the sigmoid layers, layer inputs, and
greedy pre-training then fine-tuning on tiny synthetic data."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deeptut.models.sda import SdA


pytestmark = pytest.mark.usefixtures("one_thread")


def test_initialisation_draw_order_and_bounds():
    sizes = (30, 20, 10)
    m = SdA(n_ins=40, hidden_layers_sizes=sizes, n_outs=3)
    rng = np.random.RandomState(89677)       # SdA.py: numpy_rng = RandomState(89677)
    assert m.corruption_seed == rng.randint(2 ** 30)  # RandomStreams(numpy_rng.randint(2 ** 30)) comes first
    for layer, (n_in, n_out) in zip(m.sigmoid_layers, zip((40,) + sizes[:-1], sizes)):
        bound = np.sqrt(6.0 / (n_in + n_out))
        expected = np.asarray(rng.uniform(low=-bound, high=bound, size=(n_in, n_out)), dtype=np.float32) * 4
        assert np.array_equal(layer.W.detach().numpy(), expected)   # HiddenLayer's x4 for sigmoid
        assert layer.W.abs().max().item() <= 4 * bound
        assert torch.count_nonzero(layer.b) == 0
    assert torch.count_nonzero(m.logLayer.W) == 0 and torch.count_nonzero(m.logLayer.b) == 0
    assert all(torch.count_nonzero(b) == 0 for b in m.b_prime)


def test_dAs_share_W_and_hidden_bias_and_each_tensor_is_saved_once():
    m = SdA(n_ins=12, hidden_layers_sizes=(8, 6), n_outs=3)
    for da, layer, bp in zip(m.dA_layers, m.sigmoid_layers, m.b_prime):
        assert da.W is layer.W and da.b is layer.b and da.b_prime is bp
        assert da.corruption_seed == m.corruption_seed
    assert sorted(m.state_dict()) == ["b_prime.0", "b_prime.1", "logLayer.W", "logLayer.b",
                                      "sigmoid_layers.0.W", "sigmoid_layers.0.b",
                                      "sigmoid_layers.1.W", "sigmoid_layers.1.b"]
    m = m.double()  # conversions keep the sharing (parameters are converted in place)
    assert m.dA_layers[1].W is m.sigmoid_layers[1].W and m.dA_layers[1].W.dtype == torch.float64
    assert len(m.finetune_parameters()) == 6 and len(m.weights()) == 3
    with pytest.raises(ValueError, match="hidden_layers_sizes"):
        SdA(hidden_layers_sizes=(0,))
    with pytest.raises(ValueError, match="hidden_layers_sizes"):
        SdA(hidden_layers_sizes=())


def test_layer_input_and_forward():
    m = SdA(n_ins=12, hidden_layers_sizes=(8, 6), n_outs=3)
    with torch.no_grad():
        m.logLayer.W.normal_()
    x = torch.rand(5, 12)
    h1 = torch.sigmoid(x @ m.sigmoid_layers[0].W + m.sigmoid_layers[0].b)
    h2 = torch.sigmoid(h1 @ m.sigmoid_layers[1].W + m.sigmoid_layers[1].b)
    assert torch.equal(m.layer_input(0, x), x)
    torch.testing.assert_close(m.layer_input(1, x), h1)
    torch.testing.assert_close(m.layer_input(2, x), h2)
    torch.testing.assert_close(m(x), h2 @ m.logLayer.W + m.logLayer.b)
    torch.testing.assert_close(m.p_y_given_x(x).sum(dim=1), torch.ones(5))
    # the dA of layer 1 sees the uncorrupted output of layer 0 as its visible units
    torch.testing.assert_close(m.dA_layers[1].get_hidden_values(m.layer_input(1, x)), h2)
    with pytest.raises(ValueError, match="k must be"):
        m.layer_input(3, x)


def test_greedy_pretraining_then_finetuning_on_tiny_data():
    """Two prototypes of 16 bits, flipped at random; each dA's cost falls while it trains, layer 1's
    training leaves layer 0 alone, and fine-tuning (SGD on the NLL of the logits) separates the classes."""
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(2, 16, generator=g) < 0.5).float()
    y = torch.arange(200) % 2
    flips = (torch.rand(200, 16, generator=g) < 0.1).float()
    x = (protos[y] - flips).abs()
    m = SdA(n_ins=16, hidden_layers_sizes=(12, 8), n_outs=2)
    gen = torch.Generator().manual_seed(m.corruption_seed)
    for k, level in enumerate((0.1, 0.2)):
        W0_before = m.sigmoid_layers[0].W.detach().clone()
        layer_in = m.layer_input(k, x).detach()      # computed once for the layer: the layers below are fixed
        first = last = None
        for epoch in range(30):
            costs = [m.dA_layers[k].get_cost_updates(layer_in[i:i + 10], level, 0.1, gen).item()
                     for i in range(0, 200, 10)]
            first = np.mean(costs) if first is None else first
            last = np.mean(costs)
        assert last < first
        if k == 1:
            assert torch.equal(m.sigmoid_layers[0].W, W0_before)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    for _ in range(30):
        for i in range(0, 200, 10):
            opt.zero_grad()
            F.cross_entropy(m(x[i:i + 10]), y[i:i + 10]).backward()
            opt.step()
    assert all(bp.grad is None for bp in m.b_prime)  # fine-tuning leaves the dAs' visible biases alone
    assert (m(x).argmax(dim=1) == y).float().mean() > 0.95
