"""Project contracts: the README's commands are what CI runs, the core stays pure, compose is valid."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(python3 -m venv[^\n]+)\n```", (ROOT / "README.md").read_text())


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one_verbatim() -> None:
    serve, tests = readme_commands()[:2]
    assert serve.endswith("gpubroker serve")
    assert tests.endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci
    assert any(line.startswith(".venv/bin/ruff check") for line in ci)
    assert ".venv/bin/lint-imports" in ci


def test_import_linter_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is a test dependency"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_docker_compose_wires_postgres_16_and_the_service_with_health_checks() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    postgres, service = compose["services"]["postgres"], compose["services"]["gpubroker"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    env = postgres["environment"]
    expected_url = (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}"
    )
    assert service["environment"]["DATABASE_URL"] == expected_url
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["build"] == "."
    for volume in postgres.get("volumes", []):
        assert volume.split(":")[0] in compose["volumes"]


def test_dockerfile_copies_every_package_it_installs() -> None:
    copied = re.findall(r"^COPY (\S+) ", (ROOT / "Dockerfile").read_text(), flags=re.M)
    for package in ("broker", "providers", "pricing", "migrations", "api", "web"):
        assert package in copied and (ROOT / package / "__init__.py").exists()


def test_docker_compose_runs_api_replicas_behind_a_proxy_and_one_scheduler() -> None:
    raw = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(raw)
    s = compose["services"]
    api, scheduler, proxy = s["gpubroker"], s["scheduler"], s["proxy"]
    assert api["deploy"]["replicas"] >= 2 and "ports" not in api
    assert api["environment"]["GPUBROKER_SCHEDULER"] == "false"
    assert scheduler["command"] == ["gpubroker", "scheduler"]
    assert scheduler.get("deploy", {}).get("replicas", 1) == 1
    url = api["environment"]["DATABASE_URL"]
    assert scheduler["environment"]["DATABASE_URL"] == s["migrate"]["environment"]["DATABASE_URL"] == url
    for name in ("gpubroker", "scheduler"):
        assert s[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert proxy["ports"] == ["127.0.0.1:8000:8000"]
    assert proxy["depends_on"]["gpubroker"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(proxy["healthcheck"]["test"])
    conf = compose["configs"][proxy["configs"][0]["source"]]["content"]
    assert "server gpubroker:8000 resolve;" in conf
    assert not re.search(r"(?<!\$)\$(?!\$)[A-Za-z_{]", raw)  # nginx $vars escaped from compose interpolation
