"""Writes the chapter notebooks (notebooks/*.ipynb) from the texts below, without outputs: one per chapter of
the Deep Learning Tutorials, each a short read, a run of its preset through the Python API (deeptut.train),
the learning curves and the filters inline. `FULL = False` at the top of each: a 2,400-image slice of MNIST
and a smaller model (seconds; what the tests execute, tests/test_notebooks.py); True: the preset as it is.

    python notebooks/build_notebooks.py      # after editing a text here
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
DOCS = "https://github.com/lisa-lab/DeepLearningTutorials/blob/master/doc"

SETUP = '''FULL = False  # True: the preset's own settings (the chapter's run: minutes to hours on a CPU)

import deeptut

if FULL:
    data, quick = {{}}, {{}}
else:  # a 2,400-image slice of MNIST (deeptut.api.small_mnist) and a smaller model: seconds
    data = dict(data_dir=deeptut.api.small_mnist(), dataset="idx")
    quick = dict({quick}, threads=1)'''

RUN = '''run = deeptut.train("{preset}", **data, **quick)
run'''

HISTORY = '''run.history.tail()  # one row per {row} (metrics.jsonl)'''

CHAPTERS = {
    "01-getting-started": dict(
        title="Getting Started: the data, a run, and what it leaves behind",
        chapter="gettingstarted.txt",
        text="""The tutorials use MNIST as the tutorial's `mnist.pkl.gz` splits it: 50,000 training images, 10,000
validation images (to choose hyper-parameters and when to stop), 10,000 test images (reported once, for the
chosen model). Each image is 28 x 28 grey pixels in [0, 1), a row of 784 numbers.

Learning is **minibatch stochastic gradient descent** on the negative log-likelihood, with the tutorials'
**early stopping**: validate every `validation_frequency` minibatches, keep the best parameters, and stop when
`patience` iterations pass without a significant improvement.

`deeptut.train(preset, **overrides)` runs exactly what `deeptut train PRESET --key value` runs and returns the
run: `run.history`, `run.summary`, `run.model`, `run.plot()`, `run.filters()`. `deeptut.load(run.run_dir)`
reads a saved run back.""",
        preset="logistic", quick="batch_size=100, n_epochs=2", row="validation",
        extra=[("md", "A few training digits, as the model sees them (the pixels of a row, shaped 28 x 28):"),
               ("code", '''from deeptut.data.datasets import load_dataset
from matplotlib.figure import Figure

splits = load_dataset("idx", data["data_dir"]) if not FULL else load_dataset("mnist")
fig = Figure(figsize=(8, 1.6))
for i, ax in enumerate(fig.subplots(1, 8)):
    ax.imshow(splits.train.x[i].reshape(28, 28), cmap="gray")
    ax.set_title(int(splits.train.y[i]))
    ax.axis("off")
deeptut.api._inline(fig)'''),
               ("md", "What a run leaves behind (the same for every command: `deeptut viz|report|eval RUN_DIR`):"),
               ("code", '''sorted(p.name for p in run.run_dir.iterdir())'''),
               ("code", '''again = deeptut.load(run.run_dir)   # a saved run, the same object
again.summary["test_error"] == run.summary["test_error"]''')]),
    "02-logistic-regression": dict(
        title="Classifying MNIST digits using Logistic Regression",
        chapter="logreg.txt",
        text="""Multi-class logistic regression: `p(y = i | x) = softmax(W x + b)_i`, with W of shape 784 x 10 and b of
10, both starting at zero. The prediction is the most probable class; the loss is the mean negative
log-likelihood of the minibatch; the error reported is the zero-one loss in %. The tutorial's run
(`logistic`: learning rate 0.13, minibatches of 600) reaches 7.49 % test error.

Each column of W is a *template* of its class: the filters below are those ten columns drawn as images.""",
        preset="logistic", quick="batch_size=100, n_epochs=2", row="validation", extra=[]),
    "03-mlp": dict(
        title="Multilayer Perceptron",
        chapter="mlp.txt",
        text="""One hidden layer between the input and the logistic regression: `h = tanh(W x + b)`, then `softmax(V h + c)`.
