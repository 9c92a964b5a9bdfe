"""The Open Inference Protocol v2 (KServe, Triton) without HTTP: requests in, model input and responses out.

Clients send raw values; the transform spec turns them into the model's input. Tabular models take either
one tensor `[rows, features]` in the order the metadata lists (`BYTES` when some features are text) or one
input per column, named by column; image models take pixels `[rows, H, W]`, `[rows, H, W, C]` or
`[rows, C, H, W]` (0-255). Every problem is a `ProtocolError` with an HTTP status and a message naming it.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from slipway_trainer.data.transforms import TransformError, TransformSpec

NUMERIC = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
DATATYPES = NUMERIC | {"BYTES"}


class ProtocolError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    id: str | None
    table: pa.Table  # raw values by column (what the transform spec and the drift monitor read)
    rows: int
    outputs: list[str] | None


def parse(body: Any, transform: TransformSpec, max_rows: int) -> Request:
    if not isinstance(body, dict):
        raise ProtocolError(400, "the request body must be a JSON object with an `inputs` list")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(400, "`inputs` must be a non-empty list of tensors {name, shape, datatype, data}")
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    if transform.image:
        table = _image_table(tensors, transform)
    else:  # values one by one, as JSON gives them
        listed = [Tensor(t.name, t.shape, t.datatype, _as_list(t.data)) for t in tensors]
        table = _tabular_table(listed, transform)
    if table.num_rows > max_rows:
        raise ProtocolError(
            400, f"{table.num_rows} rows in one request; the limit is {max_rows} (server.limits.maxRowsPerRequest)"
        )
    if table.num_rows == 0:
        raise ProtocolError(400, "the request has no rows")
    requested = body.get("outputs")
    names = None
    if requested is not None:
        if not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
            raise ProtocolError(400, "`outputs` must be a list of {name}")
        names = [str(o["name"]) for o in requested]
    request_id = body.get("id")
    return Request(
        id=str(request_id) if request_id is not None else None, table=table, rows=table.num_rows, outputs=names
    )


@dataclass
class Tensor:
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | np.ndarray  # flat


def _as_list(data: list[Any] | np.ndarray) -> list[Any]:
    return data.tolist() if isinstance(data, np.ndarray) else data


def _tensor(raw: Any, index: int) -> Tensor:
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise ProtocolError(400, f"{where} must be an object {{name, shape, datatype, data}}")
    name, shape, datatype, data = raw.get("name"), raw.get("shape"), raw.get("datatype"), raw.get("data")
    if not isinstance(name, str) or not name:
        raise ProtocolError(400, f"{where}.name must be a non-empty string")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(400, f"{where} ({name}).shape must be a list of non-negative integers")
    if datatype not in DATATYPES:
        raise ProtocolError(400, f"{where} ({name}).datatype {datatype!r} is not one of {', '.join(sorted(DATATYPES))}")
    if isinstance(data, np.ndarray):  # gRPC's typed or raw contents: flat numbers by construction
        flat: list[Any] | np.ndarray = data.reshape(-1)
        if datatype not in NUMERIC:
            raise ProtocolError(400, f"{where} ({name}) is {datatype} but holds numbers")
    elif not isinstance(data, list):
        raise ProtocolError(400, f"{where} ({name}).data must be a list")
    elif datatype in NUMERIC and (numbers := _numbers(data)) is not None:
        flat = numbers
    else:
        flat = _flatten(data)
        if datatype in NUMERIC and not all(
            (isinstance(v, int | float) and not isinstance(v, str)) or v is None for v in flat
        ):
            raise ProtocolError(400, f"{where} ({name}) is {datatype} but holds values that are not numbers")
    if len(flat) != int(np.prod(shape)):
        raise ProtocolError(
            400, f"{where} ({name}) has {len(flat)} values but its shape {shape} needs {int(np.prod(shape))}"
        )
    return Tensor(name, shape, datatype, flat)


MAX_NESTING = 32  # levels of lists in a tensor's data (a shape has a handful)


def _numbers(data: list[Any]) -> np.ndarray | None:
    """A numeric tensor's (nested) lists as one flat array when numpy reads them as numbers, at C speed; None
    otherwise (ragged, null, text, an integer beyond 64 bits, too deep): the value-by-value path then says what
    is wrong, or takes what it can (nulls in a table)."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.dtype.kind not in "iufb" or array.ndim > MAX_NESTING:
        return None
    return array.reshape(-1)


