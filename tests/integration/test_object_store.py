"""The S3-compatible store of the test bed is a real server speaking S3 (SeaweedFS)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from contextlib import closing

import boto3
import pytest
import testbed
from botocore.exceptions import ClientError

pytestmark = pytest.mark.s3


def client(store: testbed.ObjectStore, secret: str | None = None):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        aws_access_key_id=store.access_key,
        aws_secret_access_key=secret or store.secret_key,
        region_name="us-east-1",
    )


def test_objects_round_trip_through_boto3(object_store: testbed.ObjectStore, bucket: str) -> None:
    s3 = client(object_store)
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    s3.put_object(Bucket=bucket, Key="datasets/demo/part-0.bin", Body=payload)
    assert s3.get_object(Bucket=bucket, Key="datasets/demo/part-0.bin")["Body"].read() == payload
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="datasets/")
    assert [o["Key"] for o in listed["Contents"]] == ["datasets/demo/part-0.bin"]


def test_wrong_secret_is_refused(object_store: testbed.ObjectStore, bucket: str) -> None:
    with pytest.raises(ClientError) as refused:
        client(object_store, secret="not-the-secret").list_objects_v2(Bucket=bucket)
    assert refused.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied"}


def test_s3fs_reads_credentials_from_the_environment(s3_env: dict[str, str], bucket: str) -> None:
    # The workloads reach storage through fsspec/s3fs with credentials only in the environment,
    # as a Secret would provide them. Run it in a child process so the environment is all it has.
    code = (
        "import fsspec, sys\n"
        f"fs = fsspec.filesystem('s3')\n"
        f"fs.pipe('{bucket}/runs/a/progress.json', b'{{\"phase\": \"Running\"}}')\n"
        f"sys.stdout.write(fs.cat('{bucket}/runs/a/progress.json').decode())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**s3_env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"phase": "Running"}'


def operator_reads(env: dict[str, str], uri: str) -> list[str | None]:
    """What the operator's reader makes of ``uri`` with only ``env`` (a fresh process: s3fs caches clients)."""
    code = (
        "import json, sys\n"
        "from slipway_operator.reconcile import _read\n"
        f"document, error = _read({uri!r})\n"
        "sys.stdout.write(json.dumps([json.dumps(document) if document else None, error]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_the_operator_says_what_the_store_said_when_it_cannot_read_a_result(
    s3_env: dict[str, str], bucket: str, object_store: testbed.ObjectStore
) -> None:
    """A store that cannot be read is never "not written yet": the operator gets the store's reason (and no
    credential), so a finished run says StorageUnavailable instead of staying Running in silence."""
    client(object_store).put_object(Bucket=bucket, Key="runs/a/result.json", Body=b'{"status": "Succeeded"}')
    uri = f"s3://{bucket}/runs/a/result.json"
    assert operator_reads(s3_env, uri) == ['{"status": "Succeeded"}', None]
    assert operator_reads(s3_env, f"s3://{bucket}/runs/b/result.json") == [None, None]  # not there yet

    wrong_secret = {**s3_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = {**s3_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port}", "AWS_MAX_ATTEMPTS": "1"}
    for env, said in ((wrong_secret, ("Forbidden", "AccessDenied", "SignatureDoesNotMatch", "Permission")),
                      (unreachable, ("connect", "Connect", "refused"))):  # fmt: skip
        document, error = operator_reads(env, uri)
        assert document is None and error is not None and uri in error, error
        assert any(word in error for word in said), error
        assert "not-the-secret" not in error and s3_env["AWS_SECRET_ACCESS_KEY"] not in error
    document, error = operator_reads(s3_env, f"s3://{bucket}-missing/runs/a/result.json")
    assert document is None and error is not None and "bucket" in error.lower(), error


def test_a_result_not_written_yet_costs_one_get_per_look_and_its_bucket_is_looked_at_once_a_minute(
    s3_env: dict[str, str], bucket: str, object_store: testbed.ObjectStore
) -> None:
    """A run waiting for its result.json reads it on every pass, hundreds of runs at a time: each look is one GET
    (no HEAD first), and whether the bucket exists (what tells "not written yet" from "no such bucket") is asked
    once per BUCKET_RECHECK_SECONDS, not on every look. Counted at s3fs's one door to S3 (`_call_s3`)."""
    client(object_store).put_object(Bucket=bucket, Key="runs/a/result.json", Body=b'{"status": "Succeeded"}')
    code = (
        "import json, sys, s3fs\n"
        "from slipway_operator import reconcile\n"
        "calls, call = [], s3fs.S3FileSystem._call_s3\n"
        "async def counted(self, method, *args, **kwargs):\n"
        "    calls.append(getattr(method, '__name__', method))\n"
        "    return await call(self, method, *args, **kwargs)\n"
        "s3fs.S3FileSystem._call_s3 = counted\n"
        "looks = []\n"
        f"for uri in ['s3://{bucket}/runs/b/result.json'] * 3 + ['s3://{bucket}/runs/a/result.json']:\n"
        "    before = len(calls)\n"
        "    document, error = reconcile._read(uri)\n"
        "    looks.append([calls[before:], document, error])\n"
        "sys.stdout.write(json.dumps(looks))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env={**s3_env, "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, second, third, present = json.loads(result.stdout)
    assert first[0][0] == "get_object" and len(first[0]) > 1 and first[1:] == [None, None]  # GET, then the bucket
    assert second == third == [["get_object"], None, None]
    assert present == [["get_object"], {"status": "Succeeded"}, None]
