"""The Kubernetes gpu overlay: rollouts that do not wait for a spare GPU, and the optional
RuntimeClass component, rendered and strictly validated like the rest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.contract.deploy.test_kubernetes import (
    KUBERNETES,
    pod_spec,
    rendered,
    strict_errors,
)
from tests.support.tools import tool


def test_gpu_rollout_replaces_pods_without_a_spare_gpu() -> None:
    deployment = next(o for o in rendered("overlays/gpu") if o["kind"] == "Deployment")
    strategy = deployment["spec"]["strategy"]
    # maxSurge 1 would start a pod that asks for a GPU before one is released: Pending on a
    # full pool, and the rollout hangs.
    assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert "runtimeClassName" not in pod_spec(rendered("overlays/gpu"))


def test_runtime_class_component_renders_and_validates(tmp_path: Path) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copy)
    overlay = copy / "overlays" / "gpu" / "kustomization.yaml"
    text = overlay.read_text()
    assert "# components:\n#   - runtime-class\n" in text  # the documented switch
    overlay.write_text(
        text.replace("# components:\n#   - runtime-class\n", "components:\n  - runtime-class\n")
    )
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(overlay.parent)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    objects = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    assert pod_spec(objects)["runtimeClassName"] == "nvidia"
    errors = [error for manifest in objects for error in strict_errors(manifest)]
    assert not errors, "\n".join(errors)
