"""PyTorch as an independent oracle, in float64: forward logits, loss, every parameter gradient,
LayerNorm / BatchNorm, and Adam steps. Skipped when torch is not installed (it is never a
dependency of mlplab)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mlplab.engine.graph import Network  # noqa: E402
from mlplab.engine.losses import SoftmaxCrossEntropy  # noqa: E402
from mlplab.engine.optimizers import make_optimizer  # noqa: E402

BATCH = 16


def batch(input_size, n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((BATCH, input_size)), rng.integers(0, n_classes, BATCH)


def torch_twin(network):
    """A torch.nn.Sequential with the same layers and a copy of the same float64 weights.
    Our Dense weight is (out, in), exactly torch.nn.Linear's layout."""
    modules = []
    for name in network.order:
        layer = network.nodes[name].layer
        kind = layer.type_name
        if kind == "dense":
            module = torch.nn.Linear(network.sizes[network.nodes[name].inputs[0]], layer.units)
            module.weight.data = torch.from_numpy(layer.params["weight"].copy())
            module.bias.data = torch.from_numpy(layer.params["bias"].copy())
        elif kind == "layernorm":
            module = torch.nn.LayerNorm(network.sizes[name], eps=layer.eps)
            module.weight.data = torch.from_numpy(layer.params["gamma"].copy())
            module.bias.data = torch.from_numpy(layer.params["beta"].copy())
        elif kind == "batchnorm":
            module = torch.nn.BatchNorm1d(
                network.sizes[name], eps=layer.eps, momentum=1.0 - layer.momentum
            )  # torch: weight of new
            module.weight.data = torch.from_numpy(layer.params["gamma"].copy())
            module.bias.data = torch.from_numpy(layer.params["beta"].copy())
        else:
            module = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[
                kind
            ]()
        modules.append(module.double())
    return torch.nn.Sequential(*modules)


def torch_param_names(network):
    """Our parameter names in the order torch's Sequential lists its parameters."""
    rename = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
    names = []
    for index, name in enumerate(network.order):
        for key in network.nodes[name].layer.params:
            names.append((f"{name}.{key}", f"{index}.{rename[key]}"))
    return names


def compare_forward_and_backward(network, x, labels):
    model = torch_twin(network)
    loss = SoftmaxCrossEntropy()
    logits = network.forward(x, training=True)
    value = loss.forward(logits, labels)
    network.backward(loss.backward())

    torch_logits = model(torch.from_numpy(x))
    torch_loss = torch.nn.functional.cross_entropy(torch_logits, torch.from_numpy(labels))
    torch_loss.backward()

    np.testing.assert_allclose(logits, torch_logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert value == pytest.approx(torch_loss.item(), rel=1e-12)
    torch_grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    pairs = torch_param_names(network)
    assert len(pairs) == len(torch_grads)
    for ours, theirs in pairs:
        np.testing.assert_allclose(
            network.grads[ours], torch_grads[theirs], rtol=1e-9, atol=1e-12, err_msg=ours
        )
    return model


def test_784_32_sigmoid_16_relu_10_matches_torch_logits_loss_and_gradients():
    from mlplab.engine.activations import ReLU, Sigmoid
    from mlplab.engine.layers import Dense

    network = Network.stack(
        784, [Dense(32), Sigmoid(), Dense(16), ReLU(), Dense(10)], dtype=np.float64, seed=3
    )
    for name, array in network.params.items():  # non-zero biases, so they are compared too
        if name.endswith(".bias"):
            array[...] = np.random.default_rng(4).standard_normal(array.shape) * 0.1
    x, labels = batch(784)
    compare_forward_and_backward(network, x, labels)


def test_layernorm_network_matches_torch():
    from mlplab.engine.activations import Tanh
    from mlplab.engine.layers import Dense
    from mlplab.engine.normalization import LayerNorm

    network = Network.stack(
        20, [Dense(24), LayerNorm(), Tanh(), Dense(10)], dtype=np.float64, seed=5
    )
    rng = np.random.default_rng(6)
    network.params["layernorm1.gamma"][...] = rng.uniform(0.5, 1.5, 24)
    network.params["layernorm1.beta"][...] = rng.standard_normal(24)
    x, labels = batch(20, seed=1)
    compare_forward_and_backward(network, x * 5 + 2, labels)


def test_batchnorm_network_matches_torch_including_running_statistics():
    from mlplab.engine.activations import ReLU
    from mlplab.engine.layers import Dense
    from mlplab.engine.normalization import BatchNorm

    network = Network.stack(
        12, [Dense(9), BatchNorm(momentum=0.9), ReLU(), Dense(10)], dtype=np.float64, seed=7
    )
    x, labels = batch(12, seed=2)
    model = compare_forward_and_backward(network, x * 3 - 1, labels)
    bn = model[1]
    np.testing.assert_allclose(
        network.buffers["batchnorm1.running_mean"], bn.running_mean.numpy(), rtol=1e-12
    )
    np.testing.assert_allclose(
        network.buffers["batchnorm1.running_var"], bn.running_var.numpy(), rtol=1e-12
    )
    model.eval()
    x_test = batch(12, seed=3)[0]
    np.testing.assert_allclose(
        network.forward(x_test),
        model(torch.from_numpy(x_test)).detach().numpy(),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize(
    "name, torch_optimizer",
    [
        ("adam", lambda params: torch.optim.Adam(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8)),
        ("adamw", None),
    ],
)
def test_adam_steps_match_torch(name, torch_optimizer):
    from mlplab.engine.activations import Sigmoid
    from mlplab.engine.layers import Dense

    network = Network.stack(30, [Dense(16), Sigmoid(), Dense(10)], dtype=np.float64, seed=8)
    model = torch_twin(network)
    if name == "adam":
        ours = make_optimizer("adam", 1e-2)
        theirs = torch_optimizer(model.parameters())
    else:  # decoupled decay on weights only: torch needs a parameter group without the biases
        ours = make_optimizer("adamw", 1e-2, weight_decay=0.1)
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
        biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
        theirs = torch.optim.AdamW(
            [{"params": weights, "weight_decay": 0.1}, {"params": biases, "weight_decay": 0.0}],
            lr=1e-2,
        )
    loss = SoftmaxCrossEntropy()
    for step in range(3):
        x, labels = batch(30, seed=10 + step)
        loss.forward(network.forward(x, training=True), labels)
        network.backward(loss.backward())
        ours.update(network.params, network.grads)

        theirs.zero_grad()
        torch.nn.functional.cross_entropy(
            model(torch.from_numpy(x)), torch.from_numpy(labels)
        ).backward()
        theirs.step()
    torch_params = dict(model.named_parameters())
    for ours_name, theirs_name in torch_param_names(network):
        np.testing.assert_allclose(
            network.params[ours_name],
            torch_params[theirs_name].detach().numpy(),
            rtol=1e-9,
            atol=1e-12,
            err_msg=ours_name,
        )
