"""The Kubernetes manifests, offline: kustomize renders base and overlays, every object and every
manifest file passes ``kubernetes-validate --strict``, and the objects fit together (selectors,
HPA target, probes, security context, drain timing) and fit the service (EMBED_* settings)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from base64 import b64decode
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import ServiceSettings
from service.supervisor import ACCEPT_GRACE
from tests.support.tools import tool

ROOT = Path(__file__).resolve().parents[3]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = [
    "base",
    *sorted(f"overlays/{p.name}" for p in (KUBERNETES / "overlays").iterdir()),
]
# The oldest Kubernetes the manifests promise to fit, and the newest schema bundled.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

Manifest = dict[str, Any]
# After a drain: lifespan shutdown (batch workers, Redis clients) and process exit.
EXIT_MARGIN_S = 3


@cache
def rendered(kustomization: str) -> tuple[Manifest, ...]:
    """The objects ``kubectl kustomize`` renders for base or an overlay."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(KUBERNETES / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(objects: tuple[Manifest, ...], kind: str, name: str = "embedding-service") -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_spec(objects: tuple[Manifest, ...]) -> Manifest:
    spec: Manifest = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: tuple[Manifest, ...]) -> Manifest:
    spec = pod_spec(objects)
    found: Manifest = next(c for c in spec["containers"] if c["name"] == "embedding-service")
    return found


def settings_env(objects: tuple[Manifest, ...]) -> dict[str, str]:
    """The EMBED_* environment the pods get from the settings ConfigMap."""
    data: dict[str, str] = one(objects, "ConfigMap", "embedding-service-settings")["data"]
    return data


def strict_errors(manifest: Manifest) -> list[str]:
    errors = []
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(
                f"{manifest['kind']}/{manifest['metadata']['name']} @{version}: {path}: {exc.message}"
            )
    return errors


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rendered_objects_pass_strict_validation(kustomization: str) -> None:
    objects = rendered(kustomization)
    assert objects
    errors = [error for manifest in objects for error in strict_errors(manifest)]
    assert not errors, "\n".join(errors)