def _flatten(data: list[Any], depth: int = 1) -> list[Any]:
    if all(not isinstance(v, list) for v in data):
        return data
    if depth >= MAX_NESTING:
        raise ProtocolError(400, f"tensor data nested more than {MAX_NESTING} levels deep: send it flat or by rows")
    out: list[Any] = []
    for v in data:
        out.extend(_flatten(v, depth + 1) if isinstance(v, list) else [v])
    return out


def _tabular_table(tensors: list[Tensor], transform: TransformSpec) -> pa.Table:
    columns = transform.input_columns()
    if len(tensors) == 1 and tensors[0].name not in columns:
        t = tensors[0]
        if len(t.shape) != 2 or t.shape[1] != len(columns):
            raise ProtocolError(
                400,
                f"input {t.name!r} must have shape [rows, {len(columns)}] with the features "
                f"in this order: {', '.join(columns)} (got {t.shape})",
            )
        rows = np.array(t.data, dtype=object).reshape(t.shape)
        return pa.table({c: _column(rows[:, i].tolist(), transform, c) for i, c in enumerate(columns)})
    by_name = {t.name: t for t in tensors}
    missing = [c for c in columns if c not in by_name]
    unknown = [n for n in by_name if n not in columns]
    if missing or unknown:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else []
        )
        raise ProtocolError(400, f"inputs by column: {'; '.join(problems)} (the model reads: {', '.join(columns)})")
    lengths = {c: by_name[c].shape[0] for c in columns}
    if len(set(lengths.values())) != 1 or any(len(by_name[c].shape) != 1 for c in columns):
        raise ProtocolError(400, f"every column input must have shape [rows] with the same rows (got {lengths})")
    return pa.table({c: _column(_as_list(by_name[c].data), transform, c) for c in columns})


def _column(values: list[Any], transform: TransformSpec, name: str) -> pa.Array:
    kind = next(c.kind for c in transform.columns if c.name == name)
    if kind == "numeric":
        try:
            return pa.array([None if v is None or v == "" else _number(v) for v in values], pa.float64())
        except (TypeError, ValueError, OverflowError) as err:
            raise ProtocolError(
                400, f"feature {name!r} must be numeric (or an ISO date such as 1971-01-01 for a date column): {err}"
            ) from err
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _number(value: Any) -> float:
    """A number, or an ISO date / date-time as the decimal year training made of it (`stats.numeric_values`)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            moment = datetime.datetime.fromisoformat(value)  # a ValueError names the text when it is not a date
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
            return int(moment.timestamp()) / (365.2425 * 86400) + 1970.0
    number = float(value)  # OverflowError for an integer beyond any float
    if not math.isfinite(number):  # 1e400 parses as infinity, and NaN/Infinity are JSON extensions
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _image_table(tensors: list[Tensor], transform: TransformSpec) -> pa.Table:
    assert transform.image is not None
    im = transform.image
    if len(tensors) != 1:
        raise ProtocolError(400, "an image model takes one input tensor of pixels")
    t = tensors[0]
    if t.datatype not in NUMERIC:
        raise ProtocolError(400, f"input {t.name!r}: pixels must be numbers (UINT8 or FP32 in 0..255)")
    try:
        pixels = np.asarray(t.data, dtype=np.float64)
    except (OverflowError, TypeError, ValueError):  # an integer beyond any float
        pixels = np.full(1, np.inf)
    if not np.isfinite(pixels).all() or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise ProtocolError(400, f"input {t.name!r}: pixel values must be within 0..255")
    shape = t.shape
    expected = [(im.height, im.width, im.channels), (im.channels, im.height, im.width)]
    if len(shape) == 3 and im.channels == 1 and tuple(shape[1:]) == (im.height, im.width):
        images = pixels.reshape(shape[0], im.height, im.width, 1)
    elif len(shape) == 4 and tuple(shape[1:]) == expected[0]:
        images = pixels.reshape(shape)
    elif len(shape) == 4 and tuple(shape[1:]) == expected[1]:
        images = pixels.reshape(shape).transpose(0, 2, 3, 1)
    else:
        raise ProtocolError(
            400,
            f"input {t.name!r} has shape {shape}; this model takes [rows, {im.height}, {im.width}"
            f"{', ' + str(im.channels) if im.channels > 1 else ''}] pixels (or "
            f"[rows, {im.channels}, {im.height}, {im.width}])",
        )
    raw = np.ascontiguousarray(images.round().astype(np.uint8)).reshape(shape[0], -1)
    return pa.table({im.column: pa.array([row.tobytes() for row in raw], pa.binary())})


def example(transform: TransformSpec) -> dict[str, Any]:
    """A valid one-row request for this model (black pixels; zeros and known categories): the server's warm-up."""
    if transform.image:
        im = transform.image
        shape = [1, im.height, im.width] + ([im.channels] if im.channels > 1 else [])
        return {"inputs": [{"name": "input", "shape": shape, "datatype": "UINT8", "data": [0] * int(np.prod(shape))}]}
    inputs = []
    for column in transform.columns:
        if column.kind == "numeric":
            inputs.append({"name": column.name, "shape": [1], "datatype": "FP64", "data": [0.0]})
        else:
            known = (column.encode or {}).get("categories") or [column.fill if column.fill is not None else ""]
            inputs.append({"name": column.name, "shape": [1], "datatype": "BYTES", "data": [str(known[0])]})
    return {"inputs": inputs}


