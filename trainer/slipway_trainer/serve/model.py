"""A served model: the exported network (ONNX Runtime or TorchScript, never unpickled) and its transform spec."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from slipway_trainer import storage
from slipway_trainer.data.transforms import TransformSpec
from slipway_trainer.workload import WorkloadError

FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}


def onnx_providers(device: str) -> list[str]:
    """ONNX Runtime's execution providers for ``device``: CUDA first on a GPU, and only if this build has it."""
    if device != "cuda":
        return ["CPUExecutionProvider"]
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise WorkloadError(
            "NoGpuRuntime",
            "the server was given a GPU (resources.gpus) but its ONNX Runtime has no CUDA provider (the CPU build: "
            "onnxruntime, not onnxruntime-gpu): serve server.format: torchscript on GPUs, build the server image "
            "with onnxruntime-gpu, or set resources.gpus: 0",
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class ServedModel:
    """Loads once; `predict` takes the model's float32 input and returns its raw outputs (thread-safe)."""

    def __init__(self, model_uri: str, fmt: str, workdir: Path, device: str = "cpu") -> None:
        self.uri = model_uri
        self.format = fmt
        self.device = device
        name = FILES[fmt]
        local = workdir / "model"
        local.mkdir(parents=True, exist_ok=True)
        for file in (name, "transform.json", "model_card.json"):
            source = storage.join(model_uri, file)
            if not storage.exists(source):
                if file == "model_card.json":
                    continue
                raise WorkloadError(
                    "ModelNotFound",
                    f"{source} does not exist: export the model in {fmt} (export.formats) or serve another format",
                )
            (local / file).write_bytes(storage.read_bytes(source))
        self.transform = TransformSpec.from_json(json.loads((local / "transform.json").read_text()))
        card_path = local / "model_card.json"
        self.card: dict[str, Any] = json.loads(card_path.read_text()) if card_path.exists() else {}
        self._lock = threading.Lock()
        if fmt == "onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(str(local / name), providers=onnx_providers(device))
            self._input = self._session.get_inputs()[0].name
        else:
            import torch

            if device == "cuda" and not torch.cuda.is_available():
                raise WorkloadError(
                    "NoGpu",
                    "the server was given a GPU (resources.gpus) but CUDA sees none in this pod: check the node's "
                    "NVIDIA driver and device plugin, or set resources.gpus: 0 to serve on the CPU",
                )
            self._module = torch.jit.load(str(local / name), map_location=device)  # type: ignore[no-untyped-call]
            self._module.eval()

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.format == "onnx":
            return np.asarray(self._session.run(None, {self._input: x})[0])
        import torch

        with self._lock, torch.no_grad():
            return np.asarray(self._module(torch.from_numpy(x).to(self.device)).float().cpu().numpy())

    def warm_up(self) -> None:
        """One call with a zero input, so the first request does not pay for lazy initialisation."""
        self.predict(np.zeros((1, *self.transform.input_shape()), dtype=np.float32))

    @property
    def task(self) -> str:
        return self.transform.label.task if self.transform.label else "regression"
