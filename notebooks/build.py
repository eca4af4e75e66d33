"""Write the learner notebooks from the cells below, and optionally run them to fill in outputs.

The notebooks are generated so that their code lives in one reviewable Python file; the committed
``.ipynb`` files carry the outputs of a full-data run, so they read well on a code host::

    .venv/bin/python notebooks/build.py                      # write the .ipynb files, no outputs
    MLPLAB_DATA=/path/to/data .venv/bin/python notebooks/build.py --execute   # and run them

``--execute`` runs each notebook in a fresh kernel from the ``notebooks/`` folder. With
``MLPLAB_NOTEBOOK_SMALL=1`` in the environment the notebooks use the small fixture in
``tests/fixtures/mnist-small`` and fewer epochs (what ``tests/test_notebooks.py`` does).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# The first code cell of every notebook: where the data is, and how big a run is.
SETUP = '''\
%matplotlib inline
import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import mlplab

# MLPLAB_NOTEBOOK_SMALL=1 (what the tests set): the 2000-image MNIST subset committed in
# tests/fixtures, and short training. Otherwise: full MNIST, found through MLPLAB_DATA or the cache.
SMALL = os.environ.get("MLPLAB_NOTEBOOK_SMALL") == "1"
REPO = Path(mlplab.__file__).resolve().parents[2]  # src/mlplab/__init__.py -> the repository
DATA = str(REPO / "tests" / "fixtures" / "mnist-small") if SMALL else "mnist"
VALIDATION = 200 if SMALL else 5000  # images held out of the training set for validation
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
print("small run on the test fixture" if SMALL else "full MNIST")'''

LOAD = '''\
from mlplab.data import Preprocessing, load_dataset, validation_split

data = load_dataset(DATA, progress=False)
train_idx, valid_idx = validation_split(data.train_labels, VALIDATION, seed=0)
prep = Preprocessing(scale=True).fit(data.train_images[train_idx])  # pixels / 255
x_train, y_train = prep.transform(data.train_images[train_idx]), data.train_labels[train_idx]
x_valid, y_valid = prep.transform(data.train_images[valid_idx]), data.train_labels[valid_idx]
x_test, y_test = prep.transform(data.test_images), data.test_labels
print(f"train {x_train.shape}, validation {x_valid.shape}, test {x_test.shape}")'''


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


# -- 1. Your first network -------------------------------------------------------------------------

FIRST_NETWORK = [
    md("""
# 1. Your first network

The book's network: 784 inputs (one per pixel), one hidden layer of 100 sigmoid units, 10 outputs
(one per digit). In this notebook you load MNIST, look at the digits, build the network, check
that its gradients are right, train it, and read what training tells you: the learning curves, the
confusion matrix and the mistakes.

Change anything and run it again: that is what the notebook is for. Every cell runs in well under
a minute on a laptop.
"""),
    code(SETUP),
    md("""
## The data

`load_dataset` finds the four IDX files (in `MLPLAB_DATA`, the cache, or by downloading them) and
checks their checksums. Images are 28x28 bytes, labels integers 0-9. We hold 5000 training images
out as a validation set: they tell us how well the network generalizes *while* we make choices,
so that the test set stays untouched until the end.
"""),
    code(LOAD),
    code("""
fig, axes = plt.subplots(2, 10, figsize=(10, 2.4))
for ax, image, label in zip(axes.flat, data.train_images, data.train_labels):
    ax.imshow(image, cmap="gray_r")
    ax.set_title(str(label))
    ax.axis("off")
plt.show()
print("images per class in the training set:", np.bincount(data.train_labels))
"""),
    md("""
## The network

`Model.build` takes an architecture string for the *hidden* layers; the input size and the output
layer (one unit per class, giving logits) come from the data. `"100:sigmoid"` is 784-100-10. The
loss, softmax cross-entropy, is part of the model.
"""),
    code("""
from mlplab.training.model import Model

model = Model.build("100:sigmoid", input_size=x_train.shape[1], class_names=data.class_names, seed=0)
print(model.network.summary())
"""),
    md("""
## Check the gradients before you trust them

Backpropagation is easy to get subtly wrong. The gradient checker compares every backward pass
with central differences `(L(w + h) - L(w - h)) / 2h`, computed in float64. A correct layer agrees
to about 1e-9; a wrong one is off by percent. Checks run on a float64 copy of the same
architecture and a handful of images.
"""),
    code("""
from mlplab.engine.gradcheck import check_gradients

model64 = Model.build("100:sigmoid", x_train.shape[1], data.class_names, seed=0, dtype=np.float64)
check = check_gradients(model64.network, model64.loss, x_train[:16], y_train[:16])
print(check.report())
assert check.passed
"""),
    md("""
