"""The package's shape: stage folders whose imports only go down, no import
circle, and torch-free folders that import no torch (issue 23).

The floors, lowest first: ``core`` (the vocabulary), ``quantize`` (the
quantizer), ``analysis`` (tables: ECR, the law, advice), ``nn`` (torch
networks, training, one cell), ``figures`` (figures and report pages),
``export`` (deployable bytes), ``run`` (command line, worker, Snakemake glue).
A module may import from its own floor or any floor below it. Lazy imports
inside functions count: they are imports all the same.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from qdesign.core.layout import REPO_ROOT

PKG = REPO_ROOT / "src" / "qdesign"
FLOORS = ("core", "quantize", "analysis", "nn", "figures", "export", "run")
TORCH_FREE = ("core", "analysis", "figures")
TORCH_MODULES = ("torch", "torchvision")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module or package, line) of every import in one module, lazy ones included."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from . import packed`` imports the module packed; ``from .x import f``, the module x
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return out


def _is_extension(module: str) -> bool:
    return (PKG.parent / module.replace(".", "/")).with_suffix(".c").is_file()


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        targets = set()
        for target, _ in _imports(name, path):
            if _is_extension(target):
                continue  # a compiled module (quantize._counting) imports nothing of ours
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name and target != "qdesign":
                targets.add(target)
        graph[name] = targets
    return graph


def _floor(module: str) -> int | None:
    parts = module.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else None


def test_every_module_lives_in_a_stage_folder():
    loose = [m for m in _modules() if m.count(".") >= 1 and _floor(m) is None]
    assert loose == ["qdesign.__main__"], f"modules outside the stage folders: {loose}"


def test_imports_only_go_down():
    upward = [
        f"{a} -> {b}"
        for a, targets in _graph().items()
        for b in targets
        if _floor(a) is not None and _floor(b) is not None and _floor(b) > _floor(a)
    ]
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_lazy_and_relative_imports():
    """The checks above are only as good as the graph: it must see an import
    inside a function and resolve ``..`` across folders."""
    graph = _graph()
    assert "qdesign.quantize.primitives" in graph["qdesign.quantize.layers"]
    assert "qdesign.core.constants" in graph["qdesign.quantize.primitives"]  # from ..core.constants
    assert any(t.startswith("qdesign.analysis") for t in graph["qdesign.run.cli"])  # lazy, in functions


@pytest.mark.parametrize("folder", TORCH_FREE)
def test_torch_free_folders_never_import_torch(folder):
    """Statically (no lazy torch import either) and at run time (importing every
    module of the folder leaves torch unimported)."""
    mods = {n: p for n, p in _modules().items() if n.split(".")[1:2] == [folder]}
    assert mods
    static = [
        f"{n}:{line} imports {t}"
        for n, p in mods.items()
        for t, line in _imports(n, p)
        if t.split(".")[0] in TORCH_MODULES
    ]
    assert not static, "\n".join(static)
    code = (
        f"import sys\nfor m in {sorted(mods)!r}: __import__(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {TORCH_MODULES!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_a_figure_without_a_drawer_fails_at_import():
    """A name added to the table of figures without a drawer is refused when the
    catalog is imported, not later as a missing output."""
    code = (
        "from qdesign.core import registry\n"
        "registry.FIGURE_INFO['new_figure'] = registry.FigureInfo('new_figure', 'something new', ('summary',))\n"
        "import qdesign.figures.catalog\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode != 0 and "ImportError" in res.stderr and "new_figure" in res.stderr
    ok = subprocess.run([sys.executable, "-c", "import qdesign.figures.catalog"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    "config", ["config.yaml", "cpu.yaml", "paper.yaml", "cpu-mixed.yaml", "cpu-methods.yaml", "test.yaml"]
)
def test_cached_cells_keep_their_folders_and_keys(config):
    """Every cell of the shipped configs (as they were when the keys were pinned)
    has the folder and spec key it had before the stage folders and the
    Precision type: a finished study does not rerun after a refactoring."""
    import json  # noqa: PLC0415

    from qdesign.core.config import load_config  # noqa: PLC0415
    from qdesign.core.specs import float_spec, mixed_cells, quant_spec, study_cells  # noqa: PLC0415

    golden = REPO_ROOT / "tests" / "golden"
    want = json.loads((golden / "spec_keys.json").read_text())["keys"][config]
    cfg = load_config(golden / "spec_configs" / config)
    got = {}
    for study in cfg["studies"]:
        for c in study_cells(cfg, study) + mixed_cells(cfg, study):
            spec = (
                float_spec(cfg, study, c.width, c.seed)
                if c.is_float
                else quant_spec(cfg, study, c.width, c.precision, c.seed, c.method)
            )
            got[c.dir] = spec.key
    assert got == want


def test_rules_take_every_results_path_from_layout():
    """The rules spell no results/ or reference/ path themselves: qdesign.core.layout
    defines each once, for the rules and the Python code alike."""
    literal = []
    for smk in sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk")) + [REPO_ROOT / "Snakefile"]:
        for i, line in enumerate(smk.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if '"results' in code or '"reference/' in code or " results/" in code:
                literal.append(f"{smk.name}:{i}: {line.strip()}")
    assert not literal, "\n".join(literal)


def test_test_modules_share_helpers_not_each_other():
    """A test module imports its shared data and builders from the helper
    modules beside it (tests/helpers.py, study_tables.py, ...), never from
    another test module: importing a test module runs its tests' fixtures and
    module setup twice and hides where a builder lives."""
    offenders = []
    for path in sorted((REPO_ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1].startswith("test_"):
                offenders.append(f"{path.name}:{node.lineno} imports {node.module}")
            elif isinstance(node, ast.Import):
                offenders += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names if ".test_" in a.name]
    assert not offenders, offenders
