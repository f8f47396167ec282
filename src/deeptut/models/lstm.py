"""lstm.py's sentiment classifier: word embeddings, one LSTM layer written as the chapter writes it, the mean
of its outputs over each sequence's valid steps, dropout, and a softmax classifier.

The cell is the chapter's `lstm_layer._step`, one time step at a time, gates in its order (input, forget,
output, candidate) and its mask rule: on a padded step (mask 0) the new cell and hidden states are thrown
away, `c = m * c + (1 - m) * c_`, `h = m * h + (1 - m) * h_`, so h and c stay exactly what they were (0 * x
+ 1 * c_ is c_ to the bit). The outputs are summed step by step with the mask (a padded step adds an exact
zero) and divided by the number of valid steps: a sequence padded to any width gives the same result as
unpadded (tests/test_lstm.py).

Dropout is the chapter's `dropout_layer`: in training the pooled vector is multiplied by a fresh 0/1 draw
(p = 0.5, not rescaled), in evaluation by 0.5. The cost is the chapter's `-log(p[y] + 1e-8)`, averaged.

Row-by-row MNIST (`inputs = "rows"`) uses the same model with a linear projection of each row's pixels
(Wx, bx: n_in -> dim_proj) in place of the embedding lookup: deeptut's, the chapter has only words.

Initialisation, in the chapter's order from one numpy RandomState (lstm.py seeds numpy's global generator
with 123 and draws the validation split from it first; here the model has its own, `init_seed`):
Wemb = 0.01 * rand(n_words, dim_proj) (uniform: lstm.py's variable is called `randn` but calls `rand`),
lstm_W and lstm_U each four orthogonal matrices (the left singular vectors of randn(dim, dim)) side by
side, lstm_b = 0, U = 0.01 * randn(dim_proj, n_out), b = 0. The row projection Wx is drawn first, as
randn(n_in, dim_proj) / sqrt(n_in), bx = 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DEFAULT_INIT_SEED = 123  # lstm.py's SEED
INPUTS = ("tokens", "rows")  # word indices (embedding) | feature vectors (linear projection)
LOG_OFFSET = 1e-8  # lstm.py: -log(pred[y] + 1e-8)


def ortho_weight(rng: np.random.RandomState, ndim: int) -> np.ndarray:
    """lstm.py's ortho_weight: the left singular vectors of a Gaussian matrix (an orthogonal matrix)."""
    w = rng.randn(ndim, ndim)
    u, _s, _v = np.linalg.svd(w)
    return u.astype(np.float32)


class LSTMClassifier(nn.Module):
    def __init__(self, n_words: int = 10_000, dim_proj: int = 128, n_out: int = 2, use_dropout: bool = True,
                 inputs: str = "tokens", n_in: int = 28, init_seed: int | None = None) -> None:
        super().__init__()
        if inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {', '.join(INPUTS)}; got {inputs!r}")
        self.inputs, self.dim_proj, self.n_out, self.use_dropout = inputs, dim_proj, n_out, use_dropout
        rng = np.random.RandomState(DEFAULT_INIT_SEED if init_seed is None else init_seed)

        def param(a: np.ndarray) -> nn.Parameter:
            return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, np.float32)))

        if inputs == "tokens":
            self.Wemb = param(0.01 * rng.rand(n_words, dim_proj))  # [n_words, dim_proj]
        else:
            self.Wx = param(rng.randn(n_in, dim_proj) / np.sqrt(n_in))  # [n_in, dim_proj]
            self.bx = param(np.zeros(dim_proj))  # [dim_proj]
        self.lstm_W = param(np.concatenate([ortho_weight(rng, dim_proj) for _ in range(4)], axis=1))  # [d, 4d]
        self.lstm_U = param(np.concatenate([ortho_weight(rng, dim_proj) for _ in range(4)], axis=1))  # [d, 4d]
        self.lstm_b = param(np.zeros(4 * dim_proj))  # [4d]: gates i, f, o, candidate
        self.U = param(0.01 * rng.randn(dim_proj, n_out))  # [d, n_out]
        self.b = param(np.zeros(n_out))  # [n_out]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, T] token indices or [n, T, n_in] features -> [n, T, dim_proj]."""
        if self.inputs == "tokens":
            return self.Wemb[x]
        return x @ self.Wx + self.bx

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The mean of the LSTM's hidden states over each sequence's valid steps: [n, dim_proj].
        x [n, T] (or [n, T, n_in]), mask float32 [n, T] (1 on a valid step, 0 on padding)."""
        d = self.dim_proj
        state_below = self.project(x) @ self.lstm_W + self.lstm_b  # [n, T, 4d]: lstm_layer's x_ for every step
        n, steps = mask.shape
        h = state_below.new_zeros(n, d)  # [n, d]
        c = state_below.new_zeros(n, d)  # [n, d]
        total = state_below.new_zeros(n, d)  # [n, d]: sum of h over valid steps
        valid = mask > 0  # [n, T] bool
        # one tensor per step (unbind: one gather in the backward pass, not a zeroed [n, T, 4d] per step)
        x_steps = state_below.unbind(dim=1)  # T x [n, 4d]
        for t in range(steps):
            m, keep = mask[:, t, None], valid[:, t, None]  # [n, 1]
            preact = torch.addmm(x_steps[t], h, self.lstm_U)  # [n, 4d]: h_ U + x_
            gates, cand = preact.split([3 * d, d], dim=1)
            i, f, o = torch.sigmoid(gates).chunk(3, dim=1)  # input, forget, output gates [n, d] each
            cand = torch.tanh(cand)  # [n, d]
            c_new = torch.addcmul(f * c, i, cand)  # f * c_ + i * c~
            h_new = o * torch.tanh(c_new)
            # lstm.py's m * new + (1 - m) * old: with m 0 or 1 exactly the selection below
            c = torch.where(keep, c_new, c)  # a padded step keeps c
            h = torch.where(keep, h_new, h)  # ... and h
            total = torch.addcmul(total, h, m)  # + h * m: a padded step adds an exact zero
        return total / mask.sum(dim=1, keepdim=True)  # [n, d]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits [n, n_out] (the softmax's input; `cost` and argmax use them)."""
        proj = self.encode(x, mask)
        if self.use_dropout:
            if self.training:
                proj = proj * torch.bernoulli(torch.full_like(proj, 0.5))  # dropout_layer, use_noise = 1
            else:
                proj = proj * 0.5  # use_noise = 0
        return proj @ self.U + self.b

    def cost(self, logits: torch.Tensor, y: torch.Tensor, decay_c: float = 0.0) -> torch.Tensor:
        """lstm.py's cost: -log(softmax[y] + 1e-8) averaged over the minibatch, plus decay_c * sum(U^2)."""
        pred = torch.softmax(logits, dim=1)  # [n, n_out]
        nll = -torch.log(pred[torch.arange(len(y), device=y.device), y] + LOG_OFFSET).mean()
        if decay_c > 0.0:
            nll = nll + decay_c * (self.U ** 2).sum()
        return nll

    def weights(self) -> list[torch.Tensor]:
        return [self.lstm_W, self.lstm_U, self.U]
