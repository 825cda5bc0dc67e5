"""docker-compose.yml, .env.example and the README stay in step with the settings.

There is no Docker engine here, so the compose file is checked by reading it: every auxcord
variable is a real setting, dependencies exist, and every long-running server has a healthcheck.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from auxcord.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
ALIASES = {"STORAGE_EMULATOR_HOST"}


def setting_variables() -> set[str]:
    """The variable each setting is read from (its alias, for the few that have one)."""
    variables = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        variables.add(str(choices[0]) if choices else ENV_PREFIX + name.upper())
    return variables


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return dict(environment)


def test_every_auxcord_variable_names_a_real_setting(compose: dict[str, Any]) -> None:
    known = setting_variables()
    for name, service in compose["services"].items():
        for variable in _environment(service):
            if variable.startswith(ENV_PREFIX) or variable in ALIASES:
                assert variable in known, f"{name}: {variable} is not a setting"


def test_auxcord_services_get_the_connection_settings(compose: dict[str, Any]) -> None:
    needed = {
        "AUXCORD_KAFKA_BOOTSTRAP",
        "AUXCORD_MONGODB_URI",
        "AUXCORD_GCS_BUCKET",
        "AUXCORD_SECRET_KEY",
        "AUXCORD_SPOTIFY_CLIENT_ID",
    }
    auxcord_services = [
        name
        for name, service in compose["services"].items()
        if service.get("image") == "auxcord:latest"
    ]
    assert {"api", "producers", "streaming", "airflow-scheduler"} <= set(auxcord_services)
    for name in auxcord_services:
        assert needed <= set(_environment(compose["services"][name])), name


def test_dependencies_exist_and_servers_have_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    required = {
        "kafka",
        "mongodb",
        "gcs",
        "spark-master",
        "spark-worker",
        "postgres",
        "airflow-scheduler",
        "airflow-api-server",
        "airflow-dag-processor",
        "api",
        "producers",
        "streaming",
    }
    assert required <= set(services)
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
        if service.get("restart", "unless-stopped") != "no":
            assert "healthcheck" in service, f"{name} runs for good but has no healthcheck"


def test_kafka_runs_kraft_and_spark_matches_pyspark(compose: dict[str, Any]) -> None:
    import pyspark

    kafka = _environment(compose["services"]["kafka"])
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]
    major_minor = ".".join(pyspark.__version__.split(".")[:2])
    assert f"apache/spark:{major_minor}" in compose["services"]["spark-master"]["image"]


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0]
        for line in text.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert setting_variables() <= documented


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:1500]
    assert "make demo" in head and "make test" in head
