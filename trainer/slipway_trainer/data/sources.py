"""Acquisition: a source URI and format in, a stream of Arrow record batches out.

Tabular sources keep their publishers' column names. Image sources (idx, imagefolder) yield an `image`
column of raw uint8 pixels (row-major height x width x channels, as bytes) and a `label` column; their
shape is the reader's `image_shape`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyarrow.fs import FSSpecHandler, PyFileSystem

from slipway_trainer import storage
from slipway_trainer.artifacts import PAYLOAD_CLASS_NAMES, PAYLOAD_IMAGE
from slipway_trainer.config.prep import Source
from slipway_trainer.datasets import FASHION_MNIST_DIR, SKLEARN_SETS, fashion_mnist_missing
from slipway_trainer.privacy import PREHASHED
from slipway_trainer.workload import WorkloadError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
EXTENSION_FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass
class SourceData:
    """What a source yields: its schema, its batches, and what is known about it."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    image_shape: tuple[int, int, int] | None = None
    default_label: str | None = None
    class_names: tuple[str, ...] | None = None
    # Rows the reader itself had to drop (unreadable images), by reason.
    dropped: dict[str, int] = field(default_factory=dict)
    # For file sources Ray Data can read in parallel (csv, parquet, jsonl): the files, their filesystem, format.
    files: list[str] = field(default_factory=list)
    filesystem: Any = None
    format: str | None = None


def open_source(
    source: Source, batch_rows: int = 65536, resize: tuple[int, int] | None = None, own_credentials: bool = True
) -> SourceData:
    """Open a source. `resize` (height, width) applies to image folders as they are read. `own_credentials`: read
    with the source's Secret (SOURCE_AWS_*) when there is one, else with the store's."""
    uri = source.uri
    if uri.startswith("builtin://"):
        return _builtin(uri.removeprefix("builtin://"), batch_rows)
    if not uri.startswith(("file://", "s3://", "https://")):
        raise WorkloadError("UnsupportedSource", f"source.uri {uri}: use s3://, https://, file:// or builtin://")
    fs, path = storage.resolve(uri, **(storage.source_options(uri) if own_credentials else {}))
    if source.format == "payloads":  # a folder of two partitioned logs, not a set of files of one table
        return _payloads(fs, path, uri, batch_rows)
    files = _list_files(fs, path, uri)
    fmt = source.format or _infer_format(fs, path, files, uri)
    if fmt == "imagefolder":
        return _imagefolder(fs, path, uri, resize)
    if fmt == "idx":
        images = [f for f in files if "images" in posixpath.basename(f)]
        labels = [f for f in files if "labels" in posixpath.basename(f)]
        return _idx(fs, images, labels, batch_rows)
    return _tabular(fs, files, fmt, uri, batch_rows)


def open_sources(
    source: Source, extra: list[Source], label: str | None, batch_rows: int = 65536,
    resize: tuple[int, int] | None = None, hashed: tuple[str, ...] = (),
) -> SourceData:  # fmt: skip
    """`source`, with the rows of the `extra` sources added after its own, each batch conformed to its schema. A
    payload log holds the `hashed` columns hashed already (the server applies the dataset's privacy rules): its
    batches say so in their schema metadata, and cleaning does not hash them twice."""
    primary = open_source(source, batch_rows=batch_rows, resize=resize)
    if not extra:
        return primary
    label = label or primary.default_label
    added = [(s, open_source(s, batch_rows=batch_rows, own_credentials=False)) for s in extra]
    for i, (spec, data) in enumerate(added):
        if data.image_shape != primary.image_shape:  # images of another size, or tables and images together
            theirs, ours = data.image_shape or "tabular rows", primary.image_shape or "tabular rows"
            raise WorkloadError(
                "UnsupportedSource",
                f"extraSources[{i}] {spec.uri}: its rows are {theirs}, the source's are {ours}; only rows of the "
                "same kind and image size can be added",
            )

    def batches() -> Iterator[pa.RecordBatch]:
        yield from primary.batches
        for i, (spec, data) in enumerate(added):
            payloads = spec.format == "payloads"
            renamed = {"truth": label} if payloads and label else {}
            for batch in data.batches:
                yield _conform(batch, primary.schema, renamed, f"extraSources[{i}] {spec.uri}",
                               set(hashed) if payloads else set())  # fmt: skip

    return SourceData(schema=primary.schema, batches=batches(), image_shape=primary.image_shape,
                      default_label=primary.default_label, class_names=primary.class_names,
                      dropped=primary.dropped)  # fmt: skip


