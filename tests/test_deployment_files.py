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


PUBLISHED = {"api": ["127.0.0.1:8000:8000"], "airflow-api-server": ["127.0.0.1:8080:8080"]}
"""Every published port: the dashboard and Airflow, on the host's loopback only (an https
reverse proxy or an SSH tunnel goes in front). Nothing else: not Spark's 7077 (code execution
on the workers), not MongoDB, Kafka or the GCS emulator."""
DATA_SERVICES = {"kafka", "mongodb", "gcs", "spark-master", "spark-worker", "postgres"}


def test_only_the_dashboard_and_airflow_are_published_on_loopback(
    compose: dict[str, Any],
) -> None:
    published = {
        name: [str(port) for port in service["ports"]]
        for name, service in compose["services"].items()
        if service.get("ports") or service.get("expose")
    }
    assert published == PUBLISHED


def test_data_services_sit_on_an_internal_network_only(compose: dict[str, Any]) -> None:
    networks = compose["networks"]
    assert networks["backend"] == {"internal": True}
    for name in DATA_SERVICES:
        assert compose["services"][name]["networks"] == ["backend"], name
    for name, service in compose["services"].items():
        assert service.get("network_mode") is None, f"{name} leaves the project's networks"
        assert "backend" in service["networks"], f"{name} cannot reach the data services"


def test_spark_runs_only_applications_holding_its_secret(compose: dict[str, Any]) -> None:
    from auxcord.spark import cluster_auth_conf

    services = compose["services"]
    for name, variable in (
        ("spark-master", "SPARK_MASTER_OPTS"),
        ("spark-worker", "SPARK_WORKER_OPTS"),
    ):
        options = _environment(services[name])[variable]
        assert options.startswith("-Dspark.authenticate=true "), name
        assert " -Dspark.authenticate.secret=${SPARK_AUTH_SECRET:?" in options, name
    for name, service in services.items():
        if service.get("image") == "auxcord:latest":
            secret = _environment(service)["AUXCORD_SPARK_AUTH_SECRET"]
            assert secret.startswith("${SPARK_AUTH_SECRET:?"), name
    # ...and auxcord's applications present it.
    settings = Settings(spark_auth_secret="s" * 16 + "p" * 16 + "arksecret")
    assert cluster_auth_conf(settings) == {
        "spark.authenticate": "true",
        "spark.authenticate.secret": "s" * 16 + "p" * 16 + "arksecret",
    }
    assert cluster_auth_conf(Settings()) == {}


def test_mongodb_needs_a_password_and_auxcord_its_own_user(compose: dict[str, Any]) -> None:
    mongodb = _environment(compose["services"]["mongodb"])
    assert mongodb["MONGO_INITDB_ROOT_PASSWORD"].startswith("${MONGODB_ROOT_PASSWORD:?")
    init_script = "./deploy/mongo-init.js:/docker-entrypoint-initdb.d/auxcord.js:ro"
    assert init_script in compose["services"]["mongodb"]["volumes"]
    init = (ROOT / "deploy" / "mongo-init.js").read_text()
    assert 'role: "readWrite", db: "auxcord"' in init
    for name, service in compose["services"].items():
        if service.get("image") == "auxcord:latest":
            uri = _environment(service)["AUXCORD_MONGODB_URI"]
            assert uri.startswith("mongodb://auxcord:${MONGODB_PASSWORD:?"), name
    postgres = _environment(compose["services"]["postgres"])
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?"), "none committed"


def test_the_image_holds_every_package_and_runs_unprivileged() -> None:
    import tomllib

    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    # The CLI imports every package, and the web app reads templates/ and static/ from beside
    # its own: a package left out is an image whose every command fails on import.
    assert {package.rstrip("*") for package in packages} | {"templates", "static"} <= copied
    assert "pip install --no-cache-dir -e " in dockerfile
    assert "\nUSER auxcord\n" in dockerfile


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
