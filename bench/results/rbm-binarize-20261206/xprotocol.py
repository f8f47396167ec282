"""The other test protocol's figure from the same AIS estimate of log Z: log Z belongs to the model, not to
the test set, so `deeptut eval --log-likelihood --binarize P` run once (its JSON: SRC) gives log Z, and the
mean test log-probability under the other binarisation Q is mean(-FE(test binarised by Q)) - that log Z
(mean -FE exact), with the same +-3 sigma interval carried through. Q's test images are made exactly as
train/loglik.py makes them (for stochastic: default_rng(BINARIZE_SEED), the training split drawn first).
Saves one AIS run per model on the loaded 2-core machine (about 6.5 min at one thread here).

    python xprotocol.py RUN_DIR SRC.json Q OUT.json"""
import json
import math
import sys
import time

import numpy as np
import torch

from deeptut.data.datasets import split_images
from deeptut.store.rundir import Run
from deeptut.train.ais import mean_log_probability
from deeptut.train.loglik import BINARIZE_SEED, binarization_note, binarize

torch.set_num_threads(1)
run_dir, src_path, other, out_path = sys.argv[1:5]
src = json.loads(open(src_path).read())
assert other in ("round", "stochastic") and other != src["binarize"], (other, src["binarize"])
t0 = time.perf_counter()
rbm = Run.open(run_dir).require_trait("samples", "the log-likelihood")
rng = np.random.default_rng(BINARIZE_SEED) if other == "stochastic" else None
binarize(split_images(None, "train", "mnist"), other, rng)  # drawn first, as loglik.py does
x_test = torch.from_numpy(binarize(split_images(None, "test", "mnist"), other, rng))
lp = mean_log_probability(rbm, x_test, src["log_z"])
neg_fe = lp + src["log_z"]
high = None if src["log_z_low"] is None else neg_fe - src["log_z_low"]
out = {**src, "test_log_probability": lp, "test_log_probability_low": neg_fe - src["log_z_high"],
       "test_log_probability_high": high, "n_test": int(x_test.shape[0]), "binarize": other,
       "binarization": binarization_note(other),
       "log_z_from": f"{src_path.rsplit('/', 1)[-1]} (the same AIS run, test set binarised {src['binarize']})",
       "seconds_this_script": time.perf_counter() - t0}
out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
open(out_path, "w").write(json.dumps(out, indent=2) + "\n")
print(f"{other}: mean test log-probability {lp:.4f} nats with log Z {src['log_z']:.4f} from {src_path}")