## Train

Adam with learning rate 0.001, batches of 128, a few epochs. `fit` measures the loss and accuracy
on the training and validation sets after every epoch and returns them as a `History`.
"""),
    code("""
from mlplab.engine.optimizers import Adam

EPOCHS = 2 if SMALL else 8
history = model.fit(
    x_train, y_train, optimizer=Adam(1e-3), epochs=EPOCHS, batch_size=128,
    validation_data=(x_valid, y_valid), progress=False,
)
for epoch, tl, vl, va in zip(history["epoch"], history["train_loss"], history["val_loss"],
                             history["val_accuracy"]):
    print(f"epoch {epoch}: train loss {tl:.4f}, validation loss {vl:.4f}, accuracy {va:.4f}")
"""),
    md("""
## Read the curves

Training loss going down while the validation loss levels off or turns up is overfitting. Both
still falling means more epochs would help. The third panel zooms into the high end of accuracy,
where the differences between networks are.
"""),
    code("""
from mlplab.report import curves_figure

curves_figure(history.columns, best_epoch=history.best_epoch, n_classes=10,
              title="784-100-10, sigmoid, Adam")
"""),
    md("""
## Test, once

Accuracy on the test set, with its 95% confidence interval: with 10,000 test images, a
difference of 0.2% between two networks is inside the noise. The two halves of the test set
differ too (the last 5000 images are easier than the first 5000).
"""),
    code("""
result = model.evaluate(x_test, y_test)
accuracy = result["accuracy"]
print(f"test accuracy: {accuracy:.4f}  95% interval [{result['wilson_low']:.4f}, "
      f"{result['wilson_high']:.4f}]  loss {result['loss']:.4f}")
for half in ("first_half", "last_half"):
    print(f"  {half.replace('_', ' ')}: {result[half]['accuracy']:.4f}")
"""),
    md("""
## The confusion matrix

Rows are the true digits, columns what the network said. The diagonal is what it got right; the
red cells off the diagonal are its mistakes, on their own colour scale so the few that matter
stand out.
"""),
    code("""
from mlplab.report import confusion_figure

confusion_figure(np.array(result["confusion_matrix"]), data.class_names)
"""),
    md("""
## Look at the mistakes

The most confident mistakes first: each image is titled "true → predicted" with the probability
the network gave its wrong answer. Many are digits a person would hesitate over too; some are
plain failures worth understanding.
"""),
    code("""
from mlplab.report import misclassified_figure

probabilities = model.predict_proba(x_test)
predicted = probabilities.argmax(axis=1)
print(f"{np.sum(predicted != y_test)} of {len(y_test)} test images misclassified")
misclassified_figure(data.test_images, y_test, predicted, data.class_names,
                     probabilities=probabilities, max_images=24)
"""),
    md("""
## Your turn

* Change `"100:sigmoid"` to `"100:relu"`, `"300:relu"` or `"100:relu,100:relu"` and run again.
* Train with `SGD` from `mlplab.engine.optimizers` at learning rate 0.1, as the book does: slower.
* Crop the border: `Preprocessing(scale=True, crop_border=3)` drops 300 of the 784 inputs, a
  forum user found, with no loss of accuracy.
"""),
]


# -- 2. Inside a layer -----------------------------------------------------------------------------

INSIDE_A_LAYER = [
    md("""
# 2. Inside a layer

mlplab's layers are small classes with `forward` and `backward` side by side. In this notebook you
write two of your own in a few lines: an **activation**, the shifted ReLU `max(-1, x)` a forum
user found to keep deep stacks steady, and a **layer with weights**, RMS normalization. You check
both with the gradient checker (and watch it catch a bug), then train with them.
"""),
    code(SETUP),
    code(LOAD),
    md("""
## The layer contract

A layer is a subclass of `mlplab.engine.layers.Layer` with

* `forward(x, training)`: keep what `backward` needs, return the output;
* `backward(grad_out)`: given `dL/d(output)`, return `dL/d(input)` and put the gradients of the
  layer's weights into `self.grads` (same names as `self.params`);
* `build(input_sizes, rng, dtype)`: allocate weights once the input size is known (only for layers
  that have weights);
* a `type_name`: defining the class registers it, so graph specs can name it.

The activation first: `y = max(-1, x)`, whose derivative is 1 where `x > -1`, else 0.
"""),
    code('''
from mlplab.engine.layers import Layer


class MyShiftedReLU(Layer):
    """y = max(-1, x): a ReLU moved down and left by one."""

    type_name = "my-shifted-relu"
    caches_output = True  # backward reads y, so the layer after must not overwrite it

    def forward(self, x, training=False):
        self.y = np.maximum(x, -1.0)
        return self.y

    def backward(self, grad_out):
        return grad_out * (self.y > -1.0)  # dy/dx = 1 where x > -1, else 0
'''),
    md("""
