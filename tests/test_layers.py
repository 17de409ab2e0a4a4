"""The layer rules the code keeps (docs/architecture.md): apps/ never imports
workers/, no import circle in product code, no module under apps/ over 500 lines."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("apps", "workers", "config")
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for root in PRODUCT:
        for path in (ROOT / root).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules ``path`` imports anywhere (lazy imports inside functions too)."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.add(node.module)
            named.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in named if name in modules}


def test_apps_never_import_workers():
    modules = _modules()
    offenders = {
        name: sorted(target for target in _imports(path, modules) if target.split(".")[0] == "workers")
        for name, path in modules.items() if name.startswith("apps.")
    }
    assert not {name: targets for name, targets in offenders.items() if targets}


def test_product_code_has_no_import_circle():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    circles, done = [], set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            circles.append([*trail[trail.index(name):], name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert not circles, " ; ".join(" -> ".join(circle) for circle in circles)


def test_no_module_under_apps_is_over_500_lines():
    modules = _modules()
    long = {
        name: lines for name, path in modules.items()
        if name.startswith("apps.") and (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long
