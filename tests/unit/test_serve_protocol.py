"""The inference protocol's reading of tabular inputs: a date column is served as training saw it."""

from __future__ import annotations

import datetime

import pyarrow as pa
import pytest

from slipway_trainer.data.stats import numeric_values
from slipway_trainer.serve import protocol


def test_an_iso_date_sent_for_a_date_column_becomes_the_decimal_year_training_used() -> None:
    days = [datetime.date(1971, 1, 1), datetime.date(1982, 7, 2)]
    trained = numeric_values(pa.array(days, pa.date32()))
    served = [protocol._number(d.isoformat()) for d in days]
    assert served == pytest.approx(list(trained), abs=1e-9)
    assert protocol._number("1982-07-02T00:00:00+00:00") == pytest.approx(trained[1], abs=1e-9)
    assert protocol._number("1971.5") == 1971.5 and protocol._number(4) == 4.0
    with pytest.raises(ValueError, match="fast"):
        protocol._number("fast")


def test_the_warm_up_example_is_a_request_the_model_accepts() -> None:
    """The server sends `example` through its whole path before it is ready; it must parse and featurise."""
    from slipway_trainer.data.transforms import ColumnTransform, ImageTransform, LabelSpec, TransformSpec

    image = TransformSpec(
        1, "image", LabelSpec("label", "classification", [0, 1]), image=ImageTransform("image", 28, 28, 1)
    )
    tabular = TransformSpec(
        1,
        "tabular",
        LabelSpec("mpg", "regression"),
        columns=[
            ColumnTransform("hp", "numeric", scale={"type": "standardize", "mean": 100.0, "std": 30.0}),
            ColumnTransform("origin", "categorical", encode={"type": "oneHot", "categories": ["USA", "Japan"]}),
        ],
    )
    for transform, width in ((image, 28 * 28), (tabular, 3)):
        parsed = protocol.parse(protocol.example(transform), transform, max_rows=1)
        x = protocol.features(parsed, transform)
        assert parsed.rows == 1 and x.reshape(1, -1).shape == (1, width)
