"""A real MLflow tracking server for the tests: the `mlflow` package's own `mlflow server`, a SQLite backend, and
its artifacts on the test bed's S3 store (served through the tracking server, `--serve-artifacts`).

`mlflow` pins pyarrow below the version Slipway's environment uses, so the server lives in a virtual environment of
its own under the test bed's cache (`~/.cache/slipway-testbed/mlflow-<version>`), made once from PyPI. The tests
read back what Slipway logged with MLflow's own client from that environment (`MlflowServer.client_python`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from buildkit import CACHE, _locked, _log
from common import Component, TestbedError, free_port, wait_until

MLFLOW_VERSION = "3.17.2"
PINS = (f"mlflow=={MLFLOW_VERSION}", "boto3")  # boto3: the server writes artifacts to S3


def mlflow_venv() -> Path:
    """The server's virtual environment, made once (a venv cannot be moved, so it is made in place and marked
    complete last; a half-made one is removed and made again); `SLIPWAY_MLFLOW_VENV` names one made already."""
    given = os.environ.get("SLIPWAY_MLFLOW_VENV")
    if given:
        return Path(given)
    venv = CACHE / f"mlflow-{MLFLOW_VERSION}"
    with _locked("mlflow"):
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        _log(f"making the MLflow server's environment ({', '.join(PINS)}, about 900 MB, once)")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *PINS],
                           check=True)  # fmt: skip
        except subprocess.CalledProcessError as err:
            shutil.rmtree(venv, ignore_errors=True)
            raise TestbedError(f"could not install {' '.join(PINS)} from PyPI: {err}") from None
        (venv / ".complete").touch()
    return venv


@dataclass
class MlflowServer:
    """`mlflow server` on loopback; `artifacts` is where it keeps artifacts (an s3:// folder of the test bed)."""

    workdir: Path
    artifacts: str
    s3_env: dict[str, str]
    component: Component | None = None
    port: int = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client_python(self) -> Path:
        return mlflow_venv() / "bin" / "python"

    def start(self) -> None:
        venv = mlflow_venv()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = [
            str(venv / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", self.artifacts, "--workers", "1",
        ]  # fmt: skip
        self.component = Component("mlflow", argv, self.workdir / "mlflow.log")
        self.component.start(env=self.s3_env)
        wait_until("the MLflow server", lambda: _answers(self.uri + "/health"), 120, self.component)

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop(timeout=3)  # it does not stop on SIGTERM within 10 s; nothing of it is kept

    def read(self, script: str) -> object:
        """Runs `script` with MLflow's own client (`client` = MlflowClient(this server)) and returns what it
        printed as JSON: how the tests read back what Slipway logged."""
        prelude = f"import json, mlflow\nfrom mlflow import MlflowClient\nclient = MlflowClient({self.uri!r})\n"
        done = subprocess.run([str(self.client_python), "-c", prelude + script], capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        if done.returncode != 0:
            raise TestbedError(f"MLflow's client failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return bool(answer.status == 200)
