"""docker-compose.yml scales behind one port: the rendered config (``docker compose config``) and
the proxy's nginx.conf agree with each other and with the service's settings and limits."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from service.settings import ServiceSettings
from service.supervisor import ACCEPT_GRACE
from tests.support.tools import tool

ROOT = Path(__file__).resolve().parents[3]
NGINX_CONF = (ROOT / "deploy" / "compose" / "nginx.conf").read_text()
PROFILES = ("gpu", "loadtest", "redis")
# uvicorn's default keep-alive timeout (the service does not change it).
SERVICE_KEEP_ALIVE_S = 5

Service = dict[str, Any]
# After a drain: lifespan shutdown (batch workers, Redis clients) and process exit.
EXIT_MARGIN_S = 3


# Serving ./models/repository instead of the image's demo tables: an override file.
OWN_TABLES = "deploy/compose/own-tables.yml"


@cache
def compose_config(*profiles: str, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    files = [arg for file in ("docker-compose.yml", *overrides) for arg in ("-f", file)]
    result = subprocess.run(
        [tool("docker-compose"), *flags, *files, "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def services() -> dict[str, Service]:
    found: dict[str, Service] = compose_config(*PROFILES)["services"]
    return found


def seconds(duration: str) -> float:
    """A compose duration ("40s", "1m30s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, duration
    return sum(float(value) * units[unit] for value, unit in parts)


def nginx(directive: str) -> list[str]:
    return re.findall(rf"^\s*{directive}\s+([^;]+);", NGINX_CONF, re.M)


def setting(service: Service, name: str) -> int:
    """The service's ``EMBED_<NAME>`` from its environment, else the settings' default."""
    return int(
        service["environment"].get(
            f"EMBED_{name.upper()}", ServiceSettings.model_fields[name].default
        )
    )


def drain_seconds(service: Service) -> int:
    return setting(service, "drain_seconds")


def test_embedding_scales_behind_one_published_port() -> None:
    default = compose_config()["services"]
    assert set(default) == {"embedding", "proxy"}
    embedding, proxy = default["embedding"], default["proxy"]
    # --scale embedding=N: a fixed host port or container name would collide between replicas.
    assert "ports" not in embedding and "container_name" not in embedding
    assert [p["published"] for p in proxy["ports"]] == [
        str(ServiceSettings.model_fields["port"].default)
    ]
    assert proxy["depends_on"]["embedding"]["condition"] == "service_healthy"
    assert any(v["source"].endswith("deploy/compose/nginx.conf") for v in proxy["volumes"])
    assert "healthcheck" in proxy and "healthcheck" in embedding


@pytest.mark.parametrize("name", ["embedding", "embedding-gpu", "embedding-redis"])
def test_stop_grace_covers_the_drain(name: str) -> None:
    service = services()[name]
    # After SIGTERM: the drain delay, the listen backlog taken (at most ACCEPT_GRACE),
    # in-flight requests (at most the drain), lifespan shutdown and exit; then Docker's SIGKILL.
    longest_stop = (
        setting(service, "drain_delay_seconds")
        + ACCEPT_GRACE
        + drain_seconds(service)
        + EXIT_MARGIN_S
    )
    assert seconds(service["stop_grace_period"]) >= longest_stop
    # Read-only root; writes go to a tmpfs at /tmp.
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    for key in service["environment"]:
        if key.startswith("EMBED_"):
            assert key.removeprefix("EMBED_").lower() in ServiceSettings.model_fields, key


def test_nginx_follows_replicas_and_passes_the_service_limits() -> None:
    assert nginx("resolver")[0].split()[0] == "127.0.0.11"
    assert re.search(r"^\s*server\s+embedding:8000\s+resolve\b", NGINX_CONF, re.M)
    assert int(nginx("keepalive")[0]) > 0
    assert nginx("proxy_http_version") == ["1.1"] and 'Connection ""' in NGINX_CONF
    # Upstream idle connections close before the service closes them (else a reused one can 502).
    upstream_idle = [v for v in nginx("keepalive_timeout") if v.endswith("s")]
    assert min(seconds(v) for v in upstream_idle) < SERVICE_KEEP_ALIVE_S
    body = nginx("client_max_body_size")[0]
    assert body.endswith("m")
    assert int(body[:-1]) * 1024 * 1024 >= ServiceSettings.model_fields["max_body_bytes"].default
    # Refused bodies get the contract's error body, not nginx's HTML page.
    assert re.search(r"return 413 '\{\"error\": \{\"code\": \"payload_too_large\"", NGINX_CONF)
    drain = drain_seconds(services()["embedding"])
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        assert seconds(nginx(directive)[0]) >= drain, directive
    listen = int(nginx("listen")[0].split()[0])
    assert services()["proxy"]["ports"][0]["target"] == listen


def test_loadtest_targets_the_proxy() -> None:
    master = services()["locust-master"]
    host = master["command"][master["command"].index("--host") + 1]
    assert host == f"http://proxy:{nginx('listen')[0].split()[0]}"
    assert master["depends_on"]["proxy"]["condition"] == "service_healthy"


def test_redis_profile_pushes_before_serving() -> None:
    config = services()
    push, serving = config["redis-push"], config["embedding-redis"]
    assert config["redis"]["image"].startswith("redis:")
    assert push["depends_on"]["redis"]["condition"] == "service_healthy"
    assert serving["depends_on"]["redis-push"]["condition"] == "service_completed_successfully"
    assert push["image"] == serving["image"] == config["embedding"]["image"]
    program = push["entrypoint"][-1]
    assert '"push"' in program and "--redis" in program
    models = next(v for v in serving["volumes"] if v["target"] == "/models")
    tables = sorted(Path(models["source"]).glob("*.toml"))
    assert tables
    for path in tables:
        table = tomllib.loads(path.read_text())
        assert table["redis"] == push["environment"]["REDIS_URL"], path
        assert table["cache_rows"] > 0
        # A Redis table has no weights file beside its .toml.
        assert (
            not list(path.parent.glob(f"{path.stem}.np*"))
            and not path.with_suffix(".onnx").exists()
        )


def test_a_fresh_clone_mounts_only_files_it_has() -> None:
    """``docker compose up`` on a fresh clone: every bind mount's source is in the repository
    (a missing one would be created empty by Docker and, on /models, hide the image's demo)."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name, service in services().items():
        for volume in service.get("volumes", []):
            if volume["type"] != "bind":
                continue
            source = Path(volume["source"]).relative_to(ROOT).as_posix()
            assert any(f == source or f.startswith(f"{source}/") for f in tracked), (name, source)


def test_own_tables_override_mounts_the_model_repository_read_only() -> None:
    config = compose_config(*PROFILES, overrides=(OWN_TABLES,))["services"]
    for name, target in (
        ("embedding", "/models"),
        ("embedding-gpu", "/models"),
        ("redis-push", "/source"),
    ):
        (volume,) = [v for v in config[name]["volumes"] if v["target"] == target]
        assert volume["source"] == str(ROOT / "models" / "repository"), name
        assert volume["read_only"], name
        # A missing folder fails `up` rather than being created empty over the demo tables.
        assert volume["bind"]["create_host_path"] is False, name
