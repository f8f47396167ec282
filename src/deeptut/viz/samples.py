"""`write_samples`: rbm.py's samples.png from a saved RBM run (`deeptut sample RUN_DIR`, and the end of an rbm
run). Nothing is trained; the model is read from RUN_DIR/best.safetensors.

rbm.py, after training: 20 persistent chains start from 20 consecutive test digits at an index its rng draws
(`tutorial_test_idx`); 10 times, 1,000 Gibbs steps v -> h -> v are run and the last step's mean-field
visible activations are kept; each is drawn as one row of 20 tiles of 28 x 28, 1 pixel apart:

    image_data = numpy.zeros((29 * n_samples + 1, 29 * n_chains - 1), dtype='uint8')
    image_data[29 * idx:29 * idx + 28, :] = tile_raster_images(X=vis_mf, img_shape=(28, 28),
                                                               tile_shape=(1, n_chains), tile_spacing=(1, 1))

The picture here is that array, pixel for pixel (291 x 579 at the defaults, no upscaling). The Gibbs noise
comes from a torch Generator: the RBM's `sample_seed` (what seeded the tutorial's theano_rng) by default,
`seed` when given, so the same run and seed give the same picture.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from deeptut.errors import ConfigError, DataError
from deeptut.store import files
from deeptut.store.rundir import Run
from deeptut.viz.tiles import tile_raster_images

SAMPLES_PNG = "samples.png"
SAMPLES_NPY = "samples.npy"    # float32 [n_samples, n_chains, n_visible]: the mean-field activations drawn
SAMPLES_JSON = "samples.json"  # how they were drawn (seed, test_idx, ...)


def samples_picture(samples: np.ndarray, img_shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """rbm.py's image_data: samples [n_samples, n_chains, n_visible] -> uint8
    [(h + 1) * n_samples + 1, (w + 1) * n_chains - 1], row s = tile_raster_images of samples[s]."""
    n_samples, n_chains, _ = samples.shape
    h, w = img_shape
    image = np.zeros(((h + 1) * n_samples + 1, (w + 1) * n_chains - 1), dtype=np.uint8)
    for idx in range(n_samples):
        image[(h + 1) * idx:(h + 1) * idx + h, :] = tile_raster_images(
            samples[idx], img_shape=img_shape, tile_shape=(1, n_chains), tile_spacing=(1, 1))
    return image


def draw_samples(run_dir: str | Path, data: Any = None, *, seed: int | None = None, n_chains: int = 20,
                 n_samples: int = 10, plot_every: int = 1000, test_idx: int | None = None,
                 device: str = "cpu") -> tuple[np.ndarray, dict[str, Any]]:
    """(samples [n_samples, n_chains, n_visible] float32, how they were drawn) for an rbm run."""
    import torch

    from deeptut.models.rbm import DEFAULT_INIT_SEED, sample_chains, tutorial_test_idx

    for name, v in (("n_chains", n_chains), ("n_samples", n_samples), ("plot_every", plot_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be an integer >= 1 (got {v!r})")
    from deeptut.data.datasets import split_images
    from deeptut.data.device import check_device

    device = check_device(device)
    run = Run.open(run_dir)
    rbm = run.require_trait("samples", "sampling").to(device)
    x = split_images(data, "test", str(run.config.get("dataset", "mnist")))
    if x.shape[1] != rbm.n_visible:
        raise DataError(f"test images have {x.shape[1]} pixels, the RBM of {run.path} {rbm.n_visible} visible units")
    if len(x) <= n_chains:
        raise DataError(f"n_chains = {n_chains} needs more test images than the {len(x)} there are")
    if test_idx is not None and not 0 <= test_idx <= len(x) - n_chains:
        raise DataError(f"test_idx {test_idx} leaves fewer than n_chains = {n_chains} of the {len(x)} test images")
    if test_idx is None:
        init_seed = run.config.get("init_seed")
        init_seed = init_seed if isinstance(init_seed, int) and not isinstance(init_seed, bool) else DEFAULT_INIT_SEED
        test_idx = tutorial_test_idx(rbm.n_visible, rbm.n_hidden, len(x), n_chains, seed=init_seed)
    if seed is None:
        generator = rbm.make_generator(device)
        seed_used = rbm.sample_seed
    else:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
        seed_used = int(seed)
    samples = sample_chains(rbm, torch.from_numpy(x), n_chains, n_samples, plot_every, test_idx, generator)
    info = {"run": str(run.path), "seed": seed_used, "seed_from": "--seed" if seed is not None else "sample_seed",
            "test_idx": int(test_idx), "n_chains": n_chains, "n_samples": n_samples, "plot_every": plot_every,
            "gibbs_steps": n_samples * plot_every, "device": str(device)}
    return samples, info


def write_samples(run_dir: str | Path, data: Any = None, *, seed: int | None = None, n_chains: int = 20,
                  n_samples: int = 10, plot_every: int = 1000, test_idx: int | None = None,
                  device: str = "cpu") -> list[Path]:
    """Draw rbm.py's samples from a saved rbm run and write RUN_DIR/plots/samples.png (the tutorial's
    picture), samples.npy (the activations) and samples.json (seed, test_idx, sizes). Returns the paths.
    A run that is not an RBM raises rundir.WrongModelError naming the run and its model."""

    samples, info = draw_samples(run_dir, data, seed=seed, n_chains=n_chains, n_samples=n_samples,
                                 plot_every=plot_every, test_idx=test_idx, device=device)
    side = math.isqrt(samples.shape[2])
    shape = (side, side) if side * side == samples.shape[2] else (1, samples.shape[2])
    out = Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    png = out / SAMPLES_PNG
    from deeptut.viz.plots import axis_ticks, framed_tiles, save_framed

    n_samples, n_chains = samples.shape[:2]
    picture, box = framed_tiles(
        samples_picture(samples, shape), 1, f"samples of the RBM: {n_chains} persistent chains, a sample every "
        f"{info.get('plot_every', plot_every):,} Gibbs steps (mean-field visible units)", shape,
        "sample (top: the first)", "chain (started at a test digit)",
        [(i, str(i)) for i in axis_ticks(n_samples)], [(j, str(j)) for j in axis_ticks(n_chains)])
    save_framed(picture, box, png)
    npy = out / SAMPLES_NPY
    np.save(npy, samples)
    meta = out / SAMPLES_JSON
    files.atomic_write_json(meta, info)
    return [png, npy, meta]