def features(request: Request, transform: TransformSpec) -> np.ndarray:
    try:
        return transform.features(request.table)
    except TransformError as err:
        raise ProtocolError(400, str(err)) from err


def response(
    request: Request, outputs: np.ndarray, transform: TransformSpec, name: str, version: str
) -> dict[str, Any]:
    """The OIP v2 answer: `label`, `probabilities` (and `class_name`) for a classifier, `prediction` otherwise."""
    return answer(request, outputs, transform, name, version)[0]


def answer(
    request: Request, outputs: np.ndarray, transform: TransformSpec, name: str, version: str
) -> tuple[dict[str, Any], list[Any]]:
    """The OIP v2 answer and the prediction of each row (its label, or its value), whatever outputs were asked."""
    tensors: list[dict[str, Any]] = []
    rows = outputs.shape[0]
    if transform.label and transform.label.task == "classification":
        if outputs.shape[1] == 1:
            p1 = 1 / (1 + np.exp(-outputs[:, 0]))
            probabilities = np.stack([1 - p1, p1], axis=1)
        else:
            shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        labels = transform.decode_classes(probabilities.argmax(axis=1))
        textual = any(isinstance(v, str) for v in labels)
        tensors.append({"name": "label", "shape": [rows], "datatype": "BYTES" if textual else "INT64", "data": labels})
        tensors.append(
            {
                "name": "probabilities",
                "shape": list(probabilities.shape),
                "datatype": "FP32",
                "data": [round(float(v), 6) for v in probabilities.reshape(-1)],
            }
        )
        if transform.label.class_names:
            names = [transform.label.class_names[transform.label.classes.index(v)] for v in labels]
            tensors.append({"name": "class_name", "shape": [rows], "datatype": "BYTES", "data": names})
    else:
        tensors.append(
            {"name": "prediction", "shape": [rows], "datatype": "FP32", "data": [float(v) for v in outputs[:, 0]]}
        )
    predictions = list(tensors[0]["data"])
    if request.outputs is not None:
        unknown = [n for n in request.outputs if n not in {t["name"] for t in tensors}]
        if unknown:
            raise ProtocolError(
                400,
                f"unknown outputs {', '.join(unknown)} (this model returns: {', '.join(t['name'] for t in tensors)})",
            )
        tensors = [t for t in tensors if t["name"] in request.outputs]
    body: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": tensors}
    if request.id is not None:
        body["id"] = request.id
    return body, predictions


def metadata(transform: TransformSpec, name: str, version: str, platform: str) -> dict[str, Any]:
    if transform.image:
        im = transform.image
        inputs = [{"name": "input", "datatype": "UINT8", "shape": [-1, im.height, im.width, im.channels]}]
    else:
        numeric = all(c.kind == "numeric" for c in transform.columns)
        inputs = [{"name": "input", "datatype": "FP64" if numeric else "BYTES", "shape": [-1, len(transform.columns)]}]
    if transform.label and transform.label.task == "classification":
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, transform.num_classes]},
        ]
    else:
        outputs = [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "features": transform.input_columns(),
            "feature_types": {c.name: c.kind for c in transform.columns},
            "task": transform.label.task if transform.label else None,
            "classes": transform.label.classes if transform.label else [],
            "class_names": transform.label.class_names if transform.label else [],
        },
    }