Now a layer with weights. RMS normalization divides each example's features by their root mean
square and multiplies by a learned gain per feature:

`r = sqrt(mean(x²) + eps)`, `x̂ = x / r`, `y = g · x̂`.

Backward: `dL/dg = Σ_batch grad_out · x̂`, and with `d = grad_out · g`, each input's gradient
carries a term from every other input of its row, through `r`:
`dL/dx = (d - x̂ · mean(d · x̂)) / r`.
"""),
    code('''
class MyRMSNorm(Layer):
    """y = g * x / sqrt(mean(x^2) + eps), the mean over each example's features."""

    type_name = "my-rmsnorm"

    def __init__(self, eps=1e-5):
        super().__init__()
        self.eps = eps

    def count_params(self, input_sizes):
        return input_sizes[0]

    def build(self, input_sizes, rng, dtype):
        (size,) = input_sizes
        self.params["gain"] = np.ones(size, dtype=dtype)
        self.grads["gain"] = np.zeros(size, dtype=dtype)
        return size

    def forward(self, x, training=False):
        self.r = np.sqrt(np.mean(x * x, axis=1, keepdims=True) + self.eps)
        self.x_hat = x / self.r
        return self.x_hat * self.params["gain"]

    def backward(self, grad_out):
        self.grads["gain"][...] = np.sum(grad_out * self.x_hat, axis=0)  # dL/dg = sum g_out x_hat
        d = grad_out * self.params["gain"]  # dL/dx_hat
        return (d - self.x_hat * np.mean(d * self.x_hat, axis=1, keepdims=True)) / self.r

    def config(self):
        return {"eps": self.eps}
'''),
    md("""
## Networks that use them

Architecture strings only know the built-in names, so we describe networks as graph specs: a list
of nodes, each taking the previous one as input. `stack` writes that list for us.
"""),
    code('''
from mlplab.engine.architecture import build_network
from mlplab.engine.losses import SoftmaxCrossEntropy


def stack(*layers):
    """A graph spec of layers one after the other: ("dense", {"units": 100}), ("relu", {}), ..."""
    nodes, previous = [], "input"
    for index, (type_name, options) in enumerate(layers, start=1):
        name = f"{type_name}{index}"
        nodes.append({"name": name, "type": type_name, "inputs": [previous], **options})
        previous = name
    return {"nodes": nodes}


def hidden(units, *steps):
    """A dense layer of `units`, then the named steps; `hidden(...) * 3` repeats it three times."""
    return [("dense", {"units": units})] + [(s, {}) for s in steps]


def network(spec_layers, seed=0, dtype=np.float32):
    spec = stack(*spec_layers, ("dense", {"units": 10}))  # the output layer gives the logits
    return build_network(spec, x_train.shape[1], 10, seed=seed, dtype=dtype)


print(network(hidden(100, "my-rmsnorm", "my-shifted-relu")).summary())
'''),
    md("""
## Check them

A float64 network with both new layers, on 16 training images. Every tensor's analytic gradient
must agree with central differences to 1e-6 of its own scale.
"""),
    code("""
from mlplab.engine.gradcheck import check_gradients

net64 = network(hidden(32, "my-rmsnorm", "my-shifted-relu") * 2, dtype=np.float64)
check = check_gradients(net64, SoftmaxCrossEntropy(), x_train[:16], y_train[:16])
print(check.report())
assert check.passed
"""),
    md("""
Now make the classic mistake: treat `r` as a constant in the backward pass, i.e. forget that
every input of a row also moves the normalizer. The checker names the tensor whose gradient is
wrong.
"""),
    code('''
class RMSNormShortcut(MyRMSNorm):
    """The same forward, with the common shortcut backward dL/dx = d / r (wrong)."""

    type_name = "rmsnorm-shortcut"

    def backward(self, grad_out):
        self.grads["gain"][...] = np.sum(grad_out * self.x_hat, axis=0)
        return grad_out * self.params["gain"] / self.r  # missing: - x_hat * mean(d * x_hat)


