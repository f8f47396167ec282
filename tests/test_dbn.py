"""The DBN chapter: DBN.py's draw order, RBMs sharing W and hidden bias with the sigmoid layers, layer inputs,
and greedy CD-1 pre-training then fine-tuning on tiny synthetic data."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deeptut.models.dbn import DBN


pytestmark = pytest.mark.usefixtures("one_thread")


def test_initialisation_draw_order():
    sizes = (30, 20)
    m = DBN(n_ins=40, hidden_layers_sizes=sizes, n_outs=3)
    rng = np.random.RandomState(123)           # DBN.py's test_DBN: numpy_rng = RandomState(123)
    assert m.sample_seed == rng.randint(2 ** 30)  # MRG_RandomStreams(numpy_rng.randint(2 ** 30)) first
    for layer, (n_in, n_out) in zip(m.sigmoid_layers, zip((40,) + sizes[:-1], sizes)):
        bound = np.sqrt(6.0 / (n_in + n_out))
        expected = np.asarray(rng.uniform(low=-bound, high=bound, size=(n_in, n_out)), dtype=np.float32) * 4
        assert np.array_equal(layer.W.detach().numpy(), expected)
        assert torch.count_nonzero(layer.b) == 0
    assert torch.count_nonzero(m.logLayer.W) == 0 and all(torch.count_nonzero(v) == 0 for v in m.vbias)


def test_rbms_share_parameters_and_state_dict_holds_each_once():
    m = DBN(n_ins=12, hidden_layers_sizes=(8, 6), n_outs=3)
    for rbm, layer, vb in zip(m.rbm_layers, m.sigmoid_layers, m.vbias):
        assert rbm.W is layer.W and rbm.hbias is layer.b and rbm.vbias is vb
        assert rbm.sample_seed == m.sample_seed
    assert sorted(m.state_dict()) == ["logLayer.W", "logLayer.b", "sigmoid_layers.0.W", "sigmoid_layers.0.b",
                                      "sigmoid_layers.1.W", "sigmoid_layers.1.b", "vbias.0", "vbias.1"]
    x = torch.rand(4, 12)
    torch.testing.assert_close(m.layer_input(1, x), m.rbm_layers[0].propup(x)[1])  # mean-field, not a sample
    torch.testing.assert_close(m(x), m.logLayer(m.layer_input(2, x)))
    with pytest.raises(ValueError, match="hidden_layers_sizes"):
        DBN(hidden_layers_sizes=(10, -1))


def test_greedy_cd_pretraining_then_finetuning_on_tiny_data():
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(2, 16, generator=g) < 0.5).float()
    y = torch.arange(200) % 2
    x = (protos[y] - (torch.rand(200, 16, generator=g) < 0.1).float()).abs()
    m = DBN(n_ins=16, hidden_layers_sizes=(12, 8), n_outs=2)
    gen = torch.Generator().manual_seed(m.sample_seed)
    for k in range(2):
        rbm = m.rbm_layers[k]
        layer_in = m.layer_input(k, x).detach()
        W_lower = [layer.W.detach().clone() for layer in m.sigmoid_layers[:k]]
        costs = []
        for epoch in range(20):
            costs.append(np.mean([rbm.get_cost_updates(layer_in[i:i + 10], 0.1, None, 1, gen)[0].item()
                                  for i in range(0, 200, 10)]))
        assert costs[-1] > costs[0]  # the reconstruction log-likelihood (the tutorial's sign) rises
        assert all(torch.equal(a, b.W) for a, b in zip(W_lower, m.sigmoid_layers[:k]))
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    for _ in range(20):
        for i in range(0, 200, 10):
            opt.zero_grad()
            F.cross_entropy(m(x[i:i + 10]), y[i:i + 10]).backward()
            opt.step()
    assert (m(x).argmax(dim=1) == y).float().mean() > 0.95
