"""The package's import graph: modules, intra-package edges, cycles, and the largest functions.

    python benchmarks/imports.py [PACKAGE_DIR]      # default: ./hiertune

Reads the source with `ast` (nothing is imported or executed). An edge A -> B means module A
imports module B, at module level or inside a function (function-level imports are listed
separately: they are how circles usually hide). `from pkg import name` counts as an edge to
`pkg.name` when that is a module, else to `pkg`. Cycles are the strongly connected components
(Tarjan) with more than one module, plus self-loops.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def module_names(root: Path) -> dict[str, Path]:
    package = root.name
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package, *parts])] = path
    return names


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(target module, at function level?) for each intra-package import in one file."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name in modules:
                        found.append((alias.name, in_function))
            elif isinstance(child, ast.ImportFrom):
                target = resolve(name, is_package, child)
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:
                        found.append((sub, in_function))
                    elif target in modules:
                        found.append((target, in_function))
            visit(child, nested)

    visit(tree, False)
    return [(target, fn) for target, fn in dict.fromkeys(found) if target != name or True]


def tarjan(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                components.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return components


def largest_functions(modules: dict[str, Path], top: int) -> list[tuple[int, str]]:
    sizes = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                sizes.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(sizes, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", default="hiertune", type=Path)
    parser.add_argument("--edges", action="store_true", help="list every edge")
    args = parser.parse_args()
    root = args.package.resolve()
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    function_level = []
    for name, path in modules.items():
        for target, in_function in imports_of(name, path, modules):
            # A package's __init__ is imported by every submodule import; only count it as an
            # edge where it is named, which `imports_of` already does.
            graph[name].add(target)
            if in_function:
                function_level.append((name, target))
    edges = sum(len(targets) for targets in graph.values())
    cycles = tarjan(graph)
    print(f"package: {root}")
    print(f"modules: {len(modules)}")
    print(f"edges: {edges}")
    print(f"function-level imports: {len(function_level)}")
    for source, target in function_level:
        print(f"  {source} -> {target}")
    print(f"cycles: {len(cycles)}")
    for component in cycles:
        print("  " + " <-> ".join(component))
    if args.edges:
        for source in sorted(graph):
            for target in sorted(graph[source]):
                print(f"edge {source} -> {target}")
    # The same graph between packages (a top-level module counts as its own node): an edge that
    # runs "back up" into a package that imports this one shows here as a cycle.
    package_of = {name: name if path.name == "__init__.py" or name.count(".") == 1 else name.rsplit(".", 1)[0]
                  for name, path in modules.items()}
    packages: dict[str, set[str]] = {pkg: set() for pkg in package_of.values()}
    for source, targets in graph.items():
        for target in targets:
            if package_of[source] != package_of[target]:
                packages[package_of[source]].add(package_of[target])
    print(f"packages: {len(packages)}, package edges: {sum(map(len, packages.values()))}")
    for source in sorted(packages):
        print(f"  {source} -> {', '.join(sorted(packages[source])) or '-'}")
    package_cycles = tarjan(packages)
    print(f"package cycles: {len(package_cycles)}")
    for component in package_cycles:
        print("  " + " <-> ".join(component))
    print("largest functions (lines):")
    for size, name in largest_functions(modules, 10):
        print(f"  {size:4d}  {name}")


if __name__ == "__main__":
    main()