wrong = network(hidden(32, "rmsnorm-shortcut", "my-shifted-relu") * 2, dtype=np.float64)
wrong_check = check_gradients(wrong, SoftmaxCrossEntropy(), x_train[:16], y_train[:16])
print(wrong_check.report())
assert not wrong_check.passed
'''),
    md("""
Is `MyShiftedReLU` the same function as mlplab's own `shifted-relu`? Two networks built with the
same seed must give identical logits.
"""),
    code("""
mine = network(hidden(100, "my-shifted-relu") * 3)
theirs = network(hidden(100, "shifted-relu") * 3)
difference = np.abs(mine.predict_logits(x_valid) - theirs.predict_logits(x_valid)).max()
print(f"largest difference between the logits: {difference}")
"""),
    md("""
## Train with them

Three networks of three hidden layers of 100 units, trained the same way: plain ReLU, the shifted
ReLU, and RMS normalization before the shifted ReLU. Besides accuracy, we measure how big each
layer's activations are (the standard deviation of its output on 1000 validation images) before
and after training: the forum user's observation was that with ReLU they grow from layer to layer
and with the shifted ReLU they stay level.
"""),
    code("""
from mlplab.engine.optimizers import Adam
from mlplab.training.diagnostics import layer_statistics
from mlplab.training.model import Model

EPOCHS = 1 if SMALL else 4
variants = {
    "relu": hidden(100, "relu") * 3,
    "my-shifted-relu": hidden(100, "my-shifted-relu") * 3,
    "my-rmsnorm + my-shifted-relu": hidden(100, "my-rmsnorm", "my-shifted-relu") * 3,
}
trained, spread = {}, {}
for name, layers in variants.items():
    model = Model(network(layers), SoftmaxCrossEntropy(), data.class_names)
    model.fit(x_train, y_train, optimizer=Adam(1e-3), epochs=EPOCHS, batch_size=128,
              validation_data=(x_valid, y_valid), progress=False)
    stats = layer_statistics(model.network, model.loss, x_valid[:1000], y_valid[:1000])
    activations = [n for n in model.network.order if not n.startswith(("dense", "my-rmsnorm"))]
    spread[name] = [stats[n]["activation_std"] for n in activations]
    trained[name] = model.evaluate(x_test, y_test)["accuracy"]
    print(f"{name:30s} test accuracy {trained[name]:.4f}   activation std by layer: "
          + ", ".join(f"{s:.2f}" for s in spread[name]))
"""),
    code("""
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, values in spread.items():
    ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
ax.set_xlabel("hidden layer")
ax.set_ylabel("std of the activations")
ax.set_xticks([1, 2, 3])
ax.set_title("After training: activation size, layer by layer")
ax.legend()
plt.show()
"""),
    md("""
Read the numbers above. In our full-data run (four epochs of Adam) the activations of the plain
ReLU stack grew from layer to layer, and so did those of the shifted ReLU: three layers and Adam
are not where the forum user saw the difference (he trained deeper stacks, with dropout). RMS
normalization is what kept them level here, at about the same accuracy.

And a note on reading the failed gradient check above: the tensors *after* the faulty layer (in
the forward direction) pass, and everything before it fails, because a wrong `dL/dx` is passed on
to every layer below. Counting back from the output, the first failing tensor sits just below the
faulty layer (here `dense4`, below the second `rmsnorm-shortcut`).
"""),
    md("""
## Your turn

* Other activations are one class away: `x * sigmoid(x)` (swish), `log(1 + exp(x))` (softplus).
  Write the derivative beside the forward, run the gradient checker, then train.
* Move the shifted ReLU's floor (`-0.5`, `-2`) and watch the activation sizes.
* Stack ten layers instead of three: where does plain ReLU start to suffer?
"""),
]


# -- 3. Numerical traps ----------------------------------------------------------------------------

NUMERICAL_TRAPS = [
    md("""
# 3. Numerical traps

Four ways a network that is mathematically right fails numerically, each one reported by users of
from-scratch code. For each: watch it fail, measure why, fix it, measure the fix.

1. a softmax that subtracts the batch's maximum instead of each row's: 0/0 = NaN;
2. `log(0)` in the cross-entropy: an infinite loss, and the usual patches that hide it;
3. a ReLU stack whose activations grow layer by layer from a too-large initialization;
4. a deep sigmoid stack under plain SGD that never learns: the gradient vanishes on its way back.
"""),
    code(SETUP),
    code(LOAD),
    md("""
We need a trained network whose logits we can look at: 784-100-10 with ReLU, two epochs.
"""),
    code("""
from mlplab.engine.optimizers import SGD, Adam
from mlplab.training.model import Model

base = Model.build("100:relu", x_train.shape[1], data.class_names, seed=0)
base.fit(x_train, y_train, optimizer=Adam(1e-3), epochs=1 if SMALL else 2, progress=False)
logits = base.network.predict_logits(x_test)  # float32, like training
print(f"test accuracy {base.evaluate(x_test, y_test)['accuracy']:.4f}; logits range "
      f"{logits.min():.1f} to {logits.max():.1f}")
"""),
    md("""
## Trap 1: the batch-wide maximum in the softmax

`softmax(z) = exp(z) / Σ exp(z)` overflows for large logits, so code subtracts a maximum first,
which changes nothing mathematically. A snippet that circulates online subtracts `np.max(z)`: the
maximum of the *whole batch*. A row whose logits are all far below the batch's largest then has
`exp` underflow to 0 in every entry, and its softmax is 0/0 = NaN. In float32, `exp(-104)` is
already 0.

A forum user lost three days to this: training went well for a while, then, as the weights grew,
the network blew up. Let us make the logits grow the way his did, by scaling them, and count the
rows of a batch of 128 that come out NaN.
"""),
    code('''
