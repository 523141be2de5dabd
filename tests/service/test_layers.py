"""The layers of service/ (docs/architecture.md): gRPC is built on the transport-free inference layer, not
on the REST package; no two modules import each other, not even lazily; every operation of the table is
found by its own paths and by no other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from service.inference import OPERATIONS, api_of, find

SERVICE = Path(__file__).resolve().parents[2] / "service"


def test_grpc_imports_nothing_from_the_rest_package() -> None:
    code = ("import sys, service.grpc.server, service.grpc.servicer, service.grpc.calls; "
            "print(sorted(m for m in sys.modules if m.startswith('service.api')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=SERVICE.parent).stdout.strip()
    assert loaded == "[]"


def _module_imports(path: Path) -> set[str]:
    """The service modules a file imports anywhere: at its top, in TYPE_CHECKING blocks and inside
    functions (a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("service"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("service")}
    return found


def test_no_import_cycles() -> None:
    modules = {}
    for path in SERVICE.rglob("*.py"):
        name = ".".join(path.relative_to(SERVICE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {name: _module_imports(path) & set(modules) - {name} for name, path in modules.items()}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            seen.add(nxt)
            if nxt == target or reaches(nxt, target, seen):
                return True
        return False

    assert [name for name in graph if reaches(name, name, set())] == []


def test_each_operation_is_found_by_its_own_paths() -> None:
    for op in OPERATIONS:
        for template in op.paths:
            path = template.replace("{name}", "italy").replace("{version}", "3")
            assert find(path) == (op, "italy" if "{name}" in template else "", "3" if "{version}" in template
                                  else None), path
            assert api_of(path) == op.api
    assert find("/v2/models/italy/predict") is None and find("/models/italy/infer") is None
    assert find("/models/a/b/predict") is None and api_of("/v2/health/ready") == "v2"
