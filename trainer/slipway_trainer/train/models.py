"""The model zoo. Shapes come from the dataset: `input_shape` is (features,) for tabular data and (C, H, W)
for images; `outputs` is the number of classes (1 for binary with BCE, 1 for regression)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slipway_trainer.workload import WorkloadError


class ShapeError(WorkloadError):
    def __init__(self, message: str) -> None:
        super().__init__("ModelDoesNotFitData", message)


def _ints(value: Any, default: list[int], name: str) -> list[int]:
    if value is None:
        return default
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and v > 0 for v in values):
        raise WorkloadError(
            "InvalidModelParams", f"model.params.{name} must be a positive integer or a list of them, not {value!r}"
        )
    return list(values)


def _float(params: dict[str, Any], name: str, default: float, low: float = 0.0, high: float = 1.0) -> float:
    value = params.get(name, default)
    if not isinstance(value, int | float) or not low <= float(value) < high:
        raise WorkloadError("InvalidModelParams", f"model.params.{name} must be a number in [{low}, {high})")
    return float(value)


def _image(input_shape: list[int], architecture: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ShapeError(
            f"{architecture} needs image data (channels x height x width), but this dataset has "
            f"{input_shape[0]} tabular features: use mlp, rnn, lstm, gru or transformer"
        )
    return input_shape[0], input_shape[1], input_shape[2]


class MLP(nn.Module):
    def __init__(self, input_shape: list[int], outputs: int, params: dict[str, Any]) -> None:
        super().__init__()
        inputs = int(torch.tensor(input_shape).prod())
        hidden = _ints(params.get("hidden"), [128, 64], "hidden")
        dropout = _float(params, "dropout", 0.0)
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(inputs, width), nn.ReLU(), nn.Dropout(dropout)]
            inputs = width
        layers.append(nn.Linear(inputs, outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


class CNN(nn.Module):
    def __init__(self, input_shape: list[int], outputs: int, params: dict[str, Any]) -> None:
        super().__init__()
        channels, height, width = _image(input_shape, "cnn")
        blocks: list[nn.Module] = []
        for out in _ints(params.get("channels"), [32, 64], "channels"):
            if min(height, width) < 2:
                raise ShapeError(
                    f"cnn with model.params.channels {params.get('channels')} pools {input_shape[1]}x"
                    f"{input_shape[2]} images down to nothing: use fewer conv blocks"
                )
            blocks += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            channels, height, width = out, height // 2, width // 2
        hidden = _ints(params.get("hidden"), [128], "hidden")[0]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, hidden),
            nn.ReLU(),
            nn.Dropout(_float(params, "dropout", 0.0)),
            nn.Linear(hidden, outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # type: ignore[no-any-return]


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.skip = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResNet(nn.Module):
    """A small ResNet: a stem, then one stage of basic blocks per entry of `channels` (stride 2 after the first)."""

    def __init__(self, input_shape: list[int], outputs: int, params: dict[str, Any]) -> None:
        super().__init__()
        channels, _, _ = _image(input_shape, "resnet")
        widths = _ints(params.get("channels"), [32, 64, 128], "channels")
        blocks = _ints(params.get("blocks"), [1], "blocks")[0]
        layers: list[nn.Module] = [
            nn.Conv2d(channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        ]
        inputs = widths[0]
        for i, width in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(inputs, width, 2 if (i > 0 and b == 0) else 1))
                inputs = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(_float(params, "dropout", 0.0)), nn.Linear(inputs, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # type: ignore[no-any-return]


def _as_sequence(x: torch.Tensor) -> torch.Tensor:
    """Images become a sequence of rows (H steps of W*C values); tabular rows a sequence of single features."""
    if x.dim() == 4:
        n, c, h, w = x.shape
        return x.permute(0, 2, 3, 1).reshape(n, h, w * c)
    return x.unsqueeze(-1)


class Recurrent(nn.Module):
    def __init__(self, kind: str, input_shape: list[int], outputs: int, params: dict[str, Any]) -> None:
        super().__init__()
        step = input_shape[0] * input_shape[2] if len(input_shape) == 3 else 1
        hidden = _ints(params.get("hidden"), [128], "hidden")[0]
        layers = _ints(params.get("layers"), [1], "layers")[0]
        dropout = _float(params, "dropout", 0.0)
        cell = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.rnn = cell(step, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(_as_sequence(x))
        return self.head(out[:, -1])  # type: ignore[no-any-return]


class Transformer(nn.Module):
    """A Transformer encoder over image patches, or over tabular features (one token per feature)."""

    def __init__(self, input_shape: list[int], outputs: int, params: dict[str, Any]) -> None:
        super().__init__()
        dim = _ints(params.get("dim"), [64], "dim")[0]
        heads = _ints(params.get("heads"), [4], "heads")[0]
        layers = _ints(params.get("layers"), [2], "layers")[0]
        dropout = _float(params, "dropout", 0.1)
        if dim % heads:
            raise WorkloadError("InvalidModelParams", f"model.params.dim ({dim}) must be a multiple of heads ({heads})")
        if len(input_shape) == 3:
            c, h, w = input_shape
            patch = _ints(params.get("patch"), [_patch(h, w)], "patch")[0]
            if h % patch or w % patch:
                raise ShapeError(f"model.params.patch {patch} does not divide the {h}x{w} images")
            self.embed: nn.Module = nn.Conv2d(c, dim, patch, stride=patch)
            tokens = (h // patch) * (w // patch)
        else:
            self.embed = nn.Linear(1, dim)
            tokens = input_shape[0]
        self.position = nn.Parameter(torch.zeros(1, tokens, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) if x.dim() == 4 else self.embed(x.unsqueeze(-1))
        encoded = self.encoder(tokens + self.position)
        return self.head(encoded.mean(dim=1))  # type: ignore[no-any-return]


def _patch(h: int, w: int) -> int:
    return next((p for p in (7, 4, 8, 2, 1) if h % p == 0 and w % p == 0), 1)


class Generator(nn.Module):
    def __init__(self, latent: int, image_shape: list[int], hidden: int) -> None:
        super().__init__()
        self.image_shape = image_shape
        size = int(torch.tensor(image_shape).prod())
        self.net = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden * 2),
            nn.BatchNorm1d(hidden * 2),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden * 2, size),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)  # type: ignore[no-any-return]


class Discriminator(nn.Module):
    def __init__(self, image_shape: list[int], hidden: int) -> None:
        super().__init__()
        size = int(torch.tensor(image_shape).prod())
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(size, hidden * 2),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.3),
            nn.Linear(hidden * 2, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


def build(architecture: str, input_shape: list[int], outputs: int, params: dict[str, Any]) -> nn.Module:
    """The network for a classification or regression task (not the GAN: see `build_gan`)."""
    if architecture == "mlp":
        return MLP(input_shape, outputs, params)
    if architecture == "cnn":
        return CNN(input_shape, outputs, params)
    if architecture == "resnet":
        return ResNet(input_shape, outputs, params)
    if architecture in ("rnn", "lstm", "gru"):
        return Recurrent(architecture, input_shape, outputs, params)
    if architecture == "transformer":
        return Transformer(input_shape, outputs, params)
    raise WorkloadError("InvalidModel", f"unknown architecture {architecture!r}")


def build_gan(input_shape: list[int], params: dict[str, Any]) -> tuple[Generator, Discriminator, int]:
    _image(input_shape, "gan")
    latent = _ints(params.get("latent"), [64], "latent")[0]
    hidden = _ints(params.get("hidden"), [256], "hidden")[0]
    return Generator(latent, input_shape, hidden), Discriminator(input_shape, hidden), latent


def summary(model: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """Layers with their output shapes and parameter counts, from one forward pass."""
    rows: list[dict[str, Any]] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not list(module.children()):

            def record(mod: nn.Module, _inputs: Any, output: Any, name: str = name) -> None:
                shape = list(output.shape) if isinstance(output, torch.Tensor) else None
                rows.append(
                    {
                        "layer": name,
                        "type": type(mod).__name__,
                        "outputShape": shape,
                        "parameters": sum(p.numel() for p in mod.parameters()),
                    }
                )

            hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(example)
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"layers": rows, "parameters": total, "trainableParameters": trainable}
