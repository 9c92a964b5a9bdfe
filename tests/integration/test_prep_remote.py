"""Data preparation from and to the real S3 server, and from HTTPS, on loopback."""

from __future__ import annotations

import http.server
import io
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
import testbed
from botocore.exceptions import ClientError
from release import s3_client

CSV = "x,y,colour\n" + "".join(f"{i},{i % 2},{'red' if i % 3 else 'blue'}\n" for i in range(200)) + "7,1,red\n"


def run_prep(config: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "slipway_trainer", "prep", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
    )
    assert done.stdout, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.s3
def test_prep_reads_from_and_writes_to_s3(
    object_store: testbed.ObjectStore, bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    s3 = s3_client(object_store)
    s3.put_object(Bucket=bucket, Key="raw/part-0.csv", Body=CSV.encode())
    config = {
        "name": "s3set",
        "outputUri": f"s3://{bucket}/datasets/s3set",
        "spec": {
            "source": {"uri": f"s3://{bucket}/raw/"},
            "label": "y",
            "transforms": [{"type": "standardize", "columns": ["x"]}],
            "split": {"stratifyBy": "y"},
        },
    }
    result = run_prep(config, tmp_path, s3_env)
    assert result["status"] == "Succeeded", result
    assert result["droppedRows"] == {"duplicate": 1}
    assert result["rows"]["total"] == 200
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="datasets/s3set/manifest.json")["Body"].read())
    assert manifest["fingerprint"] == result["fingerprint"]
    key = f"datasets/s3set/{manifest['splits']['train']}/part-00000.parquet"
    train = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    assert train.num_rows == manifest["rows"]["train"] == 160
    progress = json.loads(s3.get_object(Bucket=bucket, Key="datasets/s3set/_run/progress.json")["Body"].read())
    assert progress["phase"] == "Succeeded"


@pytest.mark.s3
def test_wrong_s3_credentials_fail_clearly_without_printing_the_secret(
    object_store: testbed.ObjectStore, bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    s3_client(object_store).put_object(Bucket=bucket, Key="raw.csv", Body=CSV.encode())
    env = {**s3_env, "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"}
    config = {
        "outputUri": (tmp_path / "out").as_uri(),
        "spec": {"source": {"uri": f"s3://{bucket}/raw.csv"}, "label": "y"},
    }
    result = run_prep(config, tmp_path, env)
    assert result["status"] == "Failed"
    assert result["reason"] == "StorageUnavailable" and "access denied" in result["message"], result
    assert f"s3://{bucket}/raw.csv" in result["message"]
    assert "wrong-secret-value" not in json.dumps(result)
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.fixture
def https_csv(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A CSV served over HTTPS on loopback, with a certificate from a throwaway CA."""
    pki = tmp_path / "pki"
    testbed.write_pki(pki)
    body = CSV.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/data/table.csv":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.send_response(200 if self.path == "/data/table.csv" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/data/table.csv", pki / "ca.crt"
    finally:
        server.shutdown()


def test_prep_reads_over_https(https_csv: tuple[str, Path], tmp_path: Path) -> None:
    url, ca = https_csv
    config = {"outputUri": (tmp_path / "out").as_uri(), "spec": {"source": {"uri": url, "format": "csv"}, "label": "y"}}
    result = run_prep(config, tmp_path, {"SSL_CERT_FILE": str(ca)})
    assert result["status"] == "Succeeded", result
    assert result["rows"]["total"] == 200


@pytest.mark.s3
def test_a_source_with_its_own_secret_is_read_with_it_and_the_output_written_with_the_stores(
    object_store: testbed.ObjectStore, bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """A DatasetPrep's `source.secretRef` reaches the pod prefixed (SOURCE_AWS_*, next to the store's AWS_*):
    here the source's key may only read, so the output can only have been written with the store's key, and a
    wrong source secret fails on the source even though the store's key could read it."""
    s3_client(object_store).put_object(Bucket=bucket, Key="raw/part-0.csv", Body=CSV.encode())
    reader, secret = object_store.reader_key
    source_env = {
        "SOURCE_AWS_ACCESS_KEY_ID": reader,
        "SOURCE_AWS_SECRET_ACCESS_KEY": secret,
        "SOURCE_AWS_ENDPOINT_URL": object_store.endpoint,
        "SOURCE_AWS_REGION": "us-east-1",
    }
    config = {
        "outputUri": f"s3://{bucket}/datasets/two-keys",
        "spec": {"source": {"uri": f"s3://{bucket}/raw/"}, "label": "y"},
    }
    result = run_prep(config, tmp_path, {**s3_env, **source_env})
    assert result["status"] == "Succeeded", result
    s3 = s3_client(object_store)
    assert s3.head_object(Bucket=bucket, Key="datasets/two-keys/manifest.json")["ContentLength"] > 0
    readonly = boto3.client("s3", endpoint_url=object_store.endpoint, aws_access_key_id=reader,
                            aws_secret_access_key=secret, region_name="us-east-1")  # fmt: skip
    with pytest.raises(ClientError, match=r"AccessDenied|Forbidden|403"):
        readonly.put_object(Bucket=bucket, Key="datasets/other/x", Body=b"x")  # the source key cannot write

    wrong = {**source_env, "SOURCE_AWS_SECRET_ACCESS_KEY": "wrong-source-secret"}
    config["outputUri"] = f"s3://{bucket}/datasets/wrong-key"
    failed = run_prep(config, tmp_path, {**s3_env, **wrong})
    assert failed["status"] == "Failed" and failed["reason"] == "StorageUnavailable", failed
    assert "access denied" in failed["message"] and "secretRef" in failed["message"], failed
    assert "wrong-source-secret" not in json.dumps(failed)

    config["spec"]["source"]["uri"] = "s3://no-such-bucket-here/raw/"  # a bucket that is not there
    config["outputUri"] = f"s3://{bucket}/datasets/no-bucket"
    missing = run_prep(config, tmp_path, {**s3_env, **source_env})
    assert missing["status"] == "Failed" and missing["reason"] == "StorageUnavailable", missing
    assert "no such bucket 'no-such-bucket-here'" in missing["message"], missing
