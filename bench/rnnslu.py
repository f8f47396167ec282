"""One training epoch of the RNN-SLU chapter's network, one sentence per update as rnnslu.py: deeptut's step
(train/rnnslu.py sgd_update: the model's hand-derived gradients, then the embedding normalisation) against
a plain PyTorch loop of the same network (autograd on the sentence's mean NLL, the same SGD and
normalisation), and deeptut's padded minibatches (the rnnslu-fast preset's batch of 16), on the generated
slot-filling corpus (data/slots.py, 3,982 training sentences). The same initial parameters for all three;
the printed costs say they compute the same thing (the first two agree to float32 rounding).

    .venv/bin/python bench/rnnslu.py --threads 1 --out bench/results/rnnslu-20261206/bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time

import numpy as np
import torch

from deeptut.data import slots
from deeptut.models.rnnslu import ElmanSLU
from deeptut.train import rnnslu

LR = 0.0970806646812754


def plain_epoch(model: ElmanSLU, corpus, order: np.ndarray, lr: float) -> float:
    """What one would write with PyTorch alone: forward over the sentence, autograd, SGD, normalise."""
    params = list(model.parameters())
    total = 0.0
    for i in order:
        w, t = corpus.train.sentence(int(i))
        words, labels = torch.from_numpy(w), torch.from_numpy(t)
        idxs = torch.nn.functional.pad(words, (model.cs // 2, model.cs // 2), value=model.pad).unfold(0, model.cs, 1)
        x = model.emb[idxs].reshape(len(w), -1)
        h = model.h0
        hs = []
        for x_t in x:
            h = torch.sigmoid(x_t @ model.wx + h @ model.wh + model.bh)
            hs.append(h)
        logp = torch.log_softmax(torch.stack(hs) @ model.w + model.b, 1)
        cost = -logp[torch.arange(len(w)), labels].mean()
        grads = torch.autograd.grad(cost, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g
            model.emb /= model.emb.pow(2).sum(1, keepdim=True).sqrt()
        total += float(cost.detach())
    return total / len(order)


def deeptut_epoch(model: ElmanSLU, corpus, order: np.ndarray, lr: float, batch: int) -> float:
    total, n = 0.0, 0
    for a in range(0, len(order), batch):
        idx = order[a:a + batch]
        if batch == 1:
            w, t = corpus.train.sentence(int(idx[0]))
            cost = rnnslu.sgd_update(model, torch.from_numpy(w), torch.from_numpy(t), lr)
        else:
            w, t, m = rnnslu.padded(corpus.train, idx, model.pad, torch.device("cpu"))
            cost = rnnslu.sgd_update(model, w, t, lr, m)
        total, n = total + float(cost), n + 1
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    corpus = slots.generate()
    order = rnnslu.epoch_order(len(corpus.train), 345, 0)
    make = lambda: ElmanSLU(corpus.n_words, corpus.n_classes, 50, 200, 7, 345)  # noqa: E731
    rows = []
    for name, run in (("deeptut, one sentence per update (hand BPTT)", lambda m: deeptut_epoch(m, corpus, order, LR, 1)),
                      ("plain PyTorch loop, one sentence per update (autograd)", lambda m: plain_epoch(m, corpus, order, LR)),
                      ("deeptut rnnslu-fast, 16 padded sentences per update", lambda m: deeptut_epoch(m, corpus, order, 1.6, 16))):
        model = make()
        t = time.perf_counter()
        cost = run(model)
        rows.append({"what": name, "epoch_s": round(time.perf_counter() - t, 3), "mean_train_cost": cost})
        print(f"{rows[-1]['epoch_s']:8.2f} s  cost {cost:.6f}  {name}", flush=True)
    load = open("/proc/loadavg").read().split()[:3]
    cpu = [ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True).stdout
           .splitlines() if ln.startswith("Model name")]
    record = {"rows": rows, "n_sentences": len(order), "threads": args.threads, "torch": torch.__version__,
              "cpu": cpu[0] if cpu else platform.processor(), "load_after": load,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(record))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
