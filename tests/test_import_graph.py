"""The layering of auxcord's packages, checked over every import statement (lazy ones too).

``auxcord/`` is the core that every component shares, so it imports none of them; the web app
reads what the pipeline stored and never runs producer code in its own process; and nothing
that runs in production imports the composition root (``cli/``) or the development tools
(``devtools/``: the simulator, the local stack).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("auxcord", "cli", "devtools", "producers", "streaming", "analytics", "api", "dags")

FORBIDDEN: dict[str, frozenset[str]] = {
    "auxcord": frozenset({"producers", "streaming", "analytics", "api", "cli", "devtools"}),
    "api": frozenset({"producers", "cli", "devtools"}),
    "producers": frozenset({"cli", "devtools", "api"}),
    "streaming": frozenset({"cli", "devtools", "api"}),
    "analytics": frozenset({"cli", "devtools", "api"}),
    "dags": frozenset({"cli", "devtools", "api"}),
}


def imported_packages(source: str) -> set[str]:
    """The top-level package of every absolute import in ``source``, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def layering_violations(root: Path) -> list[str]:
    """``file imports package`` for each import that crosses a forbidden edge under ``root``."""
    violations: list[str] = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            for imported in sorted(imported_packages(path.read_text()) & forbidden):
                violations.append(f"{path.relative_to(root)} imports {imported}")
    return violations


def test_the_layering_holds() -> None:
    assert layering_violations(ROOT) == []


@pytest.mark.parametrize(
    ("package", "statement", "crossed"),
    [
        ("auxcord", "from producers.poller import Poller", "producers"),
        ("auxcord", "def lazy():\n    import analytics.aggregate\n", "analytics"),
        ("api", "from producers.history import import_history", "producers"),
        ("streaming", "from devtools.stack import LocalStack", "devtools"),
    ],
)
def test_a_forbidden_import_is_reported(
    tmp_path: Path, package: str, statement: str, crossed: str
) -> None:
    (tmp_path / package).mkdir()
    (tmp_path / package / "module.py").write_text(statement)
    assert layering_violations(tmp_path) == [f"{package}/module.py imports {crossed}"]


def test_relative_and_allowed_imports_pass(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "module.py").write_text(
        "from . import deps\nfrom auxcord.names import Topic\nimport analytics.periods\n"
    )
    assert layering_violations(tmp_path) == []
