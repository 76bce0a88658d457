"""The import graph is the architecture (ARCHITECTURE.md): each layer imports only inward, the
runtime never loads development tools or the evaluation, and tests/unit mirrors the package."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "streamer"
CORE = {"streamer.errors", "streamer.ports", "streamer.settings"}
OBSERVABILITY = {"streamer.telemetry", "streamer.logging"}

# layer -> streamer modules (prefixes) it may import; everything else in streamer is refused
ALLOWED: dict[str, set[str]] = {
    "streamer.domain": {"streamer.domain", "streamer.errors"},
    "streamer.services": {"streamer.domain", "streamer.services"} | CORE | OBSERVABILITY,
    "streamer.adapters": {"streamer.domain", "streamer.adapters"} | CORE | OBSERVABILITY,
    "streamer.entrypoints": {"streamer.domain", "streamer.services", "streamer.entrypoints",
                             "streamer"} | CORE | OBSERVABILITY,
    "streamer.evaluation": {"streamer.domain", "streamer.services", "streamer.evaluation",
                            "streamer.devtools"} | CORE,
    "streamer.devtools": {"streamer.domain", "streamer.adapters", "streamer.devtools"} | CORE,
}
# the one module that may import everything (lazily for the evaluation), and the CLI, which
# may call it
ROOT_MODULES = {"streamer.app", "streamer.entrypoints.cli"}
# third-party imports of the pure domain
DOMAIN_THIRD_PARTY = {"pydantic", "schemas"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, id(node) in top))
            for a in node.names:  # `from . import x` imports a submodule
                found.append((f"{target}.{a.name}", id(node) in top))
    return found


def layer_of(name: str) -> str | None:
    for layer in ALLOWED:
        if name == layer or name.startswith(layer + "."):
            return layer
    return None


def is_streamer_module(target: str) -> bool:
    return target == "streamer" or target.startswith("streamer.")


def resolvable(target: str) -> bool:
    """Only modules/packages count (``from x import name`` also yields ``x.name``)."""
    rel = target.split(".")
    path = ROOT.joinpath(*rel)
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_each_layer_imports_only_inward():
    bad = []
    for path in SOURCES:
        name = module_name(path)
        if name in ROOT_MODULES:
            continue
        layer = layer_of(name)
        if layer is None:
            continue  # core modules (errors, ports, settings, telemetry, logging, __main__)
        for target, _ in imports(path):
            if not is_streamer_module(target) or not resolvable(target):
                continue
            if target == "streamer" and layer != "streamer.entrypoints":
                bad.append((name, target))
            elif target != "streamer" and not any(
                    target == a or target.startswith(a + ".") for a in ALLOWED[layer] - {"streamer"}):
                bad.append((name, target))
    assert not bad, f"imports against the layering (see ARCHITECTURE.md): {bad}"


def test_the_domain_is_pure():
    stdlib = sys.stdlib_module_names
    bad = []
    for path in (PACKAGE / "domain").rglob("*.py"):
        for target, _ in imports(path):
            top = target.split(".")[0]
            if top in stdlib or top in DOMAIN_THIRD_PARTY or top == "streamer" or not top:
                continue
            bad.append((module_name(path), target))
    assert not bad, f"the domain imports I/O libraries: {bad}"


def test_core_modules_import_no_layer():
    for core in CORE | OBSERVABILITY:
        path = ROOT / (core.replace(".", "/") + ".py")
        for target, _ in imports(path):
            if is_streamer_module(target) and resolvable(target):
                assert target in CORE | OBSERVABILITY | {"streamer"} or \
                    target.startswith("streamer.domain"), (core, target)


def test_runtime_never_imports_devtools_and_only_the_root_loads_evaluation_lazily():
    bad = []
    for path in SOURCES:
        name = module_name(path)
        layer = layer_of(name)
        if layer in {"streamer.devtools", "streamer.evaluation"}:
            continue
        for target, top_level in imports(path):
            if target.startswith("streamer.devtools"):
                bad.append((name, target))
            if target.startswith("streamer.evaluation") and (name not in ROOT_MODULES or top_level):
                bad.append((name, target))
    assert not bad, bad


def test_loading_the_worker_and_the_api_loads_neither_devtools_nor_evaluation():
    code = (
        "import sys\n"
        "import streamer.app, streamer.entrypoints.cli, streamer.entrypoints.api\n"
        "from streamer.app import build_worker\n"
        "from streamer.settings import Settings\n"
        "build_worker(Settings(store='sqlite', sqlite_path=':memory:', "
        "model={'engine': 'baseline'}))\n"
        "loaded = [m for m in sys.modules if m.startswith(('streamer.devtools', "
        "'streamer.evaluation'))]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unit_tests_mirror_the_package():
    unit = ROOT / "tests" / "unit"
    for test in unit.rglob("test_*.py"):
        folder = test.parent.relative_to(unit)
        if folder.parts and folder.parts[0] == "schemas":
            assert (ROOT / "schemas").is_dir()
            continue
        assert (PACKAGE / folder).is_dir(), f"{test.relative_to(ROOT)}: no streamer/{folder}"
