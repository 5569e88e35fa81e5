"""The layering the project promises, checked on the source tree itself: small modules, the core
free of roles, roles free of each other, and no import circle anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("feddiff", "feddiff_app", "aggregator", "edge_client", "label_holder", "crypto", "export")
ROLES = ("aggregator", "edge_client", "label_holder")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports anywhere in its body (function-local imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_no_module_is_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if ".venv" not in p.parts
            and not set(p.relative_to(ROOT).parts) & {"work", "build"} and (n := len(p.read_text().splitlines())) > 300}
    assert not long


def test_the_core_imports_no_role_entry_point_or_crypto():
    bad = {m: sorted(d for d in deps if d.split(".")[0] not in ("feddiff",)) for m, deps in graph().items() if m.split(".")[0] == "feddiff"}
    assert not {m: d for m, d in bad.items() if d}


def test_roles_never_import_each_other():
    bad = {m: sorted(d for d in deps if d.split(".")[0] in ROLES and d.split(".")[0] != m.split(".")[0])
           for m, deps in graph().items() if m.split(".")[0] in ROLES}
    assert not {m: d for m, d in bad.items() if d}


def test_there_is_no_import_circle():
    g = graph()
    # a package's __init__ re-exporting its own modules is not a circle between modules
    g = {m: {d for d in deps if not (d == m.rpartition(".")[0] or m.startswith(d + "."))} for m, deps in g.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                circles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not circles
