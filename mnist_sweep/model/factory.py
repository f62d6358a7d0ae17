"""The one model factory: a plain params mapping in, a compiled Keras model out (an MLP, or a CNN
with ``architecture: cnn``).

The sweep, ``train``, ``bench`` and the tests all build their models here, so a config that
won a sweep is rebuilt bit for bit. It takes a plain mapping (what ``trial.params`` or an
exported YAML holds), never an Optuna trial. Missing keys take the tutorial's model 4 values.

Example:
    >>> model = build_model({"hidden_layers": 0, "optimizer": "sgd"})   # the tutorial's model 1
    >>> count_params(model)
    7850
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mnist_sweep.sweep.space import DEFAULT_PARAMS, OPTIMIZERS, layer_units_name

#: MNIST's classes, the default of a model's class names.
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))

#: The six axes the tutorial tuned by hand.
TUTORIAL_AXES = ("hidden_layers", "units", "dropout", "optimizer", "batch_size", "epochs")

#: The tutorial's four hand-tuned models (its test accuracy in the comment).
TUTORIAL_MODELS: list[dict[str, Any]] = [
    {"hidden_layers": 0, "units": 64, "dropout": 0.0, "optimizer": "sgd", "batch_size": 64, "epochs": 70},  # 92.1%
    {"hidden_layers": 2, "units": 64, "dropout": 0.0, "optimizer": "sgd", "batch_size": 64, "epochs": 100},  # 97.4%
    {"hidden_layers": 2, "units": 128, "dropout": 0.3, "optimizer": "sgd", "batch_size": 64, "epochs": 50},  # 97.3%
    {k: DEFAULT_PARAMS[k] for k in TUTORIAL_AXES},  # model 4 = the defaults: 98.24%
]

#: What Keras uses when no learning rate is given (the tutorial's runs used these).
KERAS_DEFAULT_LR = {"sgd": 0.01, "rmsprop": 0.001, "adam": 0.001, "adamw": 0.001, "nadam": 0.001}

_OPTIMIZER_CLASSES = {"sgd": "SGD", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW", "nadam": "Nadam"}


def resolve_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every missing key filled from :data:`DEFAULT_PARAMS`."""
    return {**DEFAULT_PARAMS, **params}


def layer_widths(params: Mapping[str, Any]) -> list[int]:
    """Width of each hidden layer: ``units_l{i}`` where given, else the shared ``units``."""
    p = resolve_params(params)
    return [int(p.get(layer_units_name(i), p["units"])) for i in range(int(p["hidden_layers"]))]


def build_optimizer(params: Mapping[str, Any], steps_per_epoch: int | None = None) -> Any:
    """The optimizer named in ``params``, with its learning rate, schedule and weight decay."""
    import keras

    p = resolve_params(params)
    name = p["optimizer"]
    if name not in _OPTIMIZER_CLASSES:
        raise ValueError(f"optimizer: unknown {name!r}; one of {', '.join(OPTIMIZERS)}")
    cls = getattr(keras.optimizers, _OPTIMIZER_CLASSES[name])
    learning_rate: Any = float(p.get("learning_rate") or KERAS_DEFAULT_LR[name])
    if p["lr_schedule"] == "cosine":
        if not steps_per_epoch:
            raise ValueError("lr_schedule 'cosine' needs steps_per_epoch")
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=int(p["epochs"]) * steps_per_epoch
        )
    elif p["lr_schedule"] != "constant":
        raise ValueError(f"lr_schedule: unknown {p['lr_schedule']!r}")
    kwargs: dict[str, Any] = {}
    if float(p["weight_decay"]) > 0 or name == "adamw":  # AdamW left alone decays at its own 0.004
        kwargs["weight_decay"] = float(p["weight_decay"])
    return cls(learning_rate=learning_rate, **kwargs)


