"""Chapter "Contractive Auto-Encoders" (cA.py): dA's encoder and tied decoder, no corruption, and a penalty on
the squared Frobenius norm of the encoder's Jacobian.

    h = sigmoid(x W + b)                       get_hidden_values        x [n, n_visible], h [n, n_hidden]
    J[e, i, j] = dh_j / dx_i = h_j (1 - h_j) W_ij   get_jacobian        J [n, n_visible, n_hidden]
    z = sigmoid(h W.T + b')                    get_reconstructed_input
    L_rec[e]  = -sum_k [x_k log z_k + (1 - x_k) log(1 - z_k)]
    L_jacob   = sum(J ** 2) / n_batchsize      (one number for the whole minibatch)
    cost      = mean(L_rec) + contraction_level * L_jacob

Division: cA.py computes `T.sum(J ** 2) // self.n_batchsize`, a *floor* division. `floor_division=True`
reproduces it, value and gradient: Theano's floor division (IntDiv) has no gradient, so in the tutorial the
penalty changes the printed cost (rounded down) and nothing else; the tutorial's cA trains as a plain
autoencoder. torch's `div(rounding_mode="floor")` has a zero gradient too, so the steps match. The default,
true division, is the contractive autoencoder of Rifai et al. (2011). n_batchsize is fixed at construction,
as in the tutorial (a short last minibatch would still be divided by it; the tutorial drops that minibatch).

Initialisation as dA: numpy RandomState(123) and W ~ U(+-4 sqrt(6 / (n_hidden + n_visible))), biases zero;
cA.py has no Theano RandomStreams, so nothing is drawn before W.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deeptut.models.da import DEFAULT_INIT_SEED, cross_entropy_from_logits, tied_uniform, weights_and_biases


class cA(nn.Module):
    """Contractive autoencoder; `params` is the tutorial's [W, b, b_prime]."""

    def __init__(self, n_visible: int = 784, n_hidden: int = 100, n_batchsize: int = 1,
                 numpy_rng: np.random.RandomState | None = None, W: nn.Parameter | None = None,
                 bhid: nn.Parameter | None = None, bvis: nn.Parameter | None = None,
                 floor_division: bool = False) -> None:
        super().__init__()
        if n_visible < 1 or n_hidden < 1 or n_batchsize < 1:
            raise ValueError(f"cA: n_visible, n_hidden and n_batchsize must be >= 1 "
                             f"(got {n_visible}, {n_hidden}, {n_batchsize})")
        self.n_visible, self.n_hidden, self.n_batchsize = n_visible, n_hidden, n_batchsize
        self.floor_division = floor_division
        if numpy_rng is None:
            numpy_rng = np.random.RandomState(DEFAULT_INIT_SEED)
        # W [n_visible, n_hidden], b (hidden bias), b_prime (visible bias)
        self.W, self.b, self.b_prime = weights_and_biases("cA", n_visible, n_hidden, numpy_rng, tied_uniform, W,
                                                          bhid, bvis)

    @property
    def params(self) -> list[nn.Parameter]:
        return [self.W, self.b, self.b_prime]

    def get_hidden_values(self, input: torch.Tensor) -> torch.Tensor:
        """sigmoid(input W + b): [n, n_visible] -> [n, n_hidden]."""
        return torch.sigmoid(torch.addmm(self.b, input, self.W))

    def get_jacobian(self, hidden: torch.Tensor, W: torch.Tensor | None = None) -> torch.Tensor:
        """dh/dx per example: J[e, i, j] = h_j (1 - h_j) W_ij, [n, n_hidden] -> [n, n_visible, n_hidden].

        Memory n * n_visible * n_hidden floats (15.7 MB at the tutorial's 10 x 784 x 500); the cost below
        never builds it.
        """
        W = self.W if W is None else W
        return (hidden * (1 - hidden)).unsqueeze(1) * W.unsqueeze(0)

    def jacobian_sum_sq(self, hidden: torch.Tensor) -> torch.Tensor:
        """sum(J ** 2) over the minibatch without building J: sum_e sum_j (h_j (1 - h_j))^2 sum_i W_ij^2.
        [n, n_hidden] -> scalar."""
        return ((hidden * (1 - hidden)) ** 2 @ (self.W ** 2).sum(dim=0)).sum()

    def get_reconstructed_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """sigmoid(hidden W.T + b'): [n, n_hidden] -> [n, n_visible]."""
        return torch.sigmoid(torch.addmm(self.b_prime, hidden, self.W.t()))

    def costs(self, x: torch.Tensor, contraction_level: float = 0.1
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cost, mean(L_rec), L_jacob) for x [n, n_visible]; cost is what is minimised, the other two are
        what cA.py's training function returns (and prints: reconstruction cost, sqrt of L_jacob as the
        "jacobian norm")."""
        y = self.get_hidden_values(x)
        L_rec = cross_entropy_from_logits(x, torch.addmm(self.b_prime, y, self.W.t())).mean()
        sum_sq = self.jacobian_sum_sq(y)
        if self.floor_division:  # cA.py: T.sum(J ** 2) // self.n_batchsize (no gradient, see the module doc)
            L_jacob = torch.div(sum_sq, self.n_batchsize, rounding_mode="floor")
        else:
            L_jacob = sum_sq / self.n_batchsize
        return L_rec + contraction_level * L_jacob, L_rec, L_jacob

    def cost(self, x: torch.Tensor, contraction_level: float = 0.1) -> torch.Tensor:
        return self.costs(x, contraction_level)[0]

    def get_cost_updates(self, x: torch.Tensor, contraction_level: float, learning_rate: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step in place on W, b, b_prime; returns (mean(L_rec), L_jacob) before the update, the two
        numbers cA.py's train_ca returns."""
        cost, L_rec, L_jacob = self.costs(x, contraction_level)
        grads = torch.autograd.grad(cost, self.params)
        with torch.no_grad():
            for p, g in zip(self.params, grads):
                p.sub_(learning_rate * g)
        return L_rec.detach(), L_jacob.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction z of x: [n, n_visible] -> [n, n_visible]."""
        return self.get_reconstructed_input(self.get_hidden_values(x))


def tutorial_printed_values(costs: list[tuple[float, float]]) -> tuple[float, float]:
    """The two numbers cA.py prints after an epoch, computed as it computes them.

    `costs` is the epoch's list of (mean(L_rec), L_jacob), one pair per minibatch (train_ca's outputs).
    cA.py stacks them into c_array [n_batches, 2] and prints numpy.mean(c_array[0]) and
    numpy.mean(numpy.sqrt(c_array[1])): rows, not columns - the mean of the *first minibatch's*
    reconstruction cost and L_jacob, then the mean of the square roots of the *second minibatch's* two
    numbers. Reproduced for the tutorial preset's printed line; `epoch_means` gives what was meant.
    """
    if len(costs) < 2:
        raise ValueError(f"cA.py's printed line reads two minibatches (got {len(costs)})")
    c_array = np.vstack([np.asarray(c, dtype=np.float64) for c in costs])   # [n_batches, 2]
    return float(np.mean(c_array[0])), float(np.mean(np.sqrt(c_array[1])))


def epoch_means(costs: list[tuple[float, float]]) -> tuple[float, float]:
    """(mean reconstruction cost, mean Jacobian Frobenius norm sqrt(L_jacob)) over the epoch's minibatches."""
    c_array = np.asarray(costs, dtype=np.float64).reshape(-1, 2)
    return float(c_array[:, 0].mean()), float(np.sqrt(c_array[:, 1]).mean())