def test_every_manifest_file_passes_strict_validation() -> None:
    files = sorted(p for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml")
    assert len(files) >= 7
    errors = []
    for path in files:
        for manifest in yaml.safe_load_all(path.read_text()):
            errors += [f"{path.relative_to(ROOT)}: {e}" for e in strict_errors(manifest)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_selectors_and_hpa_target_the_pods(kustomization: str) -> None:
    objects = rendered(kustomization)
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": one(objects, "Service")["spec"]["selector"],
        "PodDisruptionBudget": one(objects, "PodDisruptionBudget")["spec"]["selector"][
            "matchLabels"
        ],
    }
    for kind, selector in selectors.items():
        assert selector, f"{kind} selects nothing"
        assert selector.items() <= labels.items(), (
            f"{kind} selector {selector} vs pod labels {labels}"
        )
    target = one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    # The HPA owns the replica count: a `replicas` here would be reset on every apply.
    assert "replicas" not in deployment["spec"]
    service_port = one(objects, "Service")["spec"]["ports"][0]["targetPort"]
    assert service_port in {p["name"] for p in container(objects)["ports"]}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_probes_use_readyz_and_healthz_on_the_service_port(kustomization: str) -> None:
    objects = rendered(kustomization)
    serving = container(objects)
    (port,) = serving["ports"]
    env = settings_env(objects)
    assert int(env["EMBED_PORT"]) == port["containerPort"]
    paths = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in paths.items():
        get = serving[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in (port["name"], port["containerPort"]), probe
    # Liveness must tolerate a slow answer on a busy node before restarting a pod.
    liveness = serving["livenessProbe"]
    assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 20


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_security_context_and_writable_tmp(kustomization: str) -> None:
    objects = rendered(kustomization)
    spec = pod_spec(objects)
    security = container(objects)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m for m in container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert spec["enableServiceLinks"] is False  # no injected EMBED_PORT=tcp://... variables


def models_volume(objects: tuple[Manifest, ...]) -> tuple[Manifest, Manifest]:
    """The container's mount of EMBED_MODELS and the pod volume behind it."""
    models = settings_env(objects)["EMBED_MODELS"]
    mount = next(m for m in container(objects)["volumeMounts"] if m["mountPath"] == models)
    volume = next(v for v in pod_spec(objects)["volumes"] if v["name"] == mount["name"])
    return mount, volume


# Where the models folder is a claim: what its access modes must be. Replicas on several nodes
# need ReadWriteMany; kind/minikube have one node, whose pods may all mount ReadWriteOnce.
CLAIM_ACCESS = {
    "base": "ReadWriteMany",
    "overlays/gpu": "ReadWriteMany",
    "overlays/kind": "ReadWriteOnce",
}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_a_claimed_models_volume_is_writable(kustomization: str) -> None:
    """A fresh, empty volume must take the demo tables (service/cli.py ``prepare_models``:
    an empty folder that cannot be written is exit 2, a crash loop) and row updates (files
    written beside the tables): read-write, writable by the pods' group, shared by replicas."""
    objects = rendered(kustomization)
    mount, volume = models_volume(objects)
    if "persistentVolumeClaim" not in volume:
        # The redis overlay: a Secret of .toml files (updates go to Redis), read-only.
        assert "secret" in volume and mount["readOnly"] is True
        return
    assert mount.get("readOnly", False) is False
    assert volume["persistentVolumeClaim"].get("readOnly", False) is False
    security = pod_spec(objects)["securityContext"]
    assert security["fsGroup"] == container(objects)["securityContext"]["runAsGroup"]
    # Kubelet changes ownership once (a fresh volume), never walks a big volume on each start.
    assert security["fsGroupChangePolicy"] == "OnRootMismatch"
    claim = one(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == [CLAIM_ACCESS[kustomization]]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_grace_period_covers_prestop_and_drain(kustomization: str) -> None:
    objects = rendered(kustomization)
    pre_stop = container(objects)["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        pause = int(pre_stop["sleep"]["seconds"])
    else:
        match = re.search(r"time\.sleep\((\d+)\)", " ".join(pre_stop["exec"]["command"]))
        assert match, pre_stop
        pause = int(match.group(1))
    assert pause >= 3  # long enough for endpoints to be removed before the drain starts
    env = settings_env(objects)
    drain = int(env["EMBED_DRAIN_SECONDS"])
    assert drain >= 30  # Kubernetes' default terminationGracePeriodSeconds
    delay = int(
        env.get(
            "EMBED_DRAIN_DELAY_SECONDS", ServiceSettings.model_fields["drain_delay_seconds"].default
        )
    )
    # SIGTERM comes after the pause; then the drain delay, the listen backlog taken (at most
    # ACCEPT_GRACE), in-flight requests (at most the drain), lifespan shutdown and exit.
    longest_stop = pause + delay + ACCEPT_GRACE + drain + EXIT_MARGIN_S
    assert pod_spec(objects)["terminationGracePeriodSeconds"] >= longest_stop


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_settings_are_service_settings(kustomization: str) -> None:
    env = settings_env(rendered(kustomization))
    for key in env:
        assert key.startswith("EMBED_"), key
        assert key.removeprefix("EMBED_").lower() in ServiceSettings.model_fields, key
    ServiceSettings.model_validate({k.removeprefix("EMBED_").lower(): v for k, v in env.items()})


def test_gpu_overlay_asks_for_a_gpu_and_the_cuda_image() -> None:
    objects = rendered("overlays/gpu")
    serving = container(objects)
    assert serving["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert serving["image"].endswith(":gpu")
    assert settings_env(objects)["EMBED_WORKERS"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec(objects)["tolerations"])


def test_redis_overlay_mounts_redis_tables_and_pushes_rows() -> None:
    objects = rendered("overlays/redis")
    _, volume = models_volume(objects)
    secret = one(objects, "Secret", "embedding-redis-tables")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    data = {key: b64decode(value).decode() for key, value in secret["data"].items()}
    tables = [item["key"] for item in volume["secret"]["items"]]
    assert tables and all(key.endswith(".toml") for key in tables)
    for key in tables:
        table = tomllib.loads(data[key])
        assert table["redis"] == data["REDIS_URL"], key
        assert re.match(r"rediss?://", table["redis"])
        assert table["cache_rows"] > 0
    job = one(objects, "Job", "embedding-redis-push")["spec"]["template"]["spec"]
    (pusher,) = job["containers"]
    assert pusher["image"] == container(objects)["image"]
    assert '"push"' in pusher["args"][0] and "--redis" in pusher["args"][0]
    url = next(e for e in pusher["env"] if e["name"] == "REDIS_URL")["valueFrom"]["secretKeyRef"]
    assert url["name"] == secret["metadata"]["name"]
    redis = one(objects, "Service", "redis")
    port = redis["spec"]["ports"][0]["port"]
    assert re.match(rf"redis://redis:{port}$", data["REDIS_URL"])
