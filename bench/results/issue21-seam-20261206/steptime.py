import time, torch, numpy as np, sys
from deeptut import config
from deeptut.accel import make_train_step
from deeptut.models import build_model
cfg = config.resolve("mlp", overrides={"device": "cpu", "threads": 1})
torch.set_num_threads(2)
model = build_model(cfg.model_args(), cfg.init_seed)
step = make_train_step(model, cfg, torch.device("cpu"))
x = torch.rand(20, 784); y = torch.randint(0, 10, (20,))
for _ in range(200): step(x, y, 0.01)
best = []
for r in range(5):
    t = time.perf_counter()
    for _ in range(1000): step(x, y, 0.01)
    best.append((time.perf_counter() - t))
print(sys.argv[1], type(step).__name__, "%.3f ms" % (min(best)), "median %.3f" % sorted(best)[2])
