"""The data-preparation pipeline: read, clean, sample, split, fit transforms on train, profile, write.

Three streaming passes over Arrow record batches keep peak memory bounded by the batch size plus a few
bytes per row (a duplicate hash, the label and the split of each row):
1. read the source, clean each batch, spill the cleaned rows to a local Arrow file (duplicates are found
   at its end, from the rows' hashes);
2. assign each row to a split (seeded, stratified where asked) and fit statistics on the train rows;
3. write each split's rows to Parquet and hash them into the fingerprint.
The output is committed last: the version folder first, then `manifest.json` at the root. A run that
fails leaves no manifest, so nothing half-written looks complete.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import json
import os
import queue
import sys
import threading
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from slipway_trainer import artifacts, storage
from slipway_trainer.artifacts import MANIFEST, SALT_ENV, Manifest
from slipway_trainer.config.prep import PrepConfig, PrepSpec
from slipway_trainer.data import profile as profiles
from slipway_trainer.data.cleaning import Cleaner
from slipway_trainer.data.sources import SourceData, open_sources, sources_digest
from slipway_trainer.data.stats import (
    CategoricalStats,
    ImageStats,
    NumericStats,
    image_pixels,
    is_numeric_type,
    numeric_values,
)
from slipway_trainer.data.transforms import FitInput, LabelSpec, Task, TransformError, TransformSpec, fit
from slipway_trainer.raycluster import ensure_ray
from slipway_trainer.workload import Progress, WorkloadError, now

SPLITS = ("train", "validation", "test")
T = TypeVar("T")
MAX_CLASSES = 50  # an integer label with more distinct values is a regression target
RAY_FORMATS = ("csv", "parquet", "jsonl")
TYPE_SAMPLE_ROWS = 10_000  # column types are decided on this many rows from the start
MAX_BALANCE_VALUES = 1_000  # a regression label's distinct values counted one by one in the manifest, at most


def prepare(config: PrepConfig, progress: Progress, workdir: Path) -> dict[str, Any]:
    """Run the pipeline; returns the summary that goes into result.json."""
    spec = config.spec
    progress.update(force=True, phase="Checking")
    digest = sources_digest(
        [spec.source, *spec.extra_sources]
    )  # before reading: a change made while it reads shows at the next refresh
    previous = _current_manifest(config.output_uri)
    if config.refresh and previous is not None and _same_input(previous, spec, digest):
        progress.update(force=True, phase="Unchanged", rowsWritten=previous.rows.get("total", 0))
        return _summary(config.output_uri, previous, changed=False)
    resize = next(((t.size[0], t.size[1]) for t in spec.transforms if t.type == "resize" and t.size), None)
    source = open_sources(spec.source, spec.extra_sources, spec.label, batch_rows=config.batch_rows, resize=resize,
                          hashed=tuple(spec.privacy.hash_columns))  # fmt: skip
    label = spec.label or source.default_label
    image_column = "image" if source.image_shape else None
    _check_columns(spec, source, label)

    progress.update(force=True, phase="Reading", rowsRead=0)
    cleaner = Cleaner(
        label=label,
        drop_columns=list(spec.privacy.drop_columns),
        hash_columns=list(spec.privacy.hash_columns),
        salt=_salt(spec),
        missing=dict(spec.cleaning.missing.columns),
        default_missing=spec.cleaning.missing.default,
        drop_invalid=spec.cleaning.drop_invalid,
        drop_duplicates=spec.cleaning.drop_duplicates,
        image_column=image_column,
    )
    spill = workdir / "cleaned.arrow"
    parallel = config.workers > 1 and source.format in RAY_FORMATS
    if not parallel:
        _arrow_without_pandas()
    batches = _ray_cleaned(source, cleaner, config) if parallel else _cleaned(source, cleaner)
    rows_read, labels = _spill(batches, spill, label, progress)
    stays, hashes = cleaner.first_occurrences()  # duplicates found across all batches at once
    dropped = Counter(source.dropped) + cleaner.dropped
    cleaned = int(np.count_nonzero(stays))
    if cleaned == 0:
        raise WorkloadError(
            "NoRowsLeft",
            f"no rows left after cleaning {rows_read} rows (dropped: "
            f"{dict(dropped) or 'none'}); check the source and the cleaning settings",
        )

    labels = labels.filter(pa.array(stays))
    task, classes = _task(labels, spec, label)
    assignment = np.full(stays.size, -1, dtype=np.int8)  # a spilled duplicate is in no split
    assignment[stays] = _assign_splits(spec, cleaned, labels, classes if task == "classification" else None)
    progress.update(force=True, phase="Writing", rowsCleaned=cleaned)
    staging = workdir / "out"
    stats = _Statistics(_spill_schema(spill), label=label, image_column=image_column,
                        image_shape=source.image_shape, seed=spec.split.seed)  # fmt: skip
    content_hash, counts = _write_splits(spill, assignment, hashes, staging, progress, stats)
    balance = _class_balance(labels, assignment[stays], task) if label else {s: {} for s in SPLITS}
    label_spec = (
        LabelSpec(column=label, task=cast(Task, task), classes=classes, class_names=_names_of(classes, source))
        if label
        else None
    )
    feature_columns = [n for n in _spill_schema(spill).names if n != label]
    try:
        transform = fit(
            FitInput(
                numeric=stats.numeric,
                categorical=stats.categorical,
                image=stats.image,
                image_shape=source.image_shape,
                image_column=image_column,
                columns=feature_columns,
                transforms=list(spec.transforms),
                missing=dict(spec.cleaning.missing.columns)
                | {c: spec.cleaning.missing.default for c in feature_columns if c not in spec.cleaning.missing.columns},
                fill_values=dict(spec.cleaning.missing.values),
                label=label_spec,
            )
        )
    except TransformError as err:
        raise WorkloadError("InvalidTransform", str(err)) from err

    fingerprint = _fingerprint(spec, content_hash)
    version = f"v-{fingerprint.removeprefix('sha256:')[:12]}"
    manifest = _manifest(
        config,
        source=source,
        label=label,
        task=task,
        classes=classes,
        transform=transform,
        stats=stats,
        counts=counts,
        balance=balance,
        rows_read=rows_read,
        cleaned=cleaned,
        dropped=dropped,
        fingerprint=fingerprint,
        version=version,
        schema=_spill_schema(spill),
        digest=digest,
    )
    (staging / "transform.json").write_text(json.dumps(transform.to_json(), indent=2, default=str))
    (staging / MANIFEST).write_text(json.dumps(manifest.dump(), indent=2, default=str))
    _commit(staging, config.output_uri, version, manifest)
    progress.update(force=True, phase="Done", rowsWritten=sum(counts.values()))
    changed = previous is None or previous.fingerprint != fingerprint
    return _summary(config.output_uri, manifest, changed=changed)


def _names_of(classes: list[Any], source: SourceData) -> list[str]:
    """The display names of the classes present, in their order: a source names classes 0..n-1 (Fashion-MNIST's
    ten, a payload log's model's), and the data may hold only some of them."""
    names = list(source.class_names or [])
    if names and all(isinstance(c, int) and 0 <= c < len(names) for c in classes):
        return [names[c] for c in classes]
    return names if len(names) == len(classes) else []


def _summary(output_uri: str, manifest: Manifest, changed: bool) -> dict[str, Any]:
    """What goes into result.json: where the dataset is, which version, how many rows."""
    splits = {s: int(manifest.rows.get(s, 0)) for s in SPLITS}
    return {
        "outputUri": output_uri,
        "manifestUri": storage.join(output_uri, MANIFEST),
        "fingerprint": manifest.fingerprint,
        "version": manifest.version,
        "changed": changed,
        "rows": {**splits, "total": sum(splits.values())},
        "droppedRows": dict(manifest.dropped),
        "task": manifest.task,
    }


def _current_manifest(output_uri: str) -> Manifest | None:
    """The version the dataset's root manifest names now (None before the first, or when it is unreadable)."""
    try:
        return Manifest.model_validate(storage.read_json(storage.join(output_uri, MANIFEST)))
    except (OSError, ValueError):
        return None


def _same_input(manifest: Manifest, spec: PrepSpec, digest: str) -> bool:
    """The current version was made from this content with this spec (its output folder aside)."""
    wanted = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return manifest.source.digest == digest and _data_fields(manifest.spec) == _data_fields(wanted)


# --- checks ------------------------------------------------------------------------------------------


def _check_columns(spec: PrepSpec, source: SourceData, label: str | None) -> None:
    names = source.schema.names
    listed = ", ".join(names)
    if label is None:
        raise WorkloadError("LabelNotSet", f"set spec.label to the column to predict (columns: {listed})")
    if label not in names:
        raise WorkloadError(
            "LabelNotFound", f"label {label!r} is not a column of {spec.source.uri} (columns: {listed})"
        )
    if label in spec.privacy.drop_columns or label in spec.privacy.hash_columns:
        raise WorkloadError("InvalidPrivacy", f"the label {label!r} cannot be dropped or hashed")
    for kind, columns in (
        ("privacy.dropColumns", spec.privacy.drop_columns),
        ("privacy.hashColumns", spec.privacy.hash_columns),
        ("cleaning.missing.columns", list(spec.cleaning.missing.columns)),
    ):
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise WorkloadError(
                "ColumnNotFound",
                f"{kind} names {', '.join(unknown)}, not columns of {spec.source.uri} (columns: {listed})",
            )
    if spec.split.stratify_by and spec.split.stratify_by != label:
        raise WorkloadError(
            "InvalidSplit",
            f"split.stratifyBy must be the label ({label!r}); stratifying by "
            f"another column ({spec.split.stratify_by!r}) is not supported",
        )


def _salt(spec: PrepSpec) -> bytes:
    if not spec.privacy.hash_columns:
        return b""
    salt = os.environ.get(SALT_ENV, "")
    if not salt:
        raise WorkloadError(
            "SaltMissing",
            f"privacy.hashColumns needs a salt in the {SALT_ENV} environment "
            "variable (from the Secret named by privacy.saltSecretRef)",
        )
    return salt.encode()


def _arrow_without_pandas() -> None:
    """Spare the pandas import (0.18 s, a fifth of a million rows' work) that this pipeline never uses.

    On its first conversion of any kind (`pa.array`, `to_numpy`) pyarrow asks once whether pandas can be
    imported, and imports it. Answered "no" here, that probe is settled for the process. pyarrow's explicit
    pandas calls (`Table.from_pandas`, `to_pandas`) still import it when something asks for them, and from then
    on pyarrow knows pandas as usual. Not done when pandas is loaded already, or for Ray Data, which works in
    pandas."""
    if "pandas" in sys.modules:
        return
    sys.meta_path.insert(0, _NO_PANDAS)  # `import pandas` raises ImportError meanwhile
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(_NO_PANDAS)


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "pandas":
            raise ImportError("not imported for data preparation", name=fullname)


_NO_PANDAS = _NoPandas()


# --- pass 1: read and clean --------------------------------------------------------------------------


Counted = tuple[int, pa.RecordBatch]  # rows read, and the rows of them that stayed


def _cleaned(source: SourceData, cleaner: Cleaner) -> Iterator[Counted]:
    """Read on one thread and annotate on another (Arrow's reading and compute, and numpy's hashing, release the
    GIL), each a batch or two ahead of the next step; counting, deduplicating and spilling happen here."""
    reading = _ahead(_decided(source.batches, cleaner), depth=1, name="slipway-read")
    annotated = _ahead(((b.num_rows, cleaner.annotate(b)) for b in reading), name="slipway-clean")
    for read, table in annotated:
        yield read, cleaner.settle(table)


_END = object()


