"""`python -m slipway_trainer serve --config FILE`: load the model, warm it up, serve until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys

from slipway_trainer import storage, workload
from slipway_trainer.artifacts import MANIFEST, SALT_ENV, ArtifactError, Manifest
from slipway_trainer.config.serve import ServeConfig
from slipway_trainer.serve.app import Server
from slipway_trainer.serve.model import ServedModel
from slipway_trainer.serve.payloads import Privacy
from slipway_trainer.workload import WorkloadError

log = logging.getLogger("slipway.serve")


def dataset_manifest(config: ServeConfig, model: ServedModel) -> Manifest | None:
    """The manifest of the dataset the model was trained on: from `profileUri`, or the one the model card names
    (its train split's profile is the drift baseline; its privacy rules apply to requests and payload logs)."""
    uri = config.profile_uri
    if uri is None:
        dataset = (model.card.get("dataset") or {}).get("uri") or (model.card.get("lineage") or {}).get("datasetUri")
        uri = storage.join(dataset, MANIFEST) if dataset else None
    if uri is None or not storage.exists(uri):
        return None
    try:
        return Manifest.read(storage.read_json(uri), uri)
    except ArtifactError as err:  # serve anyway: the model is fine, only its drift reference is not
        log.warning("drift is not measured: %s", err)
        return None


def privacy_of(manifest: Manifest | None, features: list[str]) -> Privacy:
    """The dataset's privacy rules, with the salt of its hashed columns from the environment (a Secret)."""
    if manifest is None:
        return Privacy()
    rules = manifest.privacy
    salt = os.environ.get(SALT_ENV, "")
    unhashed = [c for c in rules.hashed_columns if c in features] if not salt else []
    if unhashed:
        log.warning(
            "the model reads %s, hashed in training, but the server has no salt (%s from privacy.saltSecretRef): "
            "requests reach the model unhashed and these columns are left out of payload logs",
            ", ".join(unhashed),
            SALT_ENV,
        )
    return Privacy(tuple(rules.dropped_columns), tuple(rules.hashed_columns), salt.encode() if salt else None)


def main(config_path: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = workload.load_config(config_path, ServeConfig)
        if config.monitoring.payload_log.enabled and not config.monitoring.payload_log.uri:
            raise WorkloadError(
                "InvalidConfig", "monitoring.payloadLog.enabled needs monitoring.payloadLog.uri (where parts go)"
            )
        workdir = storage.staging_dir()
        try:
            model = ServedModel(config.model_uri, config.server.format, workdir, config.device)
            manifest = dataset_manifest(config, model)
            profile = manifest.profile.features if manifest and config.monitoring.drift.enabled else None
            if config.monitoring.drift.enabled and profile is None:
                log.warning("no data profile found for %s: drift is not measured", config.model_uri)
            privacy = privacy_of(manifest, model.transform.input_columns())
            asyncio.run(Server(config, model, profile, privacy).serve())
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    except WorkloadError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    return 0
