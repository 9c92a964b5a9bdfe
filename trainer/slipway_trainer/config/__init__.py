"""The configs that workloads accept.

Light imports only (pydantic): the operator imports these models to build its resource specs and the
workload configs, so a spec field and the workload option it sets are one definition.
"""

from slipway_trainer.config.base import ConfigModel
from slipway_trainer.config.prep import PrepSpec
from slipway_trainer.config.serve import Monitoring, ServerSpec
from slipway_trainer.config.train import TrainSpec
from slipway_trainer.config.tune import TuneSpec

__all__ = ["ConfigModel", "Monitoring", "PrepSpec", "ServerSpec", "TrainSpec", "TuneSpec"]
