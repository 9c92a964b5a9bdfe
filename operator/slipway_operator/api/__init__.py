"""The four resources of group slipway.dev/v1alpha1 as pydantic models: the one source of truth for the
CRDs (`crd.py`), the operator, and the local validator (`validation.py`)."""

from slipway_operator.api.common import API_VERSION, GROUP, VERSION, Condition, ConditionStatus, Phase
from slipway_operator.api.datasetprep import DatasetPrepSpec, DatasetPrepStatus
from slipway_operator.api.kind import Kind
from slipway_operator.api.kinds import BY_KIND, KINDS
from slipway_operator.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from slipway_operator.api.trainingrun import TrainingRunSpec, TrainingRunStatus
from slipway_operator.api.tuningsweep import TuningSweepSpec, TuningSweepStatus

__all__ = [
    "API_VERSION",
    "BY_KIND",
    "GROUP",
    "KINDS",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "DatasetPrepSpec",
    "DatasetPrepStatus",
    "Kind",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "Phase",
    "TrainingRunSpec",
    "TrainingRunStatus",
    "TuningSweepSpec",
    "TuningSweepStatus",
]
