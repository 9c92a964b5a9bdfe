"""The S3-compatible store of the test bed is a real server speaking S3 (SeaweedFS)."""

from __future__ import annotations

import subprocess
import sys

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
