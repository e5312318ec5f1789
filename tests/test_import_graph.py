"""The import graph of src/mirrorsync: no cycles, and every import goes down the layers.

Built from the source with ``ast``: every ``import`` and ``from ... import``, at module
level and inside functions (an import moved into a function to dodge a cycle is still
that cycle), and the implicit ones: importing ``a.b.c`` runs ``a/__init__`` and
``a/b/__init__`` first. Imports under ``if TYPE_CHECKING:`` run never, so they are left
out of the cycle check, but they are dependencies all the same: the layer check
counts them.

The layers, lowest first. The README's arrows (config -> fetch -> formats -> sync ->
store -> events -> delivery / mirrors -> cli) say where data flows; in imports the
writer imports the store, so the store sits below the sync engine that fills it, and
the run that drives a sync, the copies and the webhooks (``sync.run``) sits above
all three. A module imports its own layer or lower ones only.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"

#: (layer, module prefixes), lowest first; the longest matching prefix decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "mirrorsync",
            "mirrorsync.__init__",
            "mirrorsync.errors",
            "mirrorsync.redact",
            "mirrorsync.text",
            "mirrorsync.units",
            "mirrorsync.vocab",
            "mirrorsync.logs",
            "mirrorsync.logformat",
            "mirrorsync.journal",
            "mirrorsync.records",
            "mirrorsync.phase",
            "mirrorsync.inflate",
            "mirrorsync.gpg",
            "mirrorsync.proxies",
            "mirrorsync.paths",
            "mirrorsync.location",
            "mirrorsync.ociref",
        ),
    ),
    ("config", ("mirrorsync.config", "mirrorsync.config_file", "mirrorsync.config_cache")),
    ("fetch", ("mirrorsync.fetch",)),
    ("formats", ("mirrorsync.formats",)),
    ("store", ("mirrorsync.store",)),
    (
        "sync",  # the engine: indexes, manifests, pages, the pool, progress, outcomes
        (
            "mirrorsync.sync.index",
            "mirrorsync.sync.manifests",
            "mirrorsync.sync.crawl",
            "mirrorsync.sync.pool",
            "mirrorsync.sync.progress",
            "mirrorsync.sync.outcome",
            "mirrorsync.sync.trust",
        ),
    ),
    (
        "consumers",  # what reads the store and acts: webhooks, copies, health, metrics
        (
            "mirrorsync.delivery",
            "mirrorsync.mirrors",
            "mirrorsync.bundles",  # beside mirrors: a copy carried and received
            "mirrorsync.health",
            "mirrorsync.metrics",
            "mirrorsync.export",
            "mirrorsync.verify",
            "mirrorsync.lock",
            "mirrorsync.sync.report",
        ),
    ),
    ("run", ("mirrorsync.sync", "mirrorsync.sync.run", "mirrorsync.sync.pages")),
    ("front", ("mirrorsync.cli", "mirrorsync.__main__", "mirrorsync.serve", "mirrorsync.fixture")),
]
RANK = {prefix: rank for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes}

#: Imports that go up a layer, each with its reason. Keep this short, and say why.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("mirrorsync.config.check_copies", "mirrorsync.mirrors.wanted"): (
        "loading a copy's settings reads the lockfiles and keeplists it names, with the "
        "parser the copy uses (a function-level import; wanted needs config's types only "
        "for type checking, so there is no cycle)"
    ),
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "mirrorsync").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _module_level_lines(tree: ast.Module) -> set[int]:
    """Lines that run when the module is imported: not inside a function."""
    lines: set[int] = set()
    for statement in tree.body:
        lines.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            lines.difference_update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def edges(known: dict[str, Path]) -> dict[tuple[str, str], bool]:
    """(importer, imported) -> True if it runs (not only under TYPE_CHECKING).

    Importing ``a.b.c`` runs the module level of ``a/__init__`` and ``a/b/__init__``
    first: an edge to the node ``a[init]``, which has the package's module-level
    imports only (a package exporting names lazily through ``__getattr__`` runs those
    imports when a name is asked for: that is an edge to ``a`` itself, with them all).
    """
    found: dict[tuple[str, str], bool] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        typing_only = _type_checking_lines(tree)
        top = _module_level_lines(tree)
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in known else base)
            else:
                continue
            runs = node.lineno not in typing_only
            importers = [name] + ([f"{name}[init]"] if is_package and node.lineno in top else [])
            for target in targets:
                if not target.startswith("mirrorsync") or target not in known:
                    continue
                implicit = [f"{a}[init]" for a in _ancestors(target) if a not in _ancestors(name)]
                for importer in importers:
                    for imported in [*implicit, target]:
                        if imported in (name, f"{name}[init]"):
                            continue
                        key = (importer, imported)
                        found[key] = found.get(key, False) or runs
    return found


def rank(name: str) -> int:
    parts = name.removesuffix("[init]").split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in RANK:
            return RANK[prefix]
    raise AssertionError(f"{name}: in no layer of LAYERS")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_module_or_function_level() -> None:
    known = modules()
    graph: dict[str, set[str]] = {}
    for (importer, imported), runs in edges(known).items():
        graph.setdefault(imported, set())
        if runs:
            graph.setdefault(importer, set()).add(imported)
    assert cycles(graph) == []


def test_every_import_goes_down_the_layers() -> None:
    found = edges(modules())
    # A package's module level (``a[init]``) sits as high as what it runs on import; a
    # package whose __init__ imports nothing (names exported lazily) is in the lowest.
    init_rank: dict[str, int] = {}
    for (importer, imported), runs in found.items():
        if runs and importer.endswith("[init]"):
            init_rank[importer] = max(init_rank.get(importer, 0), rank(imported))

    def layer(name: str) -> int:
        return init_rank.get(name, 0) if name.endswith("[init]") else rank(name)

    upward = sorted(
        f"{a} ({LAYERS[layer(a)][0]}) imports {b} ({LAYERS[layer(b)][0]})"
        for (a, b) in found
        if layer(b) > layer(a)
        and not b.startswith(a.removesuffix("[init]") + ".")  # a package's own modules
        and (a.removesuffix("[init]"), b.removesuffix("[init]")) not in EXCEPTIONS
    )
    assert upward == []


def test_the_exceptions_are_still_needed() -> None:
    found = edges(modules())
    assert [pair for pair in EXCEPTIONS if pair not in found] == []
