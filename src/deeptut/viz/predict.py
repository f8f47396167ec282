"""Test-set predictions of a saved run: the run's best model (store.rundir.load_module) on the
test split of the run's dataset. Nothing is trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deeptut.errors import DataError
from deeptut.store.rundir import Run

TestData = tuple[np.ndarray, np.ndarray]


def _as_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def test_split(run: Run, data: Any = None) -> TestData:
    """`data` is None (the dataset's default location), a data directory, an object with a `.test`
    split (deeptut.data.datasets.Splits), or an (x, y) pair of test arrays."""
    from deeptut.data.datasets import image_rows, load_dataset, split_images

    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = image_rows(data[0]), data[1]
    else:
        if data is None or isinstance(data, (str, Path)):
            data = load_dataset(str(run.config.get("dataset", "mnist")), data)
        x = split_images(data, "test")
        y = getattr(data.test, "y", None)
        if y is None:
            raise DataError(f"no test labels in {type(data).__name__}")
    y = _as_numpy(y).reshape(-1).astype(np.int64, copy=False)
    if len(x) != len(y) or len(x) == 0:
        raise DataError(f"test data: {len(x)} images but {len(y)} labels")
    return x, y


def predict(run: Run, x: np.ndarray, batch: int = 2000) -> np.ndarray:
    """Predicted classes of the run's best model for the rows of x (raw pixels, as test_split gives them)."""
    import torch

    from deeptut.data.normalize import Normalizer
    from deeptut.store.rundir import saved_normalization

    model = run.load_module()
    model = model.to("cpu").eval()
    x = Normalizer.from_saved(*saved_normalization(run.path)).apply(x)  # the inputs it was trained on
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])))
            out.append(logits.argmax(dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.int64)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """counts[true, predicted]."""
    n = max(n_classes, int(y_true.max(initial=0)) + 1, int(y_pred.max(initial=0)) + 1)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm

