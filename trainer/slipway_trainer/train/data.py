"""A prepared dataset, loaded for training: its manifest, its transform spec, and tensors per split."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from slipway_trainer import storage
from slipway_trainer.artifacts import MANIFEST, ArtifactError, Manifest
from slipway_trainer.data.transforms import TransformError, TransformSpec
from slipway_trainer.workload import WorkloadError


@dataclass
class Split:
    x: np.ndarray  # float32 features: (rows, features) or (rows, C, H, W)
    y: np.ndarray  # int64 class indices or float32 targets
    table: pa.Table  # the raw rows (for fairness groups and permutation importance)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Dataset:
    uri: str
    manifest: Manifest
    transform: TransformSpec

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def num_classes(self) -> int:
        return self.transform.num_classes

    @property
    def input_shape(self) -> list[int]:
        return self.transform.input_shape()

    @property
    def class_names(self) -> list[str]:
        return self.manifest.labels()

    def load(self, split: str) -> Split:
        key = (self.uri, self.manifest.fingerprint, split)
        if key in _Kept.splits:
            return _Kept.splits[key]
        table = read_split(self.uri, self.manifest, split)
        if table.num_rows == 0:
            raise WorkloadError(
                "EmptySplit",
                f"the {split} split of {self.uri} has no rows: prepare the dataset "
                f"with a larger {split} fraction or more data",
            )
        try:
            x = self.transform.features(table)
            y = self.transform.encode_labels(table.column(self.manifest.label))
        except TransformError as err:
            raise WorkloadError("InvalidDataset", f"{self.uri} ({split}): {err}") from err
        loaded = Split(x=x, y=y, table=table)
        if _Kept.on:
            for old in [k for k in _Kept.splits if k[:2] != key[:2]]:
                del _Kept.splits[old]
            _Kept.splits[key] = loaded
        return loaded


class _Kept:
    """A process that trains many times on the same data (a sweep's trial actor, reused from trial to trial) keeps
    the splits it loaded: datasets are immutable per fingerprint, and no training code writes into a split's
    arrays. Only the newest dataset's splits stay."""

    on = False
    splits: dict[tuple[str, str, str], Split] = {}  # noqa: RUF012 (one per process, on purpose)


def keep_loaded_splits() -> None:
    """From now on, this process loads each split of a dataset version once."""
    _Kept.on = True


def open_dataset(uri: str) -> Dataset:
    manifest_uri = storage.join(uri, MANIFEST)
    if not storage.exists(manifest_uri):
        raise WorkloadError(
            "DatasetNotReady",
            f"{manifest_uri} does not exist: the dataset is not prepared yet "
            "(or its preparation failed); run its DatasetPrep first",
        )
    try:
        manifest = Manifest.read(storage.read_json(manifest_uri), manifest_uri)
    except ArtifactError as err:
        raise WorkloadError("InvalidDataset", f"{err}: prepare the dataset again with this Slipway version") from err
    if not manifest.label:
        raise WorkloadError("InvalidDataset", f"{uri} has no label column: training needs one")
    return Dataset(uri=uri, manifest=manifest, transform=TransformSpec.from_json(manifest.transform))


def read_split(uri: str, manifest: Manifest, split: str) -> pa.Table:
    folder = storage.join(uri, manifest.splits[split])
    fs, path = storage.resolve(folder)
    files = sorted(f for f in fs.find(path) if f.endswith(".parquet"))
    if not files:
        raise WorkloadError("InvalidDataset", f"{folder} holds no Parquet files")
    tables = [pq.read_table(io.BytesIO(fs.cat_file(f))) for f in files]
    return pa.concat_tables(tables)


def shard(split: Split, rank: int, world_size: int) -> Split:
    """This worker's share of the rows (every world_size-th row, from its rank)."""
    if world_size == 1:
        return split
    index = np.arange(rank, len(split), world_size)
    return Split(x=split.x[index], y=split.y[index], table=split.table.take(pa.array(index)))