def _conform(
    batch: pa.RecordBatch, schema: pa.Schema, renamed: dict[str, str], where: str, prehashed: set[str]
) -> pa.RecordBatch:
    """`batch` with `schema`'s columns in its order and types (`renamed` first: a payload log's truth is the
    label); a column the batch lacks is all missing, one the schema lacks is left out. `prehashed` columns stay
    text (hashes), and the batch's metadata names them."""
    names = [renamed.get(n, n) for n in batch.schema.names]
    columns, fields = [], []
    for want in schema:
        wanted = pa.string() if want.name in prehashed else want.type
        fields.append(pa.field(want.name, wanted))
        if want.name not in names:
            columns.append(pa.nulls(batch.num_rows, wanted))
            continue
        column = batch.column(names.index(want.name))
        try:
            columns.append(column.cast(wanted) if column.type != wanted else column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise WorkloadError(
                "UnreadableSource",
                f"{where}: column {want.name!r} holds {column.type} values that are not {want.type} like the "
                f"source's ({err}); fix the file or leave the column out",
            ) from err
    present = sorted(prehashed & set(names))
    metadata = {PREHASHED: ",".join(present).encode()} if present else None
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields, metadata=metadata))


def sources_digest(sources: list[Source]) -> str:
    """The digest of several sources (the first read with its own credentials, the others with the store's)."""
    if len(sources) == 1:
        return source_digest(sources[0])
    parts = [source_digest(s, own_credentials=i == 0) for i, s in enumerate(sources)]
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def source_digest(source: Source, own_credentials: bool = True) -> str:
    """What the source holds, as a digest of its files' contents: a refresh compares it with the one in the current
    version's manifest and skips a source that did not change. Objects in S3 (and HTTPS servers that give one) are
    named by their ETag, a digest of the content the store keeps; other files are hashed here. A file that is only
    touched keeps its digest; a rewritten one with the same bytes too. Built-in sets are fixed by the package."""
    uri = source.uri
    if uri.startswith("builtin://"):
        return "sha256:" + hashlib.sha256(uri.encode()).hexdigest()
    fs, path = storage.resolve(uri, **(storage.source_options(uri) if own_credentials else {}))
    if source.format == "payloads":
        files = sorted(f for f in fs.find(path) if f.endswith(".parquet")) if fs.exists(path) else []
    else:
        files = _list_files(fs, path, uri)
    digest = hashlib.sha256()
    for name in files:
        digest.update(f"{posixpath.relpath(name, path) if name != path else posixpath.basename(name)}\0".encode())
        digest.update(f"{_content_id(fs, name)}\n".encode())
    return "sha256:" + digest.hexdigest()


def _content_id(fs: Any, name: str) -> str:
    """An S3 object's ETag (or an HTTPS server's), else the sha256 of the file's bytes, read in blocks."""
    info = fs.info(name)
    etag = info.get("ETag") or info.get("etag")
    if etag and not str(etag).startswith("W/"):  # a weak ETag does not promise the same bytes
        return f"etag:{str(etag).strip(chr(34))}:{info.get('size')}"
    sha = hashlib.sha256()
    with fs.open(name, "rb") as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
    return f"sha256:{sha.hexdigest()}"


def _list_files(fs: Any, path: str, uri: str) -> list[str]:
    try:
        if any(ch in path for ch in "*?["):
            files = sorted(fs.glob(path))
        elif fs.isdir(path):
            files = sorted(f for f in fs.find(path) if not posixpath.basename(f).startswith((".", "_")))
        elif fs.exists(path):
            files = [path]
        else:
            files = []
    except FileNotFoundError:
        files = []
    except PermissionError as err:
        raise WorkloadError(
            "StorageUnavailable",
            f"source.uri {uri}: access denied ({err}); check the credentials in the source's secretRef",
        ) from err
    if not files:
        if uri.startswith("s3://"):
            _check_bucket(fs, path.split("/", 1)[0], uri)
        raise WorkloadError("SourceNotFound", f"source.uri {uri}: no such file or folder (or the glob matches nothing)")
    return files


def _check_bucket(fs: Any, bucket: str, uri: str) -> None:
    """Nothing was found under an s3:// source: say whether the bucket is there and readable with these
    credentials (s3fs answers "not found" for a prefix it may not list), in the store's own words."""
    try:
        fs.ls(bucket, refresh=True)
    except FileNotFoundError as err:
        raise WorkloadError(
            "StorageUnavailable", f"source.uri {uri}: no such bucket {bucket!r} ({err}); check the bucket's name"
        ) from err
    except PermissionError as err:
        raise WorkloadError(
            "StorageUnavailable",
            f"source.uri {uri}: access denied to bucket {bucket!r} ({err}); check the credentials in the source's "
            "secretRef (or the store Secret's, when it names none)",
        ) from err
    except Exception as err:  # an endpoint that does not answer is botocore's own error, not an OSError
        raise WorkloadError(
            "StorageUnavailable",
            f"source.uri {uri}: the store is unreachable ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
            "check AWS_ENDPOINT_URL and the network",
        ) from err


