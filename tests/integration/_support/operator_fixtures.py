"""Session fixtures shared by several operator test modules (loaded with `pytest_plugins`, so one
instance serves every module that names it).

`faulted_models`: models whose pods the kubelet (KWOK's fault stages) cannot start or keep running,
created once with the smallest startup budget the API allows. Their Deployments' progress deadline
is 130 s after creation, so test_operator_faults.py (the first operator module to run) creates them
and checks their Ready reasons, and test_operator_stalled.py (the last) checks that they are
Stalled: the wait for the deadline overlaps with every test in between.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration._support.cluster import Cluster
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import mdep, shared_namespace
from tests.integration._support.operator_faults import FAULTS, MAX_LOAD_SECONDS, FaultedModels


@pytest.fixture(scope="session")
def faulted_models(
    cluster: Cluster, crds: tuple[str, ...], operator: OperatorProcess
) -> Iterator[FaultedModels]:
    if not cluster.faults:
        pytest.skip("fault stages exist only on the local devcluster (KWOK), not on this cluster")
    with shared_namespace(cluster.kubectl, "faults") as namespace:
        models = []
        for name, fault in FAULTS.items():
            model = mdep(name, startup={"maxLoadSeconds": MAX_LOAD_SECONDS})
            model["spec"].update(fault.spec)
            models.append(model)
        cluster.kubectl.apply(models, namespace)
        yield FaultedModels(namespace, time.monotonic())
