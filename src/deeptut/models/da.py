"""Chapter "Denoising Autoencoders (dA)" (dA.py): a tied-weight autoencoder trained to undo a masking noise.

    x~ = m * x,  m_i ~ Bernoulli(1 - corruption_level)   get_corrupted_input   x, x~ [n, n_visible]
    y  = sigmoid(x~ W + b)                                get_hidden_values     W [n_visible, n_hidden]
    z  = sigmoid(y W' + b'),  W' = W.T (tied weights)     get_reconstructed_input
    L  = -sum_k [x_k log z_k + (1 - x_k) log(1 - z_k)]    summed over the pixels, averaged over the minibatch

The reconstruction is compared with the *uncorrupted* x. Initialisation is the tutorial's: test_dA makes
`rng = numpy.random.RandomState(123)`, draws `rng.randint(2 ** 30)` to seed Theano's RandomStreams, then the
dA draws `W = rng.uniform(low=-4 * sqrt(6 / (n_hidden + n_visible)), high=+4 * sqrt(...),
size=(n_visible, n_hidden))` cast to float32; `b` (hidden bias, `bhid`) and `b_prime` (visible bias, `bvis`)
start at zero. W and b may be passed in, as SdA.py does to share them with a sigmoid `HiddenLayer`.

The corruption noise: the tutorial draws the mask with Theano's `RandomStreams.binomial`, whose stream we
cannot reproduce. Here it is drawn with a `torch.Generator` that the caller owns (and checkpoints); the
integer the tutorial would have used to seed RandomStreams is kept as `corruption_seed`, so the numpy
draw order (randint first, then W) is the tutorial's and the seed has a natural home.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_INIT_SEED = 123  # dA.py's test_dA: rng = numpy.random.RandomState(123)


def tied_uniform(rng: np.random.RandomState, n_visible: int, n_hidden: int) -> np.ndarray:
    """dA.py's / rbm.py's W: U(+-4 * sqrt(6 / (n_hidden + n_visible))) of shape [n_visible, n_hidden], float32.

    Note the bound is multiplied by 4 *before* the draw (mlp.py's HiddenLayer multiplies the drawn matrix by
    4 after it): the two agree to rounding only, so each chapter keeps its own form.
    """
    bound = 4 * np.sqrt(6.0 / (n_hidden + n_visible))
    return np.asarray(rng.uniform(low=-bound, high=bound, size=(n_visible, n_hidden)), dtype=np.float32)


def weights_and_biases(where: str, n_visible: int, n_hidden: int, numpy_rng: np.random.RandomState,
                       init: Callable[[np.random.RandomState, int, int], np.ndarray], W: nn.Parameter | None,
                       hidden_bias: nn.Parameter | None, visible_bias: nn.Parameter | None
                       ) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
    """(W [n_visible, n_hidden], hidden bias [n_hidden], visible bias [n_visible]) of a dA, cA or RBM: W drawn
    by `init` unless one is given to share (then nothing is drawn from numpy_rng), its shape checked; each
    bias the one given, else zeros."""
    if W is None:
        W = nn.Parameter(torch.from_numpy(init(numpy_rng, n_visible, n_hidden)))
    if tuple(W.shape) != (n_visible, n_hidden):
        raise ValueError(f"{where}: W has shape {tuple(W.shape)}, expected ({n_visible}, {n_hidden})")
    return (W, hidden_bias if hidden_bias is not None else nn.Parameter(torch.zeros(n_hidden)),
            visible_bias if visible_bias is not None else nn.Parameter(torch.zeros(n_visible)))


def cross_entropy_from_logits(x: torch.Tensor, pre_sigmoid_z: torch.Tensor) -> torch.Tensor:
    """-sum_k [x_k log z_k + (1 - x_k) log(1 - z_k)] per row, z = sigmoid(pre_sigmoid_z): [n, d] -> [n].

    Written through softplus, as Theano's graph optimiser rewrites log(sigmoid(.)), so a saturated unit
    gives a large finite cost instead of log(0) = -inf.
    """
    return F.binary_cross_entropy_with_logits(pre_sigmoid_z, x, reduction="none").sum(dim=1)


class dA(nn.Module):
    """Denoising autoencoder with tied weights; `params` (the tutorial's list) is [W, b, b_prime].

    numpy_rng: the tutorial's `numpy_rng` (a RandomState(123) when None). corruption_seed: the integer the
    tutorial would seed Theano's RandomStreams with; drawn from numpy_rng (before W, as in dA.py) when None.
    W [n_visible, n_hidden], bhid [n_hidden], bvis [n_visible]: existing Parameters to share (SdA.py passes
    the sigmoid layer's W and b); a shared W draws nothing from numpy_rng.
    """

    def __init__(self, n_visible: int = 784, n_hidden: int = 500, numpy_rng: np.random.RandomState | None = None,
                 corruption_seed: int | None = None, W: nn.Parameter | None = None,
                 bhid: nn.Parameter | None = None, bvis: nn.Parameter | None = None) -> None:
        super().__init__()
        if n_visible < 1 or n_hidden < 1:
            raise ValueError(f"dA: n_visible and n_hidden must be >= 1 (got {n_visible}, {n_hidden})")
        self.n_visible, self.n_hidden = n_visible, n_hidden
        if numpy_rng is None:
            numpy_rng = np.random.RandomState(DEFAULT_INIT_SEED)
        if corruption_seed is None:  # dA.py: theano_rng = RandomStreams(numpy_rng.randint(2 ** 30))
            corruption_seed = int(numpy_rng.randint(2 ** 30))
        self.corruption_seed = corruption_seed
        # W [n_visible, n_hidden], b (hidden bias), b_prime (visible bias)
        self.W, self.b, self.b_prime = weights_and_biases("dA", n_visible, n_hidden, numpy_rng, tied_uniform, W,
                                                          bhid, bvis)

    @property
    def params(self) -> list[nn.Parameter]:
        """The tutorial's `self.params = [self.W, self.b, self.b_prime]` (the order of its updates)."""
        return [self.W, self.b, self.b_prime]

    @property
    def W_prime(self) -> torch.Tensor:
        """The decoder's weights, W.T [n_hidden, n_visible]: tied, so they are a view, never a copy."""
        return self.W.t()

    def make_generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A torch Generator seeded with `corruption_seed` (what stands in for the tutorial's theano_rng)."""
        g = torch.Generator(device=device)
        g.manual_seed(self.corruption_seed)
        return g

    def get_corrupted_input(self, input: torch.Tensor, corruption_level: float,
                            generator: torch.Generator | None = None) -> torch.Tensor:
        """Keep each entry with probability 1 - corruption_level, zero it otherwise: [n, d] -> [n, d].

        A fresh mask every call (the tutorial's binomial(size=input.shape, n=1, p=1 - corruption_level)).
        At level 0 nothing is drawn and the input is returned as is (the tutorial draws a mask of ones).
        """
        if not 0.0 <= corruption_level <= 1.0:
            raise ValueError(f"corruption_level must be in [0, 1] (got {corruption_level})")
        if corruption_level == 0.0:
            return input
        keep = torch.rand(input.shape, generator=generator, device=input.device, dtype=input.dtype)
        return input * (keep < 1.0 - corruption_level).to(input.dtype)

    def get_hidden_values(self, input: torch.Tensor) -> torch.Tensor:
        """sigmoid(input W + b): [n, n_visible] -> [n, n_hidden]."""
        return torch.sigmoid(torch.addmm(self.b, input, self.W))

    def get_reconstructed_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """sigmoid(hidden W' + b'): [n, n_hidden] -> [n, n_visible]."""
        return torch.sigmoid(self.reconstruction_logits(hidden))

    def reconstruction_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden W' + b' before the sigmoid: [n, n_hidden] -> [n, n_visible]."""
        return torch.addmm(self.b_prime, hidden, self.W_prime)

    def cost(self, x: torch.Tensor, corruption_level: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The tutorial's cost: mean over the minibatch of the reconstruction cross-entropy of the
        uncorrupted x from the corrupted x~ (summed over pixels, in nats). x [n, n_visible] in [0, 1] ->
        scalar."""
        tilde_x = self.get_corrupted_input(x, corruption_level, generator)
        y = self.get_hidden_values(tilde_x)
        return cross_entropy_from_logits(x, self.reconstruction_logits(y)).mean()

    def get_cost_updates(self, x: torch.Tensor, corruption_level: float, learning_rate: float,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """One step of the tutorial's training function: cost, then `param -= learning_rate * grad` for
        W, b, b_prime, in place. Returns the cost (before the update, as a Theano function returns it)."""
        cost = self.cost(x, corruption_level, generator)
        grads = torch.autograd.grad(cost, self.params)
        with torch.no_grad():
            for p, g in zip(self.params, grads):
                p.sub_(learning_rate * g)
        return cost.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The uncorrupted reconstruction z of x: [n, n_visible] -> [n, n_visible]."""
        return self.get_reconstructed_input(self.get_hidden_values(x))