def softmax_batch_max(z):
    e = np.exp(z - np.max(z))  # the trap: one maximum for the whole batch
    return e / e.sum(axis=1, keepdims=True)


def softmax_row_max(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))  # each row's own maximum
    return e / e.sum(axis=1, keepdims=True)


batch = logits[:128]
print("logit scale   NaN rows (batch max)   NaN rows (row max)")
with np.errstate(invalid="ignore", under="ignore"):
    for scale in (1, 5, 10, 20, 50):
        z = (batch * scale).astype(np.float32)
        bad_batch = np.isnan(softmax_batch_max(z)).any(axis=1).sum()
        bad_row = np.isnan(softmax_row_max(z)).any(axis=1).sum()
        print(f"{scale:>11}   {bad_batch:>20}   {bad_row:>18}")
'''),
    md("""
The fix is the row-wise maximum, `z.max(axis=1, keepdims=True)`: then every row has one entry
`exp(0) = 1` and its sum is at least 1. That is what `mlplab.engine.activations.softmax` does,
and what the loss uses.
"""),
    code("""
from mlplab.engine.activations import softmax

z = (batch * 50).astype(np.float32)
print("NaN rows in mlplab's softmax at scale 50:", np.isnan(softmax(z.copy())).any(axis=1).sum())
"""),
    md("""
## Trap 2: log(0) in the loss

The book's loss is `-Σ Y log(ŷ) / N`. For a confident wrong answer the softmax probability of the
true class rounds to exactly 0 in float32, and the loss is `-log(0) = inf`. Two patches are
common: `log(ŷ + 1e-8)` (finite, but it caps each example's loss at 18.4 and so understates the
loss of confident mistakes), and `np.ma.log` (it masks the zeros out, so exactly the examples that
are most wrong contribute *nothing*). Compare them with the exact value, computed in float64, on
the same scaled logits:
"""),
    code("""
from mlplab.engine.losses import SoftmaxCrossEntropy

rows = np.arange(len(y_test))
print("scale  p=0 rows     log(p)   log(p+1e-8)   ma.log(p)   mlplab loss   exact (float64)")
with np.errstate(divide="ignore", under="ignore"):
    for scale in (1, 5, 20, 50):
        z = (logits * scale).astype(np.float32)
        p = softmax_row_max(z)[rows, y_test]
        naive = -np.mean(np.log(p))
        patched = -np.mean(np.log(p + 1e-8))
        masked = -np.ma.log(p).sum() / len(p)  # the masked entries add nothing
        ours = SoftmaxCrossEntropy().forward(z, y_test)
        z64 = z.astype(np.float64)
        top = z64.max(axis=1)
        exact = np.mean(top + np.log(np.exp(z64 - top[:, None]).sum(axis=1)) - z64[rows, y_test])
        print(f"{scale:>5}  {np.sum(p == 0):>8}  {naive:>9.4f}  {patched:>12.4f}  {masked:>10.4f}"
              f"  {ours:>12.4f}  {exact:>16.4f}")
"""),
    md("""
mlplab never takes the log of a probability: `SoftmaxCrossEntropy` computes
`-log softmax(z)[y] = log Σ exp(z - m) - (z_y - m)` with the row maximum `m` (log-sum-exp),
which is finite and exact for any logits, so the reported loss is the true one.

## Trap 3: a ReLU stack that grows layer by layer

Each layer multiplies the size of its input by roughly `sqrt(fan_in · Var(w) / 2)` for ReLU. He
initialization (`Var(w) = 2 / fan_in`) makes that 1; weights twice as large double the
activations at every layer: 2^8 = 256 times over eight layers. We measure each layer's activation
size with `layer_statistics` on eight hidden layers of 100 units: with weights 2x He, with He,
and with 2x He followed by layer normalization.
"""),
    code('''
from mlplab.training.diagnostics import layer_statistics


def deep_relu(architecture, init, weight_scale=1.0):
    model = Model.build(architecture, x_train.shape[1], data.class_names, init=init, seed=0)
    for name, param in model.network.params.items():
        if name.endswith(".weight"):
            param *= weight_scale  # a too-large initialization
    return model