def _infer_format(fs: Any, path: str, files: list[str], uri: str) -> str:
    if fs.isdir(path) and all(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
        return "imagefolder"
    if any("-ubyte" in posixpath.basename(f) for f in files):
        return "idx"
    for name in files:
        stem = name[:-3] if name.endswith(".gz") else name
        fmt = EXTENSION_FORMATS.get(posixpath.splitext(stem)[1].lower())
        if fmt:
            return fmt
    raise WorkloadError(
        "UnknownFormat",
        f"source.uri {uri}: cannot tell the format from the file names; "
        "set source.format to csv, parquet, jsonl, imagefolder or idx",
    )


# --- tabular -------------------------------------------------------------------------------------


def _tabular(fs: Any, files: list[str], fmt: str, uri: str, batch_rows: int) -> SourceData:
    wanted = [f for f in files if _matches(f, fmt)] or files
    pyfs = arrow_filesystem(fs)
    if fmt == "parquet":
        return _parquet(pyfs, wanted, uri, batch_rows)
    import pyarrow.dataset as pads  # here only: importing it imports pandas (a fifth of a second)

    try:
        file_format: Any = "json" if fmt == "jsonl" else fmt
        if fmt == "csv":  # an empty field is a missing value, not an empty string
            file_format = pads.CsvFileFormat(convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
        dataset = pads.dataset(wanted, format=file_format, filesystem=pyfs)
        if len(wanted) > 1:  # the first file's types would refuse another file's values ("?" in a number column)
            merged = _merged_schema([f.physical_schema for f in dataset.get_fragments()])
            dataset = pads.dataset(wanted, format=file_format, filesystem=pyfs, schema=merged)
        schema = dataset.schema
    except (pa.ArrowInvalid, OSError) as err:
        raise WorkloadError("UnreadableSource", f"source.uri {uri}: cannot read as {fmt}: {err}") from err

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from dataset.to_batches(batch_size=batch_rows)
        except pa.ArrowInvalid as err:
            raise WorkloadError("UnreadableSource", f"source.uri {uri}: a {fmt} file is malformed: {err}") from err

    return SourceData(schema=schema, batches=batches(), files=wanted, filesystem=pyfs, format=fmt)


READ_BUFFER_BYTES = 1 << 20  # Parquet is read through a buffer of this size


def arrow_filesystem(fs: Any) -> Any:
    """The Arrow filesystem that reads what fsspec's `fs` reads: Arrow's own for local files (C++ reads, no
    Python in the loop), else fsspec's behind Arrow's interface (S3 with its Secret's credentials, HTTPS)."""
    from fsspec.implementations.local import LocalFileSystem

    return pafs.LocalFileSystem() if isinstance(fs, LocalFileSystem) else PyFileSystem(FSSpecHandler(fs))


def _parquet(pyfs: Any, files: list[str], uri: str, batch_rows: int) -> SourceData:
    """Parquet files read one after another with pyarrow.parquet, each batch in one schema for them all."""
    try:
        schemas = [pq.read_schema(f, filesystem=pyfs) for f in files]
    except (pa.ArrowInvalid, OSError) as err:
        raise WorkloadError("UnreadableSource", f"source.uri {uri}: cannot read as parquet: {err}") from err
    schema = schemas[0] if all(s.equals(schemas[0]) for s in schemas) else _merged_schema(schemas)

    def batches() -> Iterator[pa.RecordBatch]:
        for name, own in zip(files, schemas, strict=True):
            try:
                # Not pre-buffered: a pre-buffering reader keeps every row group's bytes until the file ends.
                reader = pq.ParquetFile(name, filesystem=pyfs, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
                for batch in reader.iter_batches(batch_size=batch_rows):
                    yield batch if own.equals(schema) else _conform(batch, schema, {}, f"source.uri {uri}", set())
            except (pa.ArrowInvalid, OSError) as err:
                raise WorkloadError("UnreadableSource", f"source.uri {uri}: {name} is malformed: {err}") from err

    return SourceData(schema=schema, batches=batches(), files=files, filesystem=pyfs, format="parquet")


def _merged_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for files whose types were inferred each on its own: a column is the type every file agrees on,
    a float where they are all numbers, else a string (cleaning then decides what is invalid)."""
    types: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for column in schema:
            types.setdefault(column.name, []).append(column.type)

    def merged(found: list[pa.DataType]) -> pa.DataType:
        known = [t for t in found if not pa.types.is_null(t)] or found
        if all(t == known[0] for t in known):
            return known[0]
        if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in known):
            return pa.float64()
        return pa.string()

    return pa.schema([pa.field(name, merged(found)) for name, found in types.items()])


PAYLOAD_KEYS = ["request_id", "row"]
PAYLOAD_ONLY = ("time", "model_version", "prediction")  # what the server logged beside the inputs


def _payloads(fs: Any, path: str, uri: str, batch_rows: int) -> SourceData:
    """A ModelDeployment's payload log joined with its feedback (serve/payloads.py): one row per request row that got
    a truth, with the inputs as the server logged them (after the dataset's privacy rules) and `truth`."""
    pyfs = arrow_filesystem(fs)

    def read(kind: str) -> pa.Table:
        folder = posixpath.join(path, kind)
        files = sorted(f for f in fs.find(folder) if f.endswith(".parquet")) if fs.exists(folder) else []
        if not files:
            raise WorkloadError(
                "EmptySource",
                f"source.uri {uri}: no {kind} parts under {kind}/: is monitoring.payloadLog enabled on the "
                "ModelDeployment, and has feedback been sent (POST /v2/models/<name>/feedback)?",
            )
        try:
            return pa.concat_tables([pq.read_table(f, filesystem=pyfs) for f in files], promote_options="permissive")
        except (pa.ArrowInvalid, OSError) as err:
            raise WorkloadError("UnreadableSource", f"source.uri {uri}: cannot read the {kind} parts: {err}") from err

    payloads, feedback = read("payloads"), read("feedback")
    inputs = payloads.drop_columns([c for c in PAYLOAD_ONLY if c in payloads.column_names])
    layout = _image_layout(fs, path)
    if layout is None and any(pa.types.is_binary(f.type) for f in inputs.schema):
        raise WorkloadError(
            "UnsupportedSource",
            f"source.uri {uri}: binary payloads without the image layout their server writes (slipway.image in the "
            "parts' schema): log them with a server of this version",
        )
    joined = inputs.join(feedback.select([*PAYLOAD_KEYS, "truth"]), keys=PAYLOAD_KEYS, join_type="inner")
    table = joined.drop_columns(PAYLOAD_KEYS).combine_chunks()
    if layout is None:
        return _from_table(table, batch_rows)
    column, shape, class_names = layout
    table = table.select([column, "truth"]).rename_columns(["image", "truth"])  # the pixels, as image sources name them
    return _from_table(table, batch_rows, image_shape=shape, class_names=class_names)


def _image_layout(fs: Any, path: str) -> tuple[str, tuple[int, int, int], tuple[str, ...] | None] | None:
    """(the pixel column, (height, width, channels), the class names) an image model's server wrote into its payload
    parts' schema; None for a tabular model's."""
    folder = posixpath.join(path, "payloads")
    first = min(f for f in fs.find(folder) if f.endswith(".parquet"))
    with fs.open(first, "rb") as handle:
        metadata = pq.read_schema(handle).metadata or {}
    found = metadata.get(PAYLOAD_IMAGE.encode())
    if not found:
        return None
    column, _, dims = found.decode().partition(":")
    height, width, channels = (int(d) for d in dims.split(","))
    names = metadata.get(PAYLOAD_CLASS_NAMES.encode())
    return column, (height, width, channels), tuple(json.loads(names)) if names else None


def _matches(name: str, fmt: str) -> bool:
    stem = name[:-3] if name.endswith(".gz") else name
    return EXTENSION_FORMATS.get(posixpath.splitext(stem)[1].lower()) == fmt


def _from_table(table: pa.Table, batch_rows: int, **known: Any) -> SourceData:
    return SourceData(schema=table.schema, batches=iter(table.to_batches(max_chunksize=batch_rows)), **known)


# --- built-in sets -------------------------------------------------------------------------------


def _builtin(name: str, batch_rows: int) -> SourceData:
    if name == "fashion-mnist":
        missing = fashion_mnist_missing()
        if missing:
            raise WorkloadError(
                "DatasetNotInstalled",
                f"builtin://fashion-mnist needs Debian's dataset-fashion-mnist "
                f"in {FASHION_MNIST_DIR} (missing {', '.join(missing)}): "
                "run `make datasets` or `apt-get install dataset-fashion-mnist`",
            )
        fs, _ = storage.resolve("file:///")
        root = str(FASHION_MNIST_DIR)
        data = _idx(
            fs,
            [f"{root}/train-images-idx3-ubyte.gz", f"{root}/t10k-images-idx3-ubyte.gz"],
            [f"{root}/train-labels-idx1-ubyte.gz", f"{root}/t10k-labels-idx1-ubyte.gz"],
            batch_rows,
        )
        data.class_names = FASHION_CLASSES
        return data
    if name.startswith("sklearn/"):
        which = name.removeprefix("sklearn/")
        if which not in SKLEARN_SETS:
            raise WorkloadError("UnknownBuiltin", f"builtin://{name}: scikit-learn sets are {', '.join(SKLEARN_SETS)}")
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{which}")(as_frame=True)
        frame = bunch.frame
        names = tuple(str(n) for n in getattr(bunch, "target_names", ())) if which != "diabetes" else None
        return _from_table(
            pa.Table.from_pandas(frame, preserve_index=False),
            batch_rows,
            default_label="target",
            class_names=names or None,
        )
    if name == "vega/cars":
        from vega_datasets import data as vega

        table = pa.Table.from_pandas(vega.cars(), preserve_index=False)
        return _from_table(table, batch_rows, default_label="Miles_per_Gallon")
    raise WorkloadError(
        "UnknownBuiltin",
        f"builtin://{name}: use builtin://fashion-mnist, "
        f"builtin://sklearn/<{'|'.join(SKLEARN_SETS)}> or builtin://vega/cars",
    )


# --- idx (MNIST-style) ---------------------------------------------------------------------------


def _read_idx(fs: Any, path: str) -> np.ndarray:
    with fs.open(path, "rb") as raw:
        data = raw.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise WorkloadError("UnreadableSource", f"{path} is not an idx file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise WorkloadError("UnreadableSource", f"{path} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def _idx(fs: Any, images: list[str], labels: list[str], batch_rows: int) -> SourceData:
    if not images or len(images) != len(labels):
        raise WorkloadError("UnreadableSource", "idx sources need matching *images* and *labels* files")
    pixels = [_read_idx(fs, p) for p in sorted(images)]
    targets = [_read_idx(fs, p) for p in sorted(labels)]
    for p, t, name in zip(pixels, targets, sorted(images), strict=True):
        if len(p) != len(t):
            raise WorkloadError("UnreadableSource", f"{name}: {len(p)} images but {len(t)} labels")
    height, width = pixels[0].shape[1:3]
    flat = np.concatenate([p.reshape(len(p), -1) for p in pixels])
    label = np.concatenate(targets).astype(np.int64)
    image = pa.FixedSizeBinaryArray.from_buffers(pa.binary(flat.shape[1]), len(flat), [None, pa.py_buffer(flat)])
    table = pa.table({"image": image.cast(pa.binary()), "label": label})
    return _from_table(table, batch_rows, image_shape=(int(height), int(width), 1), default_label="label")


# --- image folders -------------------------------------------------------------------------------


def _imagefolder(fs: Any, root: str, uri: str, resize: tuple[int, int] | None) -> SourceData:
    from PIL import Image, UnidentifiedImageError

    entries = sorted(f for f in fs.find(root) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not entries:
        raise WorkloadError("SourceNotFound", f"source.uri {uri}: no PNG or JPEG files in class folders")
    images: list[bytes] = []
    labels: list[str] = []
    dropped: dict[str, int] = {}
    shape: tuple[int, int, int] | None = None
    for path in entries:
        label = posixpath.basename(posixpath.dirname(path))
        try:
            with fs.open(path, "rb") as raw, Image.open(io.BytesIO(raw.read())) as img:
                img.load()
                mode = "L" if img.mode in ("L", "1", "I;16") else "RGB"
                converted = img.convert(mode)
                if resize is not None:
                    converted = converted.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(converted, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            dropped["unreadableImage"] = dropped.get("unreadableImage", 0) + 1
            continue
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        this = (int(pixels.shape[0]), int(pixels.shape[1]), int(pixels.shape[2]))
        if shape is None:
            shape = this
        elif this != shape:
            raise WorkloadError(
                "ImageSizesDiffer",
                f"{path} is {this[1]}x{this[0]}x{this[2]} but earlier images "
                f"are {shape[1]}x{shape[0]}x{shape[2]}: add a resize transform",
            )
        images.append(pixels.tobytes())
        labels.append(label)
    table = pa.table({"image": pa.array(images, pa.binary()), "label": pa.array(labels, pa.string())})
    return SourceData(
        schema=table.schema,
        batches=iter(table.to_batches(max_chunksize=4096)),
        image_shape=shape,
        default_label="label",
        dropped=dropped,
    )
