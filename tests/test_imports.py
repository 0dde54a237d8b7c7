"""Layers point one way: no import cycle between zenlm modules, or between its packages.

The graph is read from the source with `ast` (not by importing), and counts every
import, including those inside functions: a cycle hidden in a function is still a
cycle. Two graphs are checked:

- modules: `zenlm.train.export` -> `zenlm.train.pretrain` -> `zenlm.train.export`;
- packages (each `zenlm.<x>` subpackage one node, top-level modules their own node):
  `zenlm.api` -> `zenlm.tasks` -> `zenlm.api` is a cycle even when the modules involved
  differ, since it makes the two layers depend on each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    modules = {}
    for path in sorted((SRC / "zenlm").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if package else parts)] = (path, package)
    return modules


def _target(name: str, modules: dict) -> str | None:
    """The module an imported dotted name lives in (`zenlm.models.DecoderLM` -> `zenlm.models`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, package: bool, modules: dict) -> set[str]:
    here = module if package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..models import y
                parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            # `from zenlm.models import build` names a module; `import DecoderLM`, a value
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "zenlm" or name.startswith("zenlm."):
                target = _target(name, modules)
                if target is not None and target != module:
                    found.add(target)
    return found


def module_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, package, modules)
            for name, (path, package) in modules.items()}


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Each `zenlm.<x>` (a subpackage with everything in it, or a top-level module) one node."""

    def node(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {node(m): set() for m in graph}
    for module, targets in graph.items():
        packages[node(module)] |= {node(t) for t in targets} - {node(module)}
    return packages


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) in each strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, set(c), c[0]) for c in components]


def _one_cycle(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside one component (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & members):
                if succ == start:
                    path = [node]  # back to start: node, its parent, ..., start
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if succ not in parents:
                    parents[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f"{start} is in a component but on no cycle")


def _report(found: list[list[str]]) -> str:
    return "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in found)


def test_no_import_cycle_between_modules():
    found = cycles(module_graph())
    assert not found, _report(found)


def test_no_import_cycle_between_packages():
    found = cycles(package_graph(module_graph()))
    assert not found, _report(found)


def test_the_cycle_finder_finds_and_names_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["e", "e2", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    graph = module_graph()
    # api.LM.embed imports zenlm.embed inside the method; zenlm/__init__ imports api lazily
    assert "zenlm.embed" in graph["zenlm.api"]
    assert "zenlm.api" in graph["zenlm"]
    assert "zenlm.models.build" in graph["zenlm.models"]  # from zenlm.models.build import ...


def test_config_imports_without_torch():
    """config.py's docstring promises it imports no torch; the package must let it."""
    code = textwrap.dedent("""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError(f"torch is blocked in this test ({name})")
                return None

        sys.meta_path.insert(0, NoTorch())
        import zenlm.config
        from zenlm.errors import InvalidParameter
        config = zenlm.config.ModelConfig(vocab_size=10, d_model=8, n_layers=1, n_heads=2, d_ff=16)
        assert config.dim_per_head == 4
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok")
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_commands_import_no_distributed_training_machinery():
    """Every `zenlm` command builds the whole parser; generating must not pay for FSDP.

    torch.distributed.checkpoint and torch.distributed.fsdp pull in sympy (~48 MB
    resident and ~1 s): measured, they were 12% of an int4 model's RSS while it
    generated (benchmarks/int4_memory.py). zenlm.train.fsdp imports them where used.
    """
    code = textwrap.dedent("""
        import sys
        from zenlm.cli import build_parser
        import zenlm.api, zenlm.bench, zenlm.train.fsdp, zenlm.train.trainer

        build_parser()
        heavy = [m for m in ("sympy", "torch.distributed.checkpoint", "torch.distributed.fsdp")
                 if m in sys.modules]
        print(heavy)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