def build_model(
    params: Mapping[str, Any], steps_per_epoch: int | None = None, steps_per_execution: int = 1, *,
    input_size: int = 784, class_names: Sequence[str] = DIGITS, preprocessing: str = "mnist",
) -> Any:
    """Build and compile the MLP that ``params`` describes.

    Args:
        params: axis values (``hidden_layers``, ``units``, ``dropout``, ``optimizer``,
            ``learning_rate``, ...); missing ones take :data:`DEFAULT_PARAMS`.
        steps_per_epoch: batches per epoch, needed by the ``cosine`` learning-rate schedule.
        steps_per_execution: batches per compiled call (speed only).
        input_size: pixels per image, flattened (the data's ``side * side``; MNIST's 784).
        class_names: one per output, in label order (MNIST's ten digits by default); the saved
            model carries them (:class:`~mnist_sweep.model.layers.ClassNames`).
        preprocessing: what an image file went through to become a training image (the data's
            ``Dataset.preprocessing``: ``mnist`` or ``resize``); the saved model carries it too, and
            ``predict`` and ``serve`` apply it.

    Returns:
        A compiled ``keras.Sequential``: ``input_size`` inputs, randomly shifted, rotated and scaled during
        training when an ``augment_*`` param is above 0, ``hidden_layers`` Dense layers (each
        optionally batch-normalised, then activated, then dropped out), one softmax output per class,
        sparse categorical cross-entropy, accuracy.

    Every hidden layer gets its dropout layer, at rate 0 too (an exact identity): the rate is an
    input of the compiled step, so a sweep over dropout compiles one program per structure
    instead of two (the measurements behind this are in docs/performance.md).
    """
    import keras

    from mnist_sweep.model.layers import ClassNames, Deskew, NumpyGlorotUniform, RandomAffine, VariableDropout

    def dense(width: int, **kwargs: Any) -> Any:
        return keras.layers.Dense(width, kernel_initializer=NumpyGlorotUniform(), **kwargs)

    p = resolve_params(params)
    layers: list[Any] = [keras.Input(shape=(input_size,))]
    if p["deskew"]:  # training and inference alike: part of the saved model
        layers.append(Deskew())
    augment = {k: float(p[f"augment_{k}"]) for k in ("shift", "rotation", "scale", "elastic")}
    if any(augment.values()):  # training batches only: the layer is an identity at inference
        layers.append(RandomAffine(**augment))
    if float(p["input_dropout"]) > 0:
        layers.append(VariableDropout(float(p["input_dropout"])))

    def activated(layer: Any) -> list[Any]:  # a Dense or convolution layer, batch-normalised if asked, activated
        if p["batch_norm"]:
            return [layer, keras.layers.BatchNormalization(), keras.layers.Activation(p["activation"])]
        return [layer, keras.layers.Activation(p["activation"])]

    if p["architecture"] == "cnn":
        layers += _convolution_blocks(p, input_size, activated)
        widths = [int(p["head_units"])]
    else:
        widths = layer_widths(p)
    for width in widths:
        if p["batch_norm"]:
            layers += activated(dense(width, use_bias=False))
        else:
            layers.append(dense(width, activation=p["activation"]))
        layers.append(VariableDropout(float(p["dropout"])))  # at rate 0 too (docstring: why)
    layers += [dense(len(class_names), activation="softmax"), ClassNames(class_names, preprocessing)]
    model = keras.Sequential(layers, name=str(p["architecture"]))
    model.compile(
        optimizer=build_optimizer(p, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def _convolution_blocks(p: Mapping[str, Any], input_size: int, activated: Any) -> list[Any]:
    """A CNN's body: the flat image as ``side x side x 1``, ``conv_blocks`` blocks of two convolutions
    (``filters``, doubling each block) that end in a halving (2 x 2 pooling, or a stride-2 second
    convolution with ``pooling: none``) and the block's dropout, then flattened for the head."""
    import keras

    from mnist_sweep.model.layers import Pool2x2, VariableDropout

    side = int(round(input_size ** 0.5))
    if side * side != input_size:
        raise ValueError(f"a cnn needs square images: {input_size} pixels is not a square")
    kernel, pooling = int(p["kernel_size"]), str(p["pooling"])
    if pooling != "none" and int(p["conv_blocks"]) > pooled_blocks_that_fit(side):
        raise ValueError(f"conv_blocks: {p['conv_blocks']} blocks of 2 x 2 pooling halve a {side} x {side} image "
                         f"to nothing; at most {pooled_blocks_that_fit(side)} (or pooling: none)")
    body: list[Any] = [keras.layers.Reshape((side, side, 1))]
    for block in range(int(p["conv_blocks"])):
        filters = int(p["filters"]) * 2 ** block
        conv = {"padding": "same", "use_bias": not p["batch_norm"]}
        body += activated(keras.layers.Conv2D(filters, kernel, **conv))
        body += activated(keras.layers.Conv2D(filters, kernel, strides=2 if pooling == "none" else 1, **conv))
        if pooling != "none":
            body.append(Pool2x2(pooling))
        body.append(VariableDropout(float(p["dropout"])))
    return [*body, keras.layers.Flatten()]


def pooled_blocks_that_fit(side: int) -> int:
    """The most convolution blocks ending in 2 x 2 pooling a ``side x side`` image takes: each halves
    it, rounding down, and the last needs 2 pixels (MNIST's 28: 4). Stride-2 halving never runs out."""
    blocks = 0
    while side >= 2:
        side, blocks = side // 2, blocks + 1
    return blocks


def count_params(model: Any) -> int:
    """Parameters of the network (weights, biases, batch-norm statistics), as Keras's
    ``count_params`` counts them, minus the dropout rates and augmentation magnitudes that
    :class:`~mnist_sweep.model.layers.VariableDropout` and :class:`~mnist_sweep.model.layers.RandomAffine` keep
    as weights (a plain ``Dropout`` has none)."""
    from mnist_sweep.model.layers import RandomAffine, VariableDropout

    data_only = (VariableDropout, RandomAffine)
    return int(sum(layer.count_params() for layer in model.layers if not isinstance(layer, data_only)))
