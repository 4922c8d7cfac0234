"""The Dockerfile and compose file: lint clean, COPY sources present, port and command match the CLI."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from service.cli import build_parser
from service.settings import ServiceSettings
from tests.support.tools import tool

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_hadolint_clean() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "warning", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_config_valid() -> None:
    compose = tool("docker-compose")
    for profile in ([], ["--profile", "gpu"], ["--profile", "loadtest"], ["--profile", "redis"]):
        result = subprocess.run(
            [compose, *profile, "-f", "docker-compose.yml", "config", "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_copy_sources_exist_and_are_not_docker_ignored() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    for line in DOCKERFILE.splitlines():
        match = re.match(r"COPY\s+(?!--from)(.+)\s+\S+$", line.strip())
        if not match:
            continue
        for source in match.group(1).split():
            assert (ROOT / source).exists(), source
            assert (
                f"!{source}" in ignore
                or f"!{source}/" in ignore
                or f"!{source.rstrip('/')}/" in ignore
            ), source


def test_port_and_command_match_cli() -> None:
    exposed = set(re.findall(r"^EXPOSE (\d+)", DOCKERFILE, re.M))
    assert str(ServiceSettings.model_fields["port"].default) in exposed
    assert re.search(r'^ENTRYPOINT \["embedding-service", "serve"\]', DOCKERFILE, re.M)
    assert re.search(r'CMD \["embedding-service", "probe"\]', DOCKERFILE)
    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"serve", "probe"} <= set(subcommands)
    for name in re.findall(r"\bEMBED_([A-Z_]+)=", DOCKERFILE):
        assert name.lower() in ServiceSettings.model_fields, name
    # The last stage is the default target: the CPU image; compose's CPU target precedes CUDA.
    stages = re.findall(r"^FROM (\S+) AS (\S+)", DOCKERFILE, re.M)
    assert stages[-1] == ("runtime", "cpu")
    names = [name for _, name in stages]
    assert names.index("runtime") < names.index("gpu-builder")
    assert names.index("loadtest") < names.index("gpu-builder")
