"""The artifact store: any fsspec URL (`file://`, `s3://`, ...), reached the same way by every workload.

Credentials come only from the environment (a Secret on Kubernetes): s3fs reads AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL and AWS_REGION as botocore does. Nothing here logs them.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

SOURCE_ENV_PREFIX = "SOURCE_"  # a DatasetPrep source's own Secret, next to the store's AWS_* (see source_options)


def resolve(uri: str, **options: Any) -> tuple[AbstractFileSystem, str]:
    """The filesystem and the path within it. A bare path is a local file."""
    fs, path = fsspec.core.url_to_fs(uri, **options)
    return fs, path


def source_options(uri: str) -> dict[str, Any]:
    """s3fs options from a source's own credentials (``SOURCE_AWS_*``, its secretRef with a prefix), so reading
    the source never uses, or replaces, the store's ``AWS_*``; empty when it has none or is not on S3."""
    env = {k.removeprefix(SOURCE_ENV_PREFIX): v for k, v in os.environ.items() if k.startswith(SOURCE_ENV_PREFIX)}
    if not uri.startswith("s3://") or not env:
        return {}
    options: dict[str, Any] = {"key": env.get("AWS_ACCESS_KEY_ID"), "secret": env.get("AWS_SECRET_ACCESS_KEY")}
    if env.get("AWS_SESSION_TOKEN"):
        options["token"] = env["AWS_SESSION_TOKEN"]
    if env.get("AWS_ENDPOINT_URL"):
        options["endpoint_url"] = env["AWS_ENDPOINT_URL"]
    if env.get("AWS_REGION"):
        options["client_kwargs"] = {"region_name": env["AWS_REGION"]}
    return options


def join(uri: str, *parts: str) -> str:
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{posixpath.join(rest, *parts)}"
    return os.path.join(uri, *parts)


def as_uri(path_or_uri: str | Path) -> str:
    """`file:///abs/path` for a local path; URIs unchanged."""
    text = str(path_or_uri)
    return text if "://" in text else Path(text).resolve().as_uri()


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return bool(fs.exists(path))


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    return bytes(fs.cat_file(path))


def read_json(uri: str) -> Any:
    """A JSON document (small): on S3 one GET, not a HEAD and a GET (s3fs asks for the size first so as to read a
    big object in parallel parts); the operator reads two per live run on every pass."""
    fs, path = resolve(uri)
    whole = {"max_concurrency": 1} if "s3" in _protocols(fs) else {}
    return json.loads(fs.cat_file(path, **whole))


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Readers see the old content or the new, never a part: a rename locally, one PUT on object stores."""
    fs, path = resolve(uri)
    if _is_local(fs):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        fs.pipe_file(path, data)


def write_json_atomic(uri: str, value: Any) -> None:
    write_bytes_atomic(uri, json.dumps(value, indent=2, sort_keys=True, default=str).encode() + b"\n")


def remove(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def upload_dir(local: Path, uri: str) -> None:
    """Copy a local folder's files under `uri` (replacing what is there)."""
    fs, path = resolve(uri)
    if _is_local(fs):
        shutil.copytree(local, path, dirs_exist_ok=True)
    else:
        for item in sorted(local.rglob("*")):
            if item.is_file():
                fs.put_file(str(item), posixpath.join(path, item.relative_to(local).as_posix()))


def staging_dir(base: Path | None = None) -> Path:
    """A private local scratch folder for a workload."""
    root = base or Path(tempfile.gettempdir())
    path = root / f"slipway-{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)
    return path


def _protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _is_local(fs: AbstractFileSystem) -> bool:
    return _protocols(fs)[0] in ("file", "local")
