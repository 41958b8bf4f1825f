"""The house's rules, read from the code (issue 28): imports between bnlab's modules flow one way
(no cycle, counting imports inside functions too), and no module imports another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bnlab"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for every bnlab import in module `name`."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.startswith("bnlab")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bnlab"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule, None) if submodule in MODULES else (node.module, alias.name))
    return found


def graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in imports(name) if target in MODULES and target != name} for name in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_bnlab_modules():
    # a package's __init__ importing its own modules is how it names them, not a cycle
    edges = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph().items()}
    assert cycles(edges) == []


def test_no_module_imports_another_modules_private_names():
    private = [
        f"{name} imports {target}.{taken}"
        for name in MODULES
        for target, taken in imports(name)
        if taken is not None and taken.startswith("_") and not taken.startswith("__")
    ]
    assert private == []


def test_no_module_over_600_lines_and_no_function_over_80():
    long_modules = [f"{name}: {len(path.read_text().splitlines())}" for name, path in MODULES.items()
                    if len(path.read_text().splitlines()) > 600]  # fmt: skip
    long_functions = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1}"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert long_modules == [] and long_functions == []


# --- each concept named in one home (and at most one other module) ------------------------------

# (word, module) -> why the word there names something else, or the concept used, not defined:
# the measure counts a word wherever it is a string, a name, an argument or an attribute.
HOMONYMS = {
    ("batchnorm", "bnlab.bench.sections"): "the bench section timing batch norm, and its nets",
    ("batchnorm", "bnlab.lab.choices"): "the name of that bench section on the command line",
    ("batchnorm", "bnlab.figures.kinds"): "Yang et al.'s and De & Smith's predictions are theorems about batch norm",
    ("batchnorm", "bnlab.nn.gradcheck_suite"): "LeNet and the residual nets are checked with the notes' batch norm",
    ("layernorm", "bnlab.nn.gradcheck_layers"): "the label of layernorm_forward's own checks",
    ("rmsnorm", "bnlab.nn.gradcheck_layers"): "the label of rmsnorm_forward's own checks",
    ("momentum", "bnlab.nn.optim"): "SGD's momentum",
    ("momentum", "bnlab.spec.schema"): "the optimizer's momentum in solver.optim_config",
    ("momentum", "bnlab.figures.kinds"): "the optimizer's momentum in Wan et al.'s angular equilibrium",
    ("history", "bnlab.lab.results"): "history.csv",
    ("history", "bnlab.claims.evaluate"): "history.csv",
    ("history", "bnlab.figures.groups"): "history.csv",
    ("history", "bnlab.report"): "history.csv",
    ("sweep", "bnlab.spec.experiment"): "the spec's sweep",
    ("sweep", "bnlab.spec.sweep"): "the spec's sweep",
    ("sweep", "bnlab.spec.schema"): "the spec's sweep",
    ("sweep", "bnlab.bench.sections"): "the bench section timing a sweep",
    ("sweep", "bnlab.bench.memory"): "the bench section timing a sweep",
    ("sweep", "bnlab.lab.choices"): "the name of that bench section on the command line",
    ("batch_size", "bnlab.spec.experiment"): "solver.batch_size",
    ("batch_size", "bnlab.spec.schema"): "solver.batch_size",
    ("batch_size", "bnlab.nn.solver"): "solver.batch_size",
    ("batch_size", "bnlab.nn.statistics"): "recompute_bn_statistics' batch_size",
    ("batch_size", "bnlab.bench.sections"): "the benchmarks' batch sizes",
    ("batch_size", "bnlab.bench.torch_peer"): "solver.batch_size",
    ("batch_size", "bnlab.bench.conv"): "the benchmark's batch sizes",
    ("batchnorm", "bnlab.bench.conv"): "the benchmark's net has batch norm",
    ("batchnorm", "bnlab.bench.torch_peer"): "the runs it repeats in PyTorch have batch norm or none",
    ("momentum", "bnlab.bench.torch_peer"): "PyTorch's BatchNorm1d momentum, the other share (bnlab's 0.9 is its 0.1)",
}


def mentions(name: str, word: str) -> bool:
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if (
            (isinstance(node, ast.Constant) and node.value == word)
            or (isinstance(node, ast.keyword | ast.arg) and word in (node.arg,))
            or (isinstance(node, ast.Attribute) and node.attr == word)
            or (isinstance(node, ast.Name) and node.id == word)
        ):
            return True
    return False


def concept_words() -> list[str]:
    from bnlab.data.datasets import DATASETS
    from bnlab.nn.normalizations import NORMALIZATIONS
    from bnlab.spec.figure_kinds import FIGURE_KINDS

    words = [*DATASETS, *FIGURE_KINDS, *NORMALIZATIONS]
    words += [option for row in NORMALIZATIONS.values() for option in row.options]
    return sorted(set(words))


def test_the_mention_finder_sees_strings_names_arguments_and_attributes():
    path = PACKAGE / "nn" / "normalizations.py"
    assert mentions("bnlab.nn.normalizations", "ghost_batch_size") and "ghost_batch_size" in path.read_text()
    assert not mentions("bnlab.nn.normalizations", "ghost_batch")  # a word, not a part of one


def test_each_normalization_option_data_set_and_figure_kind_is_named_in_at_most_two_modules():
    spread = {}
    for word in concept_words():
        where = [name for name in MODULES if mentions(name, word) and (word, name) not in HOMONYMS]
        if len(where) > 2:
            spread[word] = where
    assert spread == {}
    stale = [key for key in HOMONYMS if not mentions(key[1], key[0])]
    assert stale == []  # a homonym no longer there is taken off the list
