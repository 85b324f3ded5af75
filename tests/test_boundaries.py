"""Who may import whom: the layout's rules, checked by walking every import statement of the tree.

- x2vlm_core never imports plugins/; registry/ imports neither torch nor x2vlm_core;
- x2vlm_core/model/ imports only the contracts (and torch) — factory.py, the one composer, also config
  and the registry;
- a plugin imports only the plugin API (x2vlm_core.plugin_api) and other modules under plugins/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[str]:
    """Every module an import statement in `path` names (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.append(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _top(name: str) -> str:
    return name.split(".")[0]


def _violations(folder: str, allowed: callable, exempt: tuple[str, ...] = ()) -> list[str]:  # type: ignore[valid-type]
    found = []
    for path in _modules(folder):
        rel = path.relative_to(ROOT).as_posix()
        if rel in exempt:
            continue
        found += [f"{rel}: {name}" for name in _imports(path) if not allowed(name)]
    return found


def test_core_never_imports_plugins() -> None:
    assert _violations("x2vlm_core", lambda n: _top(n) != "plugins") == []


def test_registry_imports_neither_torch_nor_core() -> None:
    assert _violations("registry", lambda n: _top(n) not in ("torch", "x2vlm_core", "plugins")) == []


def test_model_imports_only_the_contracts_and_torch() -> None:
    def allowed(name: str) -> bool:
        return not (_top(name) in ("registry", "plugins") or (
            _top(name) == "x2vlm_core" and not name.startswith(("x2vlm_core.contracts", "x2vlm_core.model"))
        ))

    assert _violations("x2vlm_core/model", allowed, exempt=("x2vlm_core/model/factory.py",)) == []


@pytest.mark.parametrize("folder", ["plugins", "examples"])
def test_plugins_import_only_the_plugin_api(folder: str) -> None:
    def allowed(name: str) -> bool:
        if _top(name) == "registry":
            return False
        return _top(name) != "x2vlm_core" or name == "x2vlm_core.plugin_api"

    assert _violations(folder, allowed) == []


def test_the_walk_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    # The checks above are only as good as the walk: it must find imports inside functions too.
    probe = ROOT / "x2vlm_core" / "model" / "concepts.py"
    assert "x2vlm_core.contracts.encoders" in _imports(probe)
    lazy = ROOT / "x2vlm_core" / "training" / "loop.py"
    assert any(n.startswith("lightning_fabric") for n in _imports(lazy))  # imported inside a function