def _ahead(items: Iterator[T], depth: int = 2, name: str = "slipway-ahead") -> Iterator[T]:
    """The same items, made on a thread at most `depth` ahead of the consumer; its error is raised here."""
    made: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                made.put((item, error), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as err:
            put(_END, err)
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # an `_ahead` feeding this one stops its own thread now
                close()

    thread = threading.Thread(target=make, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = made.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _ray_cleaned(source: SourceData, cleaner: Cleaner, config: PrepConfig) -> Iterator[Counted]:
    """Read and annotate in parallel with Ray Data (order preserved); count, deduplicate and keep here."""
    import ray.data

    head = next(source.batches, None)
    if head is not None:
        cleaner.decide(pa.Table.from_batches([head]))
    ensure_ray(config.workers)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    fs = source.filesystem
    if source.format == "parquet":
        dataset = ray.data.read_parquet(source.files, filesystem=fs)
    elif source.format == "csv":
        dataset = ray.data.read_csv(
            source.files, filesystem=fs, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
        )
    else:
        dataset = ray.data.read_json(source.files, filesystem=fs, lines=True)
    annotated = dataset.map_batches(
        cleaner.annotate, batch_format="pyarrow", batch_size=config.batch_rows, concurrency=config.workers
    )
    for table in annotated.iter_batches(batch_format="pyarrow", batch_size=None):
        assert isinstance(table, pa.Table)
        yield table.num_rows, cleaner.settle(table)


def _spill(
    batches: Iterator[Counted], spill: Path, label: str | None, progress: Progress
) -> tuple[int, pa.ChunkedArray]:
    """Write the cleaned rows to a local Arrow file (no encoding: it is read twice and gone); the labels stay
    in memory (one value per row)."""
    writer: pa.ipc.RecordBatchFileWriter | None = None
    schema: pa.Schema | None = None
    rows_read = rows_cleaned = 0
    labels: list[pa.Array] = []
    try:
        for read, batch in batches:
            rows_read += read
            if writer is None:
                schema = batch.schema
                writer = pa.ipc.new_file(spill, schema)
            assert schema is not None
            cleaned = _conform(batch, schema)
            if cleaned.num_rows:
                writer.write_batch(cleaned)
                labels.append(_kept(cleaned.column(label)) if label else pa.nulls(cleaned.num_rows))
                rows_cleaned += cleaned.num_rows
            progress.update(rowsRead=rows_read, rowsCleaned=rows_cleaned)
    finally:
        if writer is not None:
            writer.close()
    label_type = labels[0].type if labels else pa.null()
    return rows_read, pa.chunked_array(labels, type=label_type)


def _kept(values: pa.Array) -> pa.Array:
    """Numbers kept past their batch live outside Arrow's pool (numpy's memory), so the pool reuses the same
    pages batch after batch instead of holding every page a kept value sits on: memory stays flat."""
    if values.null_count == 0 and is_numeric_type(values.type) and not pa.types.is_boolean(values.type):
        return pa.array(np.array(values.to_numpy(zero_copy_only=False)), values.type)
    return values


def _decided(batches: Iterator[pa.RecordBatch], cleaner: Cleaner) -> Iterator[pa.RecordBatch]:
    """The same batches, after the cleaner has decided column types on the first TYPE_SAMPLE_ROWS rows."""
    head: list[pa.RecordBatch] = []
    for batch in batches:
        head.append(batch)
        if sum(b.num_rows for b in head) >= TYPE_SAMPLE_ROWS:
            break
    if head:
        cleaner.decide(pa.Table.from_batches(head))
    yield from head
    yield from batches


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    try:
        return pa.RecordBatch.from_arrays(
            [batch.column(n).cast(schema.field(n).type) for n in schema.names], schema=schema
        )
    except (KeyError, pa.ArrowInvalid) as err:
        raise WorkloadError(
            "InconsistentSchema", f"a later part of the source has other columns or types than the first ({err})"
        ) from err


# --- split --------------------------------------------------------------------------------------------


def _task(labels: pa.ChunkedArray, spec: PrepSpec, label: str | None) -> tuple[str, list[Any]]:
    kind = labels.type
    distinct = pc.unique(labels).to_pylist()
    if (
        pa.types.is_string(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_dictionary(kind)
        or (pa.types.is_integer(kind) and len(distinct) <= MAX_CLASSES)
    ):
        return "classification", sorted(v for v in distinct if v is not None)
    if not is_numeric_type(kind):
        raise WorkloadError("UnsupportedLabel", f"label {label!r} has type {kind}: use a text, integer or real column")
    return "regression", []


def _assign_splits(spec: PrepSpec, rows: int, labels: pa.ChunkedArray, classes: list[Any] | None) -> np.ndarray:
    """The split of each row: 0 train, 1 validation, 2 test, -1 not in the sample."""
    rng = np.random.default_rng(spec.split.seed)
    selected = np.arange(rows, dtype=np.int32 if rows < 2**31 else np.int64)  # 4 bytes a row where they do
    sample = spec.sample
    if sample is not None:
        keep = sample.rows if sample.rows is not None else round(rows * (sample.fraction or 1.0))
        if keep < rows:
            chosen = np.random.default_rng(sample.seed).choice(rows, size=keep, replace=False)
            selected = np.sort(chosen).astype(selected.dtype)
    assignment = np.full(rows, -1, dtype=np.int8)
    fractions = (spec.split.train, spec.split.validation, spec.split.test)
    if spec.split.stratify_by:
        values = np.asarray(labels.to_numpy(zero_copy_only=False))
        if selected.size < rows:
            values = values[selected]
        for cls in classes or []:
            chosen = values == cls
            members = selected[chosen] if selected.size < rows else np.flatnonzero(chosen).astype(selected.dtype)
            rng.shuffle(members)
            cuts = _cuts(len(members), fractions)
            for split, (lo, hi) in enumerate(cuts):
                if hi == lo and fractions[split] > 0:
                    raise WorkloadError(
                        "StratifiedSplitEmpty",
                        f"class {cls!r} has {len(members)} rows: a stratified split leaves its {SPLITS[split]} "
                        "share empty; drop the class, add rows, or split without stratifyBy",
                    )
                assignment[members[lo:hi]] = split
    else:
        order = selected.copy()
        rng.shuffle(order)
        for split, (lo, hi) in enumerate(_cuts(len(order), fractions)):
            assignment[order[lo:hi]] = split
    if not np.any(assignment == 0):
        raise WorkloadError("EmptySplit", f"the train split is empty ({rows} rows after cleaning)")
    return assignment


def _cuts(n: int, fractions: tuple[float, float, float]) -> list[tuple[int, int]]:
    train = round(n * fractions[0])
    validation = round(n * fractions[1]) if fractions[2] > 0 else n - train
    train = min(train, n)
    validation = min(validation, n - train)
    return [(0, train), (train, train + validation), (train + validation, n)]


# --- passes 2 and 3: statistics on train, while every split is written ----------------------------


def _batches_with_split(spill: Path, assignment: np.ndarray) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    offset = 0
    with pa.OSFile(str(spill)) as file:
        reader = pa.ipc.open_file(file)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            yield batch, assignment[offset : offset + batch.num_rows]
            offset += batch.num_rows


def _spill_schema(spill: Path) -> pa.Schema:
    with pa.OSFile(str(spill)) as file:
        return pa.ipc.open_file(file).schema


class _Statistics:
    """The train split's statistics, fitted batch by batch as the splits are written."""

    def __init__(self, schema: pa.Schema, *, label: str | None, image_column: str | None,
                 image_shape: tuple[int, int, int] | None, seed: int) -> None:  # fmt: skip
        self.numeric: dict[str, NumericStats] = {}
        self.categorical: dict[str, CategoricalStats] = {}
        for i, name in enumerate(schema.names):
            if name in (label, image_column):
                continue
            if is_numeric_type(schema.field(name).type):
                self.numeric[name] = NumericStats(seed=seed + i)
            else:
                self.categorical[name] = CategoricalStats()
        self.image = ImageStats(channels=image_shape[2]) if image_shape else None
        self._image_column, self._image_shape = image_column, image_shape

    def add(self, train: pa.RecordBatch) -> None:
        for name, acc in self.numeric.items():
            acc.add(numeric_values(train.column(name)))
        for name, cat in self.categorical.items():
            cat.add(train.column(name))
        if self.image is not None and self._image_shape is not None and self._image_column is not None:
            height, width, channels = self._image_shape
            self.image.add(image_pixels(train.column(self._image_column), height * width * channels))


def _write_splits(
    spill: Path, assignment: np.ndarray, hashes: np.ndarray, staging: Path, progress: Progress, stats: _Statistics
) -> tuple[str, dict[str, int]]:
    """Write each split's rows and fit `stats` on the train rows; the content hash is of each split's row hashes
    (from cleaning), in order. Parquet encoding runs on two writer threads, the train split's on one and the
    others' on the other (it releases the GIL), while the next batch is split and counted here."""
    schema = _spill_schema(spill)
    text = [f.name for f in schema if not is_numeric_type(f.type)]  # dictionary pages for text only
    writers: dict[str, pq.ParquetWriter] = {}
    counts = dict.fromkeys(SPLITS, 0)
    written = 0
    pending: deque[Future[None]] = deque()
    train_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slipway-write")
    other_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slipway-write")
    lanes = {"train": train_lane, "validation": other_lane, "test": other_lane}  # a split's batches stay in order
    with train_lane, other_lane:
        try:
            for split in SPLITS:
                (staging / split).mkdir(parents=True, exist_ok=True)
                writers[split] = pq.ParquetWriter(
                    staging / split / "part-00000.parquet", schema, compression="zstd", use_dictionary=text,
                    column_encoding=_encodings(schema, text),
                )  # fmt: skip
            for batch, assigned in _batches_with_split(spill, assignment):
                for index, split in enumerate(SPLITS):
                    part = batch.filter(pa.array(assigned == index))
                    if part.num_rows:
                        pending.append(lanes[split].submit(writers[split].write_batch, part))
                        counts[split] += part.num_rows
                        written += part.num_rows
                        if index == 0:
                            stats.add(part)
                while len(pending) > len(SPLITS):  # at most a batch waits: memory stays bounded
                    pending.popleft().result()
                progress.update(rowsWritten=written)
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            train_lane.shutdown(wait=True)
            other_lane.shutdown(wait=True)
            for writer in writers.values():
                writer.close()
    digests = {s: hashlib.sha256(str(schema).encode()) for s in SPLITS}
    for index, split in enumerate(SPLITS):
        digests[split].update(hashes[assignment == index].tobytes())
    combined = hashlib.sha256("".join(digests[s].hexdigest() for s in SPLITS).encode()).hexdigest()
    return combined, counts


def _encodings(schema: pa.Schema, dictionary: list[str]) -> dict[str, str]:
    """Parquet encodings that are quicker to write and smaller for numbers than plain pages: floats split into
    byte streams, integers as deltas (both read by every current Parquet reader). Text keeps its dictionary."""
    encodings = {}
    for f in schema:
        if f.name in dictionary:
            continue
        if pa.types.is_floating(f.type) and not pa.types.is_float16(f.type):
            encodings[f.name] = "BYTE_STREAM_SPLIT"
        elif pa.types.is_integer(f.type):
            encodings[f.name] = "DELTA_BINARY_PACKED"
    return encodings


def _class_balance(labels: pa.ChunkedArray, assignment: np.ndarray, task: str) -> dict[str, dict[str, int]]:
    """Rows per label value in each split (`assignment`: the split of each labelled row, -1 for none). A regression
    label with more than MAX_BALANCE_VALUES distinct values is counted in MAX_BALANCE_VALUES equal bins instead,
    keyed by each bin's middle (the report draws its histogram from either), so the manifest stays small."""
    encoded = pc.dictionary_encode(labels).combine_chunks()
    distinct = len(encoded.dictionary)
    if task == "regression" and distinct > MAX_BALANCE_VALUES:
        values = np.asarray(labels.to_numpy(), dtype=np.float64)
        edges = np.linspace(values.min(), values.max(), MAX_BALANCE_VALUES + 1)
        codes = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, MAX_BALANCE_VALUES - 1)
        keys = [repr(round(float(m), 6)) for m in (edges[:-1] + edges[1:]) / 2]
    else:
        codes = np.asarray(encoded.indices.to_numpy(), dtype=np.int64)  # a label is never null here
        keys = [str(v) for v in encoded.dictionary.to_pylist()]
    split_of = assignment.astype(np.int64)
    counted = np.bincount(np.where(split_of >= 0, split_of * len(keys) + codes, 3 * len(keys)),
                          minlength=3 * len(keys) + 1)[: 3 * len(keys)].reshape(3, len(keys))  # fmt: skip
    return {
        split: dict(sorted((keys[i], int(n)) for i, n in enumerate(counted[index]) if n))
        for index, split in enumerate(SPLITS)
    }


def _fingerprint(spec: PrepSpec, content_hash: str) -> str:
    config = json.dumps(_data_fields(spec.model_dump(mode="json", by_alias=True)), sort_keys=True)
    return "sha256:" + hashlib.sha256(f"{config}\n{content_hash}".encode()).hexdigest()


def _data_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's fields that shape the data: not where it is written, and no empty `extraSources` (a dataset
    keeps its fingerprint across the release that added the field)."""
    return {k: v for k, v in spec.items() if k != "output" and not (k == "extraSources" and not v)}


def _manifest(
    config: PrepConfig,
    *,
    source: SourceData,
    label: str | None,
    task: str,
    classes: list[Any],
    transform: TransformSpec,
    stats: _Statistics,
    counts: dict[str, int],
    balance: dict[str, dict[str, int]],
    rows_read: int,
    cleaned: int,
    dropped: Counter[str],
    fingerprint: str,
    version: str,
    schema: pa.Schema,
    digest: str,
) -> Manifest:
    features: dict[str, Any] = {}
    for name, acc in stats.numeric.items():
        features[name] = profiles.numeric_profile(acc)
    for name, cat in stats.categorical.items():
        features[name] = profiles.categorical_profile(cat)
    if stats.image is not None and source.image_shape:
        features["image"] = profiles.image_profile(stats.image, source.image_shape)
    spec = config.spec
    return Manifest(
        name=config.name,
        version=version,
        fingerprint=fingerprint,
        created_at=now(),
        source=artifacts.Source(uri=spec.source.uri, format=spec.source.format, digest=digest),
        task=task,
        label=label,
        classes=classes,
        class_names=_names_of(classes, source),
        columns=[artifacts.Column(name=f.name, type=str(f.type)) for f in schema],
        images=(
            artifacts.ImageLayout(
                height=source.image_shape[0], width=source.image_shape[1], channels=source.image_shape[2]
            )
            if source.image_shape
            else None
        ),
        rows={"read": rows_read, "cleaned": cleaned, **counts, "total": sum(counts.values())},
        dropped=dict(sorted(dropped.items())),
        class_balance=balance,
        splits={s: f"{version}/{s}" for s in SPLITS},
        transform_uri=f"{version}/transform.json",
        transform=transform.to_json(),
        profile=artifacts.DataProfile(split="train", features=features),
        privacy=artifacts.Privacy(
            dropped_columns=list(spec.privacy.drop_columns), hashed_columns=list(spec.privacy.hash_columns)
        ),
        spec=spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def _commit(staging: Path, output_uri: str, version: str, manifest: Manifest) -> None:
    """Upload the version folder, then write the root manifest last (the commit point)."""
    version_uri = storage.join(output_uri, version)
    try:
        storage.upload_dir(staging, version_uri)
    except BaseException:
        storage.remove(version_uri)
        raise
    storage.write_json_atomic(storage.join(output_uri, MANIFEST), manifest.dump())
