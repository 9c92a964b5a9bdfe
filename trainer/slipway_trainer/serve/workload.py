"""`python -m slipway_trainer serve --config FILE`: load the model, warm it up, serve until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from typing import Any

from slipway_trainer import storage, workload
from slipway_trainer.artifacts import MANIFEST, ArtifactError, Manifest
from slipway_trainer.config.serve import ServeConfig
from slipway_trainer.serve.app import Server
from slipway_trainer.serve.model import ServedModel
from slipway_trainer.workload import WorkloadError


def drift_profile(config: ServeConfig, model: ServedModel) -> dict[str, Any] | None:
    """The train split's feature profile: from `profileUri`, or from the dataset the model card names."""
    uri = config.profile_uri
    if uri is None:
        dataset = (model.card.get("dataset") or {}).get("uri") or (model.card.get("lineage") or {}).get("datasetUri")
        uri = storage.join(dataset, MANIFEST) if dataset else None
    if uri is None or not storage.exists(uri):
        return None
    try:
        return Manifest.read(storage.read_json(uri), uri).profile.features
    except ArtifactError as err:  # serve anyway: the model is fine, only its drift reference is not
        logging.getLogger("slipway.serve").warning("drift is not measured: %s", err)
        return None


def main(config_path: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = workload.load_config(config_path, ServeConfig)
        workdir = storage.staging_dir()
        try:
            model = ServedModel(config.model_uri, config.server.format, workdir, config.device)
            profile = drift_profile(config, model) if config.monitoring.drift.enabled else None
            if config.monitoring.drift.enabled and profile is None:
                logging.getLogger("slipway.serve").warning(
                    "no data profile found for %s: drift is not measured", config.model_uri
                )
            asyncio.run(Server(config, model, profile).serve())
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    except WorkloadError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    return 0
