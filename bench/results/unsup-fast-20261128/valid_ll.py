"""Validation log-likelihood of an RBM run: mean(-FE(valid)) - log Z, log Z from the run's
log_likelihood.json (AIS; the split does not enter log Z). Selection uses this, never the test figure."""
import json, sys
from pathlib import Path
import torch
from deeptut.store.rundir import Run
from deeptut.store.runread import require_rbm, split_images
from deeptut.train.loglik import binarize
from deeptut.train.ais import mean_log_probability
run_dir = Path(sys.argv[1])
r = json.loads((run_dir / "log_likelihood.json").read_text())
run = Run.open(run_dir)
rbm = require_rbm(run, "validation LL")
xv = torch.from_numpy(binarize(split_images(run, None, "valid")))
v = mean_log_probability(rbm, xv, r["log_z"])
print(json.dumps({"run": run_dir.name, "log_z": r["log_z"], "log_z_low": r["log_z_low"], "log_z_high": r["log_z_high"],
                  "valid_log_probability": v, "valid_low": v - (r["log_z_high"] - r["log_z"]),
                  "ais_steps": r["ais_steps"], "ais_seconds": r["seconds"]}))