def activation_sizes(model, kind="activation_std"):
    stats = layer_statistics(model.network, model.loss, x_valid[:1000], y_valid[:1000])
    return [stats[n][kind] for n in model.network.order if n.startswith(("relu", "shifted-relu"))]


relu_variants = {
    "8x100:relu, 2 x He": ("8x100:relu", "he-normal", 2.0),
    "8x100:relu, He": ("8x100:relu", "he-normal", 1.0),
    "8x100:layernorm:relu, 2 x He": ("8x100:layernorm:relu", "he-normal", 2.0),
}
sizes = {}
for name, (architecture, init, scale) in relu_variants.items():
    sizes[name] = activation_sizes(deep_relu(architecture, init, scale))
    print(f"{name:30s}" + " ".join(f"{s:8.2f}" for s in sizes[name]))

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, values in sizes.items():
    ax.semilogy(range(1, 9), values, marker="o", label=name)
ax.set_xlabel("hidden layer")
ax.set_ylabel("std of the activations (log scale)")
ax.set_title("Before training")
ax.legend()
plt.show()
'''),
    md("""
Now train each with SGD at learning rate 0.05. Logits hundreds of times too large mean a huge
loss and huge gradients: the first steps throw the weights far away. mlplab stops a run whose loss
becomes infinite or NaN with a `DivergenceError` that says so.
"""),
    code("""
from mlplab.errors import DivergenceError

for name, (architecture, init, scale) in relu_variants.items():
    model = deep_relu(architecture, init, scale)
    try:
        history = model.fit(x_train, y_train, optimizer=SGD(0.05), epochs=1 if SMALL else 2,
                            validation_data=(x_valid, y_valid), progress=False)
        print(f"{name:30s} validation accuracy {history['val_accuracy'][-1]:.4f}, "
              f"loss {history['val_loss'][-1]:.4f}")
    except DivergenceError as error:
        print(f"{name:30s} diverged: {error}")
"""),
    md("""
## Trap 4: a deep sigmoid stack that never learns

Five hidden layers of 32 sigmoid units, plain SGD at learning rate 0.01. The sigmoid's derivative
is at most 1/4, so on its way back through five layers the gradient shrinks by a large factor
before it reaches the first layer: the first layers barely move, and the network stays near
chance (10%). `LayerStatistics` records the size of each layer's weight gradient after every
epoch.
"""),
    code('''
from mlplab.training.diagnostics import LayerStatistics

EPOCHS = 2 if SMALL else 3


def train_with_stats(architecture, optimizer):
    model = Model.build(architecture, x_train.shape[1], data.class_names, seed=0)
    stats = LayerStatistics(model.network, model.loss, x_valid[:1000], y_valid[:1000])
    history = model.fit(x_train, y_train, optimizer=optimizer, epochs=EPOCHS,
                        validation_data=(x_valid, y_valid), progress=False, callbacks=[stats])
    dense = [n for n in model.network.order if n.startswith("dense")]
    gradients = [stats.epochs[-1][n]["weight_gradient_rms"] for n in dense]
    return history, gradients


runs = {
    "5x32:sigmoid, SGD 0.01": ("5x32:sigmoid", SGD(0.01)),
    "5x32:sigmoid, SGD 1.0": ("5x32:sigmoid", SGD(1.0)),
    "5x32:sigmoid, Adam 0.001": ("5x32:sigmoid", Adam(1e-3)),
    "5x32:relu, SGD 0.01": ("5x32:relu", SGD(0.01)),
}
gradient_sizes = {}
for name, (architecture, optimizer) in runs.items():
    history, gradient_sizes[name] = train_with_stats(architecture, optimizer)
    g = gradient_sizes[name]
    print(f"{name:26s} validation accuracy by epoch "
          + ", ".join(f"{a:.4f}" for a in history["val_accuracy"])
          + f";  weight gradient, first / last layer: {g[0]:.1e} / {g[-1]:.1e} "
          f"(ratio {g[0] / g[-1]:.1e})")
