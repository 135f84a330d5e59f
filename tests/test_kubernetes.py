"""deploy/kubernetes/ checked without a cluster: every manifest parses, the built-in kinds
validate against the Kubernetes JSON schemas that kubernetes-validate ships (offline, strict),
KEDA's kinds against a schema written from KEDA's documented fields, the pieces refer to each
other correctly, and the KEDA scaler's query runs on a real Postgres and returns the backlog
KEDA turns into a replica count."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import psycopg
import pytest
import yaml

from tests.worker_helpers import REPO_ROOT, create_source, create_vectorizer
from vectorizer.settings import WorkerSettings

MANIFESTS = REPO_ROOT / "deploy" / "kubernetes"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "keda-v1alpha1.json").read_text())
KUBERNETES_VERSION = "1.30"


def documents(name: str) -> list[dict[str, Any]]:
    found = [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]
    assert found, f"{name} has no documents"
    return found


def resources() -> dict[str, dict[str, Any]]:
    """Every object the kustomization applies, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for name in documents("kustomization.yaml")[0]["resources"]:
        for doc in documents(name):
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


def test_every_manifest_validates_offline() -> None:
    files = sorted(path.name for path in MANIFESTS.glob("*.yaml"))
    kustomization = documents("kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization["resources"]) | {"kustomization.yaml", "secret.example.yaml"} == set(
        files
    )
    checked = []
    for name in files:
        if name == "kustomization.yaml":
            continue
        for doc in documents(name):
            if doc["apiVersion"].startswith("keda.sh/"):
                jsonschema.validate(doc, KEDA_SCHEMA)
            else:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            checked.append(doc["kind"])
    assert sorted(checked) == sorted(
        ["Deployment", "Job", "Service", "Secret", "ScaledObject", "TriggerAuthentication"]
    )


def test_the_validators_do_reject_mistakes() -> None:
    deployment = resources()["Deployment"]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    scaled = json.loads(json.dumps(resources()["ScaledObject"]))
    scaled["spec"]["triggers"][0]["metadata"]["targetQueryValue"] = "a thousand"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMA)
    scaled["spec"]["triggers"][0]["metadata"]["targetQueryValue"] = "1000"
    scaled["spec"]["maxReplicas"] = 10  # HPA's name, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMA)


def test_the_pieces_fit_together() -> None:
    objects = resources()
    deployment, job = objects["Deployment"], objects["Job"]
    scaled, auth = objects["ScaledObject"], objects["TriggerAuthentication"]
    secret = documents("secret.example.yaml")[0]
    pod = deployment["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    [install] = job["spec"]["template"]["spec"]["containers"]

    # one image, one Secret for the database URL everywhere
    assert worker["image"] == install["image"]
    assert worker["envFrom"] == install["envFrom"] == [{"secretRef": {"name": "vectorizer"}}]
    assert install["command"] == ["vectorizer", "install"]
    [connection] = auth["spec"]["secretTargetRef"]
    assert connection == {
        "parameter": "connection",
        "name": secret["metadata"]["name"],
        "key": "VECTORIZER_DB_URL",
    }
    assert "VECTORIZER_DB_URL" in secret["stringData"]

    # probes on /healthz at the port the worker serves, reachable from outside the pod
    env = {item["name"]: item["value"] for item in worker["env"]}
    port = int(env["VECTORIZER_METRICS_PORT"])
    assert env["VECTORIZER_METRICS_HOST"] == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in worker["ports"]} == {"metrics": port}
    for probe in ("livenessProbe", "readinessProbe"):
        assert worker[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "metrics"
    assert objects["Service"]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert worker["resources"]["requests"] and worker["resources"]["limits"]["memory"]

    # SIGTERM's drain (and a final heartbeat) fits in the grace period
    assert pod["terminationGracePeriodSeconds"] >= WorkerSettings(db_url="").shutdown_timeout + 10

    # KEDA scales this Deployment, from 1 worker up
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert scaled["spec"]["minReplicaCount"] == 1 < scaled["spec"]["maxReplicaCount"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


def _hpa_replicas(value: int, target: float, low: int, high: int) -> int:
    """What the HPA makes of KEDA's AverageValue metric: ceil(value / target), bounded."""
    return min(high, max(low, math.ceil(value / target)))


def test_the_scaler_query_returns_the_backlog_keda_expects(conn: psycopg.Connection) -> None:
    spec = resources()["ScaledObject"]["spec"]
    [trigger] = spec["triggers"]
    query = trigger["metadata"]["query"]
    target = float(trigger["metadata"]["targetQueryValue"])
    low, high = spec["minReplicaCount"], spec["maxReplicaCount"]

    def backlog() -> int:
        row = conn.execute(query).fetchone()
        assert row is not None and len(row) == 1
        assert isinstance(row[0], int)  # KEDA wants one integer
        return row[0]

    assert backlog() == 0  # no vectorizers at all
    assert _hpa_replicas(backlog(), target, low, high) == 1

    ids = {}
    for name, rows in (("big", 2500), ("small", 300), ("paused", 5000)):
        create_source(conn, name)
        conn.execute(
            f"insert into {name} select i, 't', 'b' from generate_series(1, %s) i", (rows,)
        )
        ids[name] = create_vectorizer(conn, name, name=f"{name}_vec")
    conn.execute(
        "select ai.disable_vectorizer_schedule('paused_vec')"
    )  # not worked on: not counted

    assert backlog() == 2800
    assert _hpa_replicas(backlog(), target, low, high) == 3

    conn.execute(f"delete from ai._vectorizer_q_{ids['big']} where id > 100")  # it drains
    assert backlog() == 400
    assert _hpa_replicas(backlog(), target, low, high) == 1
