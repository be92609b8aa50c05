"""The package's shape: no import circle, no realfake import hidden inside a function, ground-floor
modules that import nothing of ours above them, stage modules that no other module imports."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "workflow_scripts" / "realfake"
GROUND = {"errors": set(), "images": set(), "atomic": set(), "classlists": {"errors"}, "distributed": {"errors"},
          "paths": set(), "runlock": {"errors"}}
STAGES = {"prepare", "pretrain", "caption", "embed", "finetune", "generate", "classify", "quality", "ood",
          "privacy", "nearest", "report"}


def imports(path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """realfake modules imported at module level, and (line, module) of those imported in functions."""
    tree = ast.parse(path.read_text())
    top, nested = set(), []

    def names(node):
        if isinstance(node, ast.ImportFrom) and node.level in (1, 2):
            inside_tools = path.parent.name == "tools" and node.level == 1
            prefix = "tools." if inside_tools else ""
            return [prefix + node.module] if node.module else [prefix + a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("realfake."):
            return [node.module.split(".", 1)[1]]
        return []

    for node in tree.body:
        top.update(n if n.startswith("tools.") else n.split(".")[0] for n in names(node))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                nested += [(sub.lineno, n) for n in names(sub)]
    return top, nested


GRAPH = {p.stem: imports(p) for p in sorted(PKG.glob("*.py")) if p.stem != "__init__"}
GRAPH |= {f"tools.{p.stem}": imports(p) for p in sorted((PKG / "tools").glob("*.py")) if p.stem != "__init__"}


def test_no_realfake_import_inside_functions():
    hidden = [f"{m}.py:{line} imports {n}" for m, (_, nested) in GRAPH.items() for line, n in nested]
    assert not hidden, hidden


def test_import_graph_has_no_circle():
    deps = {m: top for m, (top, _) in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            pytest.fail("import circle: " + " -> ".join(path[path.index(m):] + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(deps.get(m, ())):
            visit(d, path + [m])
        state[m] = 2

    for m in deps:
        visit(m, [])


@pytest.mark.parametrize("module", sorted(GROUND))
def test_ground_floor_imports_nothing_above_it(module):
    assert GRAPH[module][0] <= GROUND[module]


def test_no_module_imports_a_stage():
    """Stages are thin CLIs: what a second module needs from them belongs in a library module."""
    users = {m: sorted(top & STAGES) for m, (top, _) in GRAPH.items() if top & STAGES}
    assert not users, users


def test_every_stage_has_one_cli_pattern():
    for stage in STAGES:
        text = (PKG / f"{stage}.py").read_text()
        assert "Command(__doc__)" in text and "run(main)" in text, stage
        assert "argparse" not in text, f"{stage} builds its own argparse"


def test_artifact_paths_are_spelled_once_in_the_path_table():
    """Rules and the planner take every path under results/ from realfake.paths; no string
    literal there starts with results/ (comments may still name folders)."""
    import re

    repo = PKG.parents[1]
    files = [repo / "Snakefile", *sorted((repo / "rules").glob("*.smk")), PKG / "plan.py", PKG / "resources.py",
             PKG / "config.py"]
    literal = re.compile(r"""(?<![\w])[fr]?["']results/""")
    found = [f"{f.name}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
             if literal.search(line.split("#", 1)[0])]
    assert not found, found


LIBRARIES = {"datasets", "data", "shards", "chunks", "models", "method", "encoders", "lora", "classifier", "optim",
             "classifier_data", "classifier_models",
             "synthesis", "features", "quality_metrics", "tables", "checkpoint", "tiny_sd", "tiny_models",
             "provenance", "paths", "tablespec", "config", "settings", "resources", "plan"}


def test_libraries_do_not_import_the_command_line():
    """Seeding and provenance live below the libraries (realfake.provenance); cli is for stages and tools."""
    users = sorted(m for m in LIBRARIES if "cli" in GRAPH[m][0])
    assert not users, users


def test_reporting_does_not_import_the_planner():
    """The report reads the table spec from realfake.tablespec, not from the planner."""
    assert "plan" not in GRAPH["report"][0] and "plan" not in GRAPH["tables"][0]


def test_tools_sit_in_their_own_subpackage_and_nothing_imports_them():
    """bench, rehearsals, cost, the reference and results documents: run by make targets, above
    every floor; no module of the workflow imports one."""
    tools = {m for m in GRAPH if m.startswith("tools.")}
    assert {"tools.bench", "tools.cost", "tools.fullsize", "tools.rehearsal", "tools.reference", "tools.resultsdoc",
            "tools.look"} <= tools
    users = sorted(m for m, (top, _) in GRAPH.items() if not m.startswith("tools.") and top & tools)
    assert not users, users
    assert not [p.stem for p in PKG.glob("*.py") if f"tools.{p.stem}" in tools]  # not left at the top level
