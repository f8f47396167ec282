"""The chapter notebooks (notebooks/*.ipynb) executed top to bottom with their tiny settings (FULL = False),
as a reader would run them: every cell must run, the run must train, and the learning curves and filters
must come out as images."""

import base64
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_one_notebook_per_chapter():
    names = [p.stem for p in NOTEBOOKS]
    for chapter in ("getting-started", "logistic", "mlp", "lenet", "denoising-autoencoder",
                    "stacked-denoising", "rbm", "dbn"):
        assert any(chapter in n for n in names), chapter
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert first_code.source.startswith("FULL = False"), p.name  # the one switch, at the top


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One user cache for the notebooks' kernels: the MNIST slice (deeptut.api.small_mnist) is made once."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, shared_cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_cache))  # the kernel inherits it
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    pngs = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name}: {out.get('ename')}: {out.get('evalue')}"
            data = out.get("data", {})
            if "image/png" in data:
                pngs.append(base64.b64decode(data["image/png"]))
    assert len(pngs) >= 2 and all(p[:4] == b"\x89PNG" for p in pngs)  # the curves and the filters
    assert list((tmp_path / "runs").iterdir())  # the run's directory, beside the notebook