'''),
    code("""
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, values in gradient_sizes.items():
    ax.semilogy(range(1, len(values) + 1), values, marker="o", label=name)
ax.set_xlabel("dense layer (6 = output layer)")
ax.set_ylabel("rms of the weight gradient (log scale)")
ax.set_title("After training: gradient size, layer by layer")
ax.legend(fontsize=8)
plt.show()
"""),
    md("""
What the numbers say (in our full-data run: 3 epochs, batches of 128):

* **SGD 0.01** stays at chance, 11%: the first layer's weight gradient is about a thousand times
  smaller than the output layer's, so the first layers do not move.
* **A larger learning rate alone** (SGD 1.0) did *not* rescue it here: still at chance after three
  epochs, with the same thousandfold gap. Scaling every step up scales the large gradients of
  the last layers too.
* **Adam** divides each weight's step by the running size of its own gradient, so a layer with
  tiny gradients still takes steps of the usual size: the same network starts to learn (64% after
  three epochs, and climbing).
* **ReLU** has derivative 1 where it is active: the gradient no longer shrinks by 4x per layer,
  the gap between first and last layer is about 10x instead of 1000x, and plain SGD 0.01 reaches
  89%.

## Your turn

* Try the shifted ReLU, `8x100:shifted-relu`, with the 2 x He initialization of trap 3.
* Train the sigmoid stack with SGD 1.0 for more epochs, or make it shallower (`2x32:sigmoid`):
  when does plain SGD start to learn?
* Put `batchnorm` after every dense layer of the sigmoid stack: `5x32:batchnorm:sigmoid`.
"""),
]


# -- 4. How to spend 1000 nodes --------------------------------------------------------------------

NODE_BUDGET = [
    md("""
# 4. How to spend 1000 nodes

A forum question: given 1000 hidden units, is it better to put them all in one layer, or to
spread them over several? The forum's best answer was 950 ReLU units followed by 50 sigmoid units.
Here we run a small sweep over ways to split the budget, write its report, and ask whether the
best configurations differ *significantly*, or only by the noise of which seeds and test images
we happened to use.

To keep this notebook to a few minutes on a laptop, each network trains for one epoch, with one
seed, on images with their 4-pixel border cropped (20x20 = 400 inputs instead of 784; a forum
user found that costs little accuracy). The full question needs 10-20 epochs and several seeds:
`examples/sweeps/node_budget.toml` is that sweep, for `mlplab sweep`.
"""),
    code(SETUP),
    md("""
## The sweep

A sweep is a base run config plus the parameters to vary. `parse_sweep` expands it into trials:
every configuration once per seed (here one seed; add seeds to `"seeds"` to measure how much the
result varies from one initialization to the next).
"""),
    code("""
import tempfile

from mlplab.experiments.sweep import parse_sweep

splits = [
    "1000:relu",
    "500:relu,500:relu",
    "800:relu,200:relu",
    "950:relu,50:sigmoid",
    "400:relu,300:relu,300:relu",
    "250:relu,250:relu,250:relu,250:relu",
]
if SMALL:
    data_config = {"dataset": DATA, "validation": VALIDATION, "crop_border": 4}
else:
    data_config = {"dataset": "mnist", "validation": VALIDATION, "crop_border": 4}
sweep = parse_sweep({
    "name": "node-budget-notebook",
    "method": "grid",
    "metric": {"name": "val_accuracy", "goal": "maximize"},
    "seeds": [0],
    "base": {
        "data": data_config,
        "optimizer": {"name": "adam", "learning_rate": 0.001},
        "schedule": {"name": "cosine"},
        "training": {"epochs": 1, "batch_size": 128},
    },
    "parameters": {"model.architecture": {"values": splits}},
})
trials = sweep.trials()
print(f"{len(trials)} trials:", ", ".join(sorted({t.label for t in trials})))
"""),
    md("""
## Run it

`run_sweep` runs every trial the store does not have yet and writes each one's record (config,
metrics, test predictions) to an SQLite store as it finishes, so an interrupted sweep picks up
where it stopped. Here the store lives in a temporary folder.
"""),
    code("""
import time

from mlplab.experiments.runner import run_sweep
from mlplab.experiments.store import Store

work = Path(tempfile.mkdtemp(prefix="node-budget-"))
store = Store(work / "results.sqlite")
started = time.perf_counter()
outcome = run_sweep(trials, store, workers=1, progress=False)
print(f"{len(outcome.records)} trials run in {time.perf_counter() - started:.0f} s, "
      f"{len(outcome.failed)} failed")
"""),
    md("""
## The report

`write_report` writes a folder with `report.md`, CSV tables and plots. Here are its ranking of the
configurations (mean over seeds with an interval) and its first plot.
"""),
    code("""
from IPython.display import Image, Markdown, display

from mlplab.report.experiment_report import write_report

report = write_report(store, work / "report", top=3)
text = report.read_text()
print("report files:", ", ".join(sorted(p.name for p in report.parent.iterdir())))
# Show the report up to its first picture (the pictures are shown below, one by one).
display(Markdown(text.split("![")[0]))
"""),
    code("""
pictures = sorted(report.parent.glob("*.png"))
for picture in pictures[:2]:
    print(picture.name)
    display(Image(filename=str(picture), width=640))
"""),
    md("""
## Is the best really better?

The two best configurations by mean test accuracy, and the best against the single layer of 1000
units, compared with `compare_records`. With one seed it uses McNemar's exact test: only the
test images on which the two networks disagree say which is better. (With two or more seeds it
decides by a paired t-test over the seeds instead: how much the difference varies from seed to
seed.) A difference of a tenth of a percent on 10,000 test images is usually *not* significant.
"""),
    code("""
from mlplab.experiments.compare import compare_records

configurations = store.configurations("node-budget-notebook")
ranked = sorted(configurations, key=lambda c: -np.mean(list(c.metric("test_accuracy").values())))
for c in ranked:
    accuracies = c.metric("test_accuracy")
    print(f"{c.label:40s} test accuracy by seed: "
          + ", ".join(f"{accuracies[s]:.4f}" for s in sorted(accuracies)))

# The best against the runner-up, and against the single layer (or the third, if the single
# layer is one of those two).
best, runner_up = ranked[0], ranked[1]
single = next(c for c in configurations if c.label.startswith("1000:relu"))
other = single if single not in (best, runner_up) else ranked[2]
for a, b in [(best, runner_up), (best, other)]:
    result = compare_records(a.records, b.records, a.label, b.label)
    print()
    print(result["sentence"])
    print(f"  difference {result['difference']:+.4f} [{result['difference_low']:+.4f}, "
          f"{result['difference_high']:+.4f}], p = {result['p_value']:.3g} "
          f"({result['decided_by']}), significant: {result['significant']}")
    mcnemar = result["mcnemar"]
    if mcnemar is not None:
        print(f"  McNemar on seed {mcnemar['seed_a']}: the networks disagree on "
              f"{mcnemar['a_only'] + mcnemar['b_only']} test images "
              f"({mcnemar['a_only']} only {a.label} right, {mcnemar['b_only']} only {b.label} "
              f"right), p = {mcnemar['p_value']:.3g}")
store.close()
"""),
    md("""
How to read these lines: `difference` is the second network's accuracy minus the first's (a
negative number: the first is better), with its 95% interval. In our full-data run, after one
epoch, three hidden layers (400-300-300) came first, and the forum's 950-50 last: with one epoch
the small sigmoid layer has not caught up yet. One epoch and one seed answer "which learns
fastest", not "which is best in the end"; the differences between the middle of the ranking
were tenths of a point.
"""),
    md("""
## Your turn

* More seeds (`"seeds": [0, 1, 2]`) show how much each network varies with its initialization:
  does the ranking hold?
* Let `mlplab.experiments.generators.node_budget` write the splits: `{"generator": "node-budget",
  "total": 1000, "max_layers": 3, "step": 100, "non_increasing": True}` as the parameter.
* Train longer (10 epochs) and without cropping: do the deeper splits overtake the single layer?
"""),
]

NOTEBOOKS = {
    "01_first_network.ipynb": FIRST_NETWORK,
    "02_inside_a_layer.ipynb": INSIDE_A_LAYER,
    "03_numerical_traps.ipynb": NUMERICAL_TRAPS,
    "04_node_budget.ipynb": NODE_BUDGET,
}


def make_notebook(cells) -> nbformat.NotebookNode:
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def execute(notebook: nbformat.NotebookNode, folder: Path, timeout: int = 600):
    """Run ``notebook`` in a fresh python3 kernel whose working folder is ``folder``."""
    from nbclient import NotebookClient

    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": folder}}
    )
    client.execute()
    return notebook


def copy_outputs(old: nbformat.NotebookNode, new: nbformat.NotebookNode, name: str) -> None:
    """Give ``new``'s code cells the outputs of ``old``'s, which must have the same code."""
    old_code = [cell for cell in old.cells if cell.cell_type == "code"]
    new_code = [cell for cell in new.cells if cell.cell_type == "code"]
    if [c.source for c in old_code] != [c.source for c in new_code]:
        raise SystemExit(f"{name}: the code changed; run it again with --execute")
    for source, target in zip(old_code, new_code):
        target.outputs, target.execution_count = source.outputs, source.execution_count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true", help="run each notebook, keep outputs")
    parser.add_argument(
        "--keep-outputs",
        action="store_true",
        help="rewrite the text cells only, keeping the committed outputs (code must be unchanged)",
    )
    parser.add_argument("names", nargs="*", help="only these notebooks (file names)")
    args = parser.parse_args(argv)
    for name, cells in NOTEBOOKS.items():
        if args.names and name not in args.names:
            continue
        notebook = make_notebook(cells)
        if args.keep_outputs:
            copy_outputs(nbformat.read(HERE / name, as_version=4), notebook, name)
        elif args.execute:
            started = time.perf_counter()
            execute(notebook, HERE)
            print(f"{name}: ran in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for index, cell in enumerate(notebook.cells):
            cell["id"] = f"cell-{index:02d}"  # stable ids: rebuilding changes no unchanged cell
        nbformat.write(notebook, HERE / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
