"""The four kinds, in the order of the journey."""

from __future__ import annotations

from slipway_operator.api import datasetprep, modeldeployment, trainingrun, tuningsweep
from slipway_operator.api.kind import Kind

KINDS: tuple[Kind, ...] = (datasetprep.KIND, trainingrun.KIND, tuningsweep.KIND, modeldeployment.KIND)
BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
