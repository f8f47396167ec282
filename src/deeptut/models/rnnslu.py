"""rnnslu.py's Elman network for slot filling (chapter "Recurrent Neural Networks with Word Embeddings").

Each word is seen through a context window of `win` words centred on it (the sentence padded at both ends
with a PADDING index, the extra last row of the embeddings); the window's embeddings, concatenated, feed a
sigmoid recurrent layer, and a softmax over the slot tags reads every hidden state:

    x_t = [emb[w_{t-win//2}], ..., emb[w_{t+win//2}]]          [de * cs]
    h_t = sigmoid(x_t wx + h_{t-1} wh + bh),  h_{-1} = h0      [nh]
    p(y_t | sentence up to t) = softmax(h_t w + b)             [nc]

The parameters are the tutorial's, under its names: emb [ne + 1, de], wx [de * cs, nh], wh [nh, nh],
w [nh, nc], bh [nh], b [nc], h0 [nh] (the initial state is learned too). Initialisation as RNNSLU.__init__
after `numpy.random.seed(345)`: emb, wx, wh, w drawn in that order as 0.2 * uniform(-1, 1) (the draw cast to
float32 first, then scaled); bh, b, h0 zeros.

The chapter trains on one sentence at a time (`sentence_nll`: the mean over its words of -log p of the
true tag) and then puts every embedding back on the unit sphere (`normalize`). `forward` here also takes a
batch of sentences padded at the end with the PADDING index (the fast preset): a padded step comes after
every real step of its sentence and the windows see PADDING there as they do alone, so it changes none of
them, and the mask leaves it out of the cost.
(The tutorial's code has the Elman network only; the Jordan variant lives in the is13 repository it links.)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DEFAULT_INIT_SEED = 345  # rnnslu.py: numpy.random.seed(param['seed']) with seed 345


def context_windows(words: torch.Tensor, win: int, pad: int) -> torch.Tensor:
    """contextwin: [T] word indices -> [T, win], each row the window around a word, `pad` beyond the ends
    (the tutorial's -1, i.e. emb's last row). Works on [B, T] too (-> [B, T, win]), padding each row."""
    half = win // 2
    padded = nn.functional.pad(words, (half, half), value=pad)  # [..., T + win - 1]
    return padded.unfold(-1, win, 1)  # [..., T, win]


class ElmanSLU(nn.Module):
    def __init__(self, n_words: int, n_classes: int, emb_dimension: int = 50, nhidden: int = 200,
                 win: int = 7, init_seed: int | None = DEFAULT_INIT_SEED) -> None:
        super().__init__()
        if win < 1 or win % 2 != 1:
            raise ValueError(f"win must be odd and >= 1, got {win}")
        self.n_words, self.n_classes, self.de, self.nh, self.cs = n_words, n_classes, emb_dimension, nhidden, win
        rng = np.random.RandomState(DEFAULT_INIT_SEED if init_seed is None else init_seed)

        def draw(*shape: int) -> nn.Parameter:  # 0.2 * uniform(-1, 1).astype(float32), in float32
            return nn.Parameter(torch.from_numpy(rng.uniform(-1.0, 1.0, shape).astype(np.float32)
                                                 * np.float32(0.2)))

        self.emb = draw(n_words + 1, emb_dimension)  # the last row is PADDING
        self.wx = draw(emb_dimension * win, nhidden)
        self.wh = draw(nhidden, nhidden)
        self.w = draw(nhidden, n_classes)
        self.bh = nn.Parameter(torch.zeros(nhidden))
        self.b = nn.Parameter(torch.zeros(n_classes))
        self.h0 = nn.Parameter(torch.zeros(nhidden))

    @property
    def pad(self) -> int:
        return self.n_words

    def windows(self, words: torch.Tensor) -> torch.Tensor:
        return context_windows(words, self.cs, self.pad)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        """Tag scores (before the softmax): words [T] -> [T, nc], or a padded batch [B, T] -> [B, T, nc]."""
        idxs = self.windows(words)  # [..., T, cs]
        x = self.emb[idxs].flatten(-2)  # [..., T, de * cs]
        a = x @ self.wx + self.bh  # [..., T, nh]: the input part of every step at once
        h = self.h0.expand(*a.shape[:-2], self.nh)  # [..., nh]
        hs = []
        for t in range(a.shape[-2]):
            h = torch.sigmoid(a[..., t, :] + h @ self.wh)
            hs.append(h)
        return torch.stack(hs, -2) @ self.w + self.b  # [..., T, nc]

    def sentence_nll(self, words: torch.Tensor, labels: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
        """The chapter's cost: -mean_t log p(y_t) of one sentence ([T]); of a padded batch ([B, T], mask
        [B, T] 1.0 on words), the mean over the sentences of each one's mean."""
        logp = torch.log_softmax(self(words), -1)  # [..., T, nc]
        nll = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # [..., T]
        if mask is None:
            return nll.mean()
        return ((nll * mask).sum(-1) / mask.sum(-1)).mean()

    @torch.no_grad()
    def sentence_gradients(self, words: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(sentence_nll, its gradients with respect to the parameters in order) of one sentence ([T]), by
        hand: backpropagation through time, what Theano's T.grad derives for the chapter's scan. The same
        numbers as autograd on `sentence_nll` up to float32 rounding (tests/test_rnnslu.py), with a few
        operations per word instead of autograd's graph (the chapter's one-sentence updates are all
        overhead at these sizes)."""
        T, nh = words.shape[0], self.nh
        idxs = self.windows(words)  # [T, cs]
        x = self.emb[idxs].reshape(T, -1)  # [T, de * cs]
        a = torch.addmm(self.bh, x, self.wx)  # [T, nh]
        h_all = torch.empty(T + 1, nh, dtype=a.dtype, device=a.device)  # h_{-1} = h0, then h_0 .. h_{T-1}
        h_all[0] = self.h0
        wh_t = self.wh.t()
        for t in range(T):
            torch.sigmoid(torch.addmv(a[t], wh_t, h_all[t]), out=h_all[t + 1])
        h = h_all[1:]  # [T, nh]
        logits = torch.addmm(self.b, h, self.w)  # [T, nc]
        p = torch.softmax(logits, 1)
        rows = torch.arange(T, device=words.device)
        cost = -torch.log(p[rows, labels]).mean()
        d_logits = p
        d_logits[rows, labels] -= 1.0
        d_logits /= T  # [T, nc]: d cost / d logits
        g_w = h.t() @ d_logits
        g_b = d_logits.sum(0)
        d_h = d_logits @ self.w.t()  # [T, nh], from the outputs
        slope = h * (1.0 - h)  # sigmoid'
        d_z = torch.empty_like(d_h)  # [T, nh]: d cost / d (pre-activation) at each step
        carry = torch.zeros(nh, dtype=a.dtype, device=a.device)  # from step t + 1 through wh
        for t in range(T - 1, -1, -1):
            torch.mul(d_h[t] + carry, slope[t], out=d_z[t])
            carry = torch.mv(self.wh, d_z[t])
        g_h0 = carry
        g_wh = h_all[:-1].t() @ d_z
        g_bh = d_z.sum(0)
        g_wx = x.t() @ d_z
        g_emb = torch.zeros_like(self.emb)
        g_emb.index_add_(0, idxs.reshape(-1), (d_z @ self.wx.t()).reshape(T * self.cs, self.de))
        return cost, [g_emb, g_wx, g_wh, g_w, g_bh, g_b, g_h0]

    @torch.no_grad()
    def classify(self, words: torch.Tensor) -> torch.Tensor:
        """y_pred: the most probable tag of every word ([T] -> [T], [B, T] -> [B, T])."""
        return self(words).argmax(-1)

    @torch.no_grad()
    def normalize(self) -> None:
        """Every embedding (PADDING's too) scaled to unit length, as after each of the tutorial's updates."""
        self.emb.div_(self.emb.pow(2).sum(1, keepdim=True).sqrt())

    def weights(self) -> list[torch.Tensor]:
        return [self.emb, self.wx, self.wh, self.w]