The hidden weights start uniform in `+-sqrt(6 / (n_in + n_hidden))` (Glorot and Bengio's rule for tanh), the
loss adds an L2 penalty (`L2_reg`), and training is plain SGD on minibatches of 20. The tutorial's run
(`mlp`: 500 hidden units) reaches about 1.65 % test error.

The filters are the hidden units' input weights: what each unit looks for in the image.""",
        preset="mlp", quick="n_hidden=100, n_epochs=1", row="validation", extra=[]),
    "04-lenet": dict(
        title="Convolutional Neural Networks (LeNet)",
        chapter="lenet.txt",
        text="""Two convolution + max-pooling layers (5 x 5 kernels, 2 x 2 pooling; 20 and 50 feature maps), then a tanh
hidden layer and a logistic regression. Sparse connectivity and shared weights: each kernel is applied at
every position, so the model has far fewer parameters than an MLP of its size and is translation-aware.
The tutorial's run (`lenet`) reaches about 0.9 % test error; `lenet-fast` gets lower faster (ReLU, momentum,
a schedule, image shifts).

The filters: the first layer's kernels, and the second layer's (one row per output map, one column per input
map).""",
        preset="lenet", quick="nkerns=(4, 8), n_hidden=50, batch_size=100, n_epochs=1", row="validation",
        extra=[]),
    "05-denoising-autoencoder": dict(
        title="Denoising Autoencoders (dA)",
        chapter="dA.txt",
        text="""An autoencoder learns to reconstruct its input through a hidden layer, `y = sigmoid(W x + b)`,
`z = sigmoid(W' y + b')` with tied weights `W' = W^T`, minimising the cross-entropy between x and z. The
*denoising* one sees a corrupted input (a fraction `corruption_level` of the pixels set to 0) and must
reconstruct the clean one, so it cannot learn the identity: its filters become stroke detectors. No labels
are used; the history is the reconstruction cost per epoch.""",
        preset="da", quick="n_hidden=100, n_epochs=1", row="training epoch", extra=[]),
    "06-stacked-denoising-autoencoders": dict(
        title="Stacked Denoising Autoencoders (SdA)",
        chapter="SdA.txt",
        text="""Greedy layer-wise pre-training: each hidden layer is trained as a denoising autoencoder on the output of
the layer below (no labels), then the whole stack plus a logistic regression on top is fine-tuned with
supervised SGD as an MLP. The history below is the fine-tuning's (one row per validation); the pre-training
costs are in metrics.jsonl too (`deeptut viz` draws them).""",
        preset="sda",
        quick="hidden_layers_sizes=(100, 100), corruption_levels=(0.1, 0.2), pretraining_epochs=1, n_epochs=1, "
              "batch_size=20",
        row="validation", extra=[]),
    "07-rbm": dict(
        title="Restricted Boltzmann Machines (RBM)",
        chapter="rbm.txt",
        text="""An energy-based model of binary visible and hidden units, `E(v, h) = -b'v - c'h - h'Wv`, trained by
contrastive divergence: the gradient's negative phase estimated by `k` steps of block Gibbs sampling, from a
persistent chain (PCD) in the tutorial's run. The history is the pseudo-likelihood cost per epoch; the
filters are the hidden units' weights. `deeptut sample RUN_DIR` draws samples from the chains.""",
        preset="rbm", quick="n_hidden=100, k=1, n_epochs=1", row="training epoch", extra=[]),
    "08-dbn": dict(
        title="Deep Belief Networks (DBN)",
        chapter="DBN.txt",
        text="""A stack of RBMs trained greedily, each on the hidden activations of the one below (CD-k), then
fine-tuned as an MLP with a logistic regression on top, as the SdA is. The pre-trained stack gives the
supervised phase a good start; the tutorial's run reaches about 1.3 % test error.""",
        preset="dbn", quick="hidden_layers_sizes=(100, 100), pretraining_epochs=1, n_epochs=1, batch_size=20",
        row="validation", extra=[]),
}


def notebook(name: str, c: dict) -> nbformat.NotebookNode:
    cells = [new_markdown_cell(f"# {c['title']}\n\nThe chapter: [{c['chapter']}]({DOCS}/{c['chapter']}). "
                               f"This notebook trains the `{c['preset']}` preset with deeptut's Python API.\n\n"
                               f"{c['text']}"),
             new_code_cell(SETUP.format(quick=c["quick"])),
             new_code_cell(RUN.format(preset=c["preset"])),
             new_code_cell(HISTORY.format(row=c["row"])),
             new_markdown_cell("The learning curves (`run.plot()`), then the filters (`run.filters()`):"),
             new_code_cell("run.plot()"),
             new_code_cell("run.filters()")]
    for kind, text in c["extra"]:
        cells.append(new_markdown_cell(text) if kind == "md" else new_code_cell(text))
    cells.append(new_markdown_cell(f"On the command line the same run is `deeptut train {c['preset']}`; "
                                   f"`deeptut train {c['preset']} --help` lists its fields. All the pictures: "
                                   f"`run.pictures()` (what `deeptut viz RUN_DIR` draws)."))
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def main() -> None:
    for name, c in CHAPTERS.items():
        nbformat.write(notebook(name, c), HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
