"""The package's shape, checked from its source: no import circle (module-level or inside functions), no private
name reached across modules, no function over 100 lines, and no model whose prediction path raises
NotImplementedError. Each check reads the code with ``ast``, so it fails the moment a change breaks the rule."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "pertpipe"
MAX_LINES = 100


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The pertpipe module an imported name belongs to (a module itself, or the module holding a symbol)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every pertpipe import in the file, at any depth."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = mod.split(".") if is_pkg else mod.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            if not base.startswith("pertpipe"):
                continue
            names = [a.name for a in node.names]
            for n in names:  # `from pertpipe.models import base` imports the module pertpipe.models.base
                target = _resolve(f"{base}.{n}") if f"{base}.{n}" in MODULES else _resolve(base)
                if target:
                    out.append((target, [n], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("pertpipe") and _resolve(a.name):
                    out.append((_resolve(a.name), [], node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for target, _, _ in _imports(mod, path):
            # a package's __init__ importing its own submodules (re-exports, discovery) is not a circle
            if target != mod and not mod.startswith(target + ".") and not target.startswith(mod + "."):
                g[mod].add(target)
    return g


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert _cycles(_graph()) == []


# The floors of the package, lowest first, declared once (docs/architecture.md draws them): a module imports only
# from its own floor or the floors below it. `pertpipe` alone is the package's __init__ (CONTROL_LABEL, helpers).
LAYERS = (
    ("pertpipe", "pertpipe.errors", "pertpipe.integrity", "pertpipe.io", "pertpipe.http_session",
     "pertpipe.config_check", "pertpipe.core"),
    ("pertpipe.data", "pertpipe.knowledge", "pertpipe.report_page"),
    ("pertpipe.models",),
    ("pertpipe.evaluation",),
    ("pertpipe.spatial",),
    ("pertpipe.tasks",),
    ("pertpipe.workflow", "pertpipe.cli", "pertpipe.__main__", "pertpipe.config_docs"),
)


def _floor(mod: str, layers=LAYERS) -> int | None:
    for i, floor in enumerate(layers):
        if any(mod == p or (p != "pertpipe" and mod.startswith(p + ".")) for p in floor):
            return i
    return None


def _upward(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    return [f"{m} (floor {_floor(m, layers)}) imports {t} (floor {_floor(t, layers)})" for m in sorted(graph)
            for t in sorted(graph[m]) if _floor(t, layers) > _floor(m, layers)]


def test_every_module_stands_on_a_declared_floor():
    assert [m for m in MODULES if _floor(m) is None] == []


def test_the_floor_check_finds_an_import_running_up():
    layers = (("pertpipe.a",), ("pertpipe.b",))
    assert _upward({"pertpipe.a.x": {"pertpipe.b.y"}, "pertpipe.b.y": {"pertpipe.a.z"}}, layers) == [
        "pertpipe.a.x (floor 0) imports pertpipe.b.y (floor 1)"]


def test_no_import_runs_up_the_floors():
    """At any depth (imports inside functions count): spatial stands on core, not on models; a task's dispatch sits
    above the models and the evaluation it calls; the data layer reads contracts, not tasks."""
    assert _upward(_graph()) == []


def test_no_private_name_imported_across_modules():
    bad = []
    for mod, path in MODULES.items():
        for target, names, line in _imports(mod, path):
            bad += [f"{path.relative_to(PKG.parent)}:{line} imports {n} from {target}" for n in names
                    if n.startswith("_") and not n.startswith("__") and target != mod]
    assert bad == []


def test_no_function_over_100_lines():
    long = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                n = node.end_lineno - start + 1
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_no_model_prediction_raises_not_implemented():
    hits = []
    for path in (PKG / "models").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                    hits.append(f"{path.relative_to(PKG.parent)}:{node.lineno}")
    assert hits == []


def test_checks_read_the_real_package():
    # guard against an empty walk (a moved package would make every check above pass vacuously)
    assert len(MODULES) > 50 and "pertpipe.models.base" in MODULES


SNAKEMAKE_FOLDERS = {"workflow", "real", "slurm"}  # conftest.FOLDER_MARKERS marks their tests (workflow among them)


def _runs_snakemake(tree: ast.AST) -> bool:
    """A call of conftest's run_snakemake, or a command list naming snakemake ("-m", "snakemake" / "snakemake")."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "run_snakemake":
            return True
        if isinstance(node, ast.List) and any(isinstance(e, ast.Constant) and e.value == "snakemake"
                                              for e in node.elts):
            return True
    return False


def test_tests_that_run_snakemake_live_in_the_workflow_folders():
    tests = PKG.parent / "tests"
    misplaced = [str(p.relative_to(tests)) for p in tests.rglob("test_*.py")
                 if p.parent.name not in SNAKEMAKE_FOLDERS and _runs_snakemake(ast.parse(p.read_text()))]
    assert not misplaced, f"{misplaced} run Snakemake outside tests/{{workflow,real,slurm}}: move them there"
    # ... and the check sees a Snakemake-running test where there is one
    assert _runs_snakemake(ast.parse((tests / "workflow" / "test_model_plugin.py").read_text()))


TASK_NAMES = ("cells", "signatures", "labels", "spatial")
TASK_BRANCH = re.compile(r"(\btask\b|\bTASK\b|\.name)\s*(==|!=|\bin\b)\s*[\"'(]|\b(LABELS|SIGNATURES)\s*=\s*TASK")


def _task_branches(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if TASK_BRANCH.search(line)
            and any(f'"{t}"' in line or f"'{t}'" in line for t in TASK_NAMES)]


def test_the_branch_finder_finds_a_branch_on_a_task_name():
    assert _task_branches('    if task == "labels":\n        pass\nx = a.kind == "spatial"') == ['if task == "labels":']
    assert _task_branches('LABELS = TASK.name == "labels"') != []


def test_only_the_tasks_ask_which_task_a_run_is():
    """Rules, scripts and every package but pertpipe/tasks ask the run's task object instead of testing its name."""
    root = PKG.parent
    files = [*root.glob("rules/*.smk"), root / "Snakefile", *root.glob("workflow_scripts/*.py"),
             *(p for p in PKG.rglob("*.py") if "tasks" not in p.relative_to(PKG).parts)]
    found = {str(p.relative_to(root)): b for p in files if (b := _task_branches(p.read_text()))}
    assert found == {}


def test_common_smk_is_glue():
    lines = (PKG.parent / "rules" / "common.smk").read_text().splitlines()
    assert len(lines) <= 150, f"rules/common.smk has {len(lines)} lines; run planning belongs in pertpipe/workflow/plan.py"
