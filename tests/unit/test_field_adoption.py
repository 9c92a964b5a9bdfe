"""Slipway's POST-created fields turned into its applied fields (`backends.kubernetes.adopted_fields`): the pure
part of what the integration test `test_a_new_runs_rayjob_is_created_with_one_post...` runs on the API server."""

from __future__ import annotations

from slipway_operator.backends.kubernetes import adopted_fields, created_fields


def test_an_update_entry_is_merged_into_slipways_apply_entry_and_others_are_left_alone() -> None:
    kuberay = {"manager": "kuberay-operator", "operation": "Update", "subresource": "status",
               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:jobStatus": {}}}}  # fmt: skip
    applied = {"manager": "slipway", "operation": "Apply", "apiVersion": "ray.io/v1", "fieldsType": "FieldsV1",
               "fieldsV1": {"f:spec": {"f:entrypoint": {}}}, "time": "2026-12-07T10:00:00Z"}  # fmt: skip
    created = {"manager": "slipway", "operation": "Update", "apiVersion": "ray.io/v1", "fieldsType": "FieldsV1",
               "fieldsV1": {"f:metadata": {"f:annotations": {"f:slipway.dev/held": {}}},
                            "f:spec": {"f:suspend": {}, "f:entrypoint": {}}},
               "time": "2026-12-07T11:00:00Z"}  # fmt: skip
    entries = [kuberay, applied, created]
    assert created_fields({"managedFields": entries}) == [created]

    adopted = adopted_fields(entries)

    assert adopted is not None
    assert adopted[0] == kuberay
    assert len(adopted) == 2
    assert adopted[1] == {
        "manager": "slipway", "operation": "Apply", "apiVersion": "ray.io/v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:annotations": {"f:slipway.dev/held": {}}},
                     "f:spec": {"f:entrypoint": {}, "f:suspend": {}}},
        "time": "2026-12-07T11:00:00Z",
    }  # fmt: skip
    assert entries[1]["fieldsV1"] == {"f:spec": {"f:entrypoint": {}}}  # the entries read are not changed


def test_an_update_entry_alone_becomes_an_apply_entry_and_nothing_to_adopt_is_none() -> None:
    created = {"manager": "slipway", "operation": "Update", "apiVersion": "ray.io/v1", "fieldsType": "FieldsV1",
               "fieldsV1": {"f:spec": {"f:suspend": {}}}, "time": "2026-12-07T11:00:00Z"}  # fmt: skip
    assert adopted_fields([created]) == [{**created, "operation": "Apply"}]
    status_only = {**created, "subresource": "status"}  # a status write of Slipway's is not what a POST created
    assert adopted_fields([status_only]) is None
    assert adopted_fields([{**created, "operation": "Apply"}]) is None
    assert adopted_fields([]) is None
