"""A trained classifier: network, loss, preprocessing and class names in one object.

>>> model = Model.build("950:relu,50:sigmoid", input_size=784, class_names=list("0123456789"))
>>> history = model.fit(x_train, y_train, optimizer=Adam(1e-3), epochs=10,
...                     validation_data=(x_val, y_val))          # doctest: +SKIP
>>> model.evaluate(x_test, y_test)["accuracy"]                   # doctest: +SKIP
>>> model.save("model.npz"); Model.load("model.npz")             # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from mlplab.data.preprocessing import FittedPreprocessing
from mlplab.engine.architecture import build_network
from mlplab.engine.losses import MeanSquaredError, make_loss
from mlplab.saving import load_model, save_model
from mlplab.training import loop as train
from mlplab.training import metrics


class Model:
    """Wraps a :class:`~mlplab.engine.graph.Network` with what predicting from images needs."""

    def __init__(
        self,
        network,
        loss,
        class_names: list[str],
        preprocessing: FittedPreprocessing | None = None,
        metadata: dict | None = None,
    ):
        self.network, self.loss = network, loss
        self.class_names = list(class_names)
        self.preprocessing = preprocessing
        self.metadata = metadata or {}  # what the model file said besides its arrays

    @classmethod
    def build(
        cls,
        architecture: str | dict,
        input_size: int,
        class_names: list[str],
        loss: str = "cross-entropy",
        output_activation: str | None = None,
        init: str = "auto",
        seed: int = 0,
        dtype=np.float32,
        preprocessing: FittedPreprocessing | None = None,
        dropout_seed: int | None = None,
    ) -> Model:
        """A new, untrained model.

        ``seed`` seeds the initial weights; ``dropout_seed`` the dropout masks (default: derived
        by the engine from ``seed``).
        """
        network = build_network(
            architecture,
            input_size,
            len(class_names),
            init=init,
            dtype=dtype,
            seed=seed,
            dropout_seed=dropout_seed,
        )
        options = {"output_activation": output_activation} if output_activation else {}
        return cls(network, make_loss(loss, **options), class_names, preprocessing)

    def fit(self, x, y, **options) -> train.History:
        """Train in place; the options are those of :func:`mlplab.training.loop.fit`."""
        return train.fit(self.network, self.loss, x, y, **options)

    def features(self, images: np.ndarray) -> np.ndarray:
        """Images ``(N, H, W)`` to the network's float features, as during training."""
        if self.preprocessing is None:
            return images.reshape(len(images), -1).astype(self.network.dtype) / 255.0
        return self.preprocessing.transform(images)

    def predict_proba(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities for features ``x`` (the loss's output activation of the logits)."""
        return self.loss.predict(self.network.predict_logits(x, batch_size))

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        return self.network.predict_logits(x, batch_size).argmax(axis=1)

    def evaluate(self, x: np.ndarray, y: np.ndarray, halves: bool = True) -> dict:
        """Accuracy with a 95% Wilson interval, per class, confusion, both halves, and loss."""
        return self.evaluate_logits(self.network.predict_logits(x), y, halves)

    def evaluate_logits(self, logits: np.ndarray, y: np.ndarray, halves: bool = True) -> dict:
        """:meth:`evaluate` for logits already computed (to reuse them for plots)."""
        result = metrics.evaluate_predictions(y, logits.argmax(axis=1), self.class_names, halves)
        result["loss"] = self.loss.forward(logits, y)
        return result

    def save(self, path, metadata: dict | None = None):
        extra = {}
        if self.preprocessing is not None:
            extra = {f"preprocessing/{k}": v for k, v in self.preprocessing.state().items()}
        loss = {"name": self.loss.name}
        if isinstance(self.loss, MeanSquaredError):
            loss["output_activation"] = self.loss.output_activation
        if getattr(self.loss, "label_smoothing", 0.0):
            # So that mlplab eval reports the loss the model was trained on.
            loss["label_smoothing"] = self.loss.label_smoothing
        return save_model(
            path,
            self.network,
            {"loss": loss, "class_names": self.class_names, **(metadata or {})},
            extra,
        )

    @classmethod
    def load(cls, path) -> Model:
        network, meta, archive = load_model(path)
        loss = dict(meta.get("loss", {"name": "cross-entropy"}))
        preprocessing = archive.group("preprocessing")
        return cls(
            network,
            make_loss(loss.pop("name"), **loss),
            meta.get("class_names") or [str(i) for i in range(network.sizes[network.output])],
            FittedPreprocessing.from_state(preprocessing) if preprocessing else None,
            meta,
        )
