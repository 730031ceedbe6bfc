"""The import graph of the project: no cycles, and the library never imports the programs.

Every module under tfllm/, trainers/ (installed as `tfllm.trainers`) and export/ (`tfllm.export`)
is parsed, not imported, so the check needs neither TensorFlow nor the time to load it. Imports
inside functions count too: a lazy import still breaks when the two modules need each other's
names while loading. A string that is exactly the dotted name of a project module
(`importlib.import_module` arguments, lazy-loading tables) counts as an import of it.
"""

import ast
import collections
import os


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Source folder -> the package it is installed as.
PACKAGES = {"tfllm": "tfllm", "trainers": "tfllm.trainers", "export": "tfllm.export"}
PROGRAMS = ("tfllm.trainers", "tfllm.export")
# `tfllm` imports a program's module only once its verb runs; the programs never import it.
COMMAND = "tfllm.cli"


def project_modules(root=ROOT):
    """`{module name: path}` of every .py file of the project at `root`."""
    modules = {}
    for folder, package in PACKAGES.items():
        for directory, dirs, files in os.walk(os.path.join(root, folder)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            relative = os.path.relpath(directory, os.path.join(root, folder))
            prefix = package if relative == "." else ".".join([package, *relative.split(os.sep)])
            for name in sorted(files):
                if name.endswith(".py"):
                    module = prefix if name == "__init__.py" else f"{prefix}.{name[:-3]}"
                    modules[module] = os.path.join(directory, name)
    return modules


def imported_modules(module, path, modules):
    """The project modules `module` (the file `path`) imports, anywhere in the file."""
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), path)
    # The package a relative import starts from: a package's __init__ is its own package.
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                # `from package import name` imports the submodule when `name` is one.
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
            # A dotted module name in a string is a lazy import (`importlib.import_module`, a table of them).
            found.add(node.value)
    return {name for name in found if name in modules and name != module}


def import_graph(root=ROOT):
    """`{module: the project modules it imports}` for the project at `root`."""
    modules = project_modules(root)
    return {module: imported_modules(module, path, modules) for module, path in modules.items()}


def is_program(module):
    return any(module == p or module.startswith(p + ".") for p in PROGRAMS)


def cycles(graph):
    """One shortest cycle (`[a, b, ..., a]`) through each group of modules that import each other."""
    return [shortest_cycle(graph, group) for group in strongly_connected(graph) if len(group) > 1]


def shortest_cycle(graph, group):
    """Breadth-first from the group's first module back to itself, inside the group."""
    start = min(group)
    parents, queue = {start: None}, collections.deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(graph[node] & group):
            if successor == start:
                path = [node]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if successor not in parents:
                parents[successor] = node
                queue.append(successor)
    raise AssertionError(f"{sorted(group)} is not strongly connected")


def strongly_connected(graph):
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    groups.append(group)
            elif successor not in index:
                index[successor] = low[successor] = len(index)
                stack.append(successor)
                on_stack.add(successor)
                work.append((successor, iter(sorted(graph[successor]))))
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
    return groups


def without_command_edges(graph):
    return {m: {n for n in imports if not (m == COMMAND and is_program(n))} for m, imports in graph.items()}


def describe(found):
    return "import cycles:\n" + "\n".join("  " + " -> ".join(cycle) for cycle in found)


def test_the_library_has_no_import_cycle():
    graph = without_command_edges(import_graph())
    library = {m: {n for n in imports if not is_program(n)} for m, imports in graph.items() if not is_program(m)}
    found = cycles(library)
    assert not found, describe(found)


def test_no_import_cycle_with_the_programs():
    found = cycles(without_command_edges(import_graph()))
    assert not found, describe(found)


def test_the_library_never_imports_the_programs():
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {imported}"
        for module, imports in graph.items()
        if not is_program(module) and module != COMMAND
        for imported in imports
        if is_program(imported)
    )
    assert not wrong, "the library must not import the programs (only tfllm.cli may):\n" + "\n".join(wrong)


def test_the_programs_never_import_the_command():
    # What makes the command's edges to the programs safe to leave out of the cycle check.
    graph = import_graph()
    assert not sorted(m for m, imports in graph.items() if COMMAND in imports and is_program(m))


def test_the_graph_has_lazy_relative_and_from_package_imports(tmp_path):
    files = {
        "tfllm/__init__.py": "",
        "tfllm/a.py": "import os\n\ndef f():\n    from tfllm import b, errors\n",
        "tfllm/b.py": "from . import c\nfrom .c import NAME\n",
        "tfllm/c.py": 'import importlib\nNAME = 1\nLAZY = {"x": "tfllm.sub.d", "y": "tfllm.sub.missing"}\n',
        "tfllm/errors.py": "",
        "tfllm/sub/__init__.py": "from .d import D\n",
        "tfllm/sub/d.py": "import tfllm.a\nimport keras.layers\n",
        "trainers/__init__.py": "",
        "trainers/fit.py": "from tfllm.trainers import resume\nfrom tfllm.c import NAME as N\n",
        "trainers/resume.py": 'import importlib\nimportlib.import_module("tfllm.export.server")\n',
        "export/server.py": "from tfllm.export.manifest import x\nimport tfllm.sub.d as d\n",
        "export/manifest.py": "from tfllm.files import write_atomically\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert import_graph(str(tmp_path)) == {
        "tfllm": set(),
        "tfllm.a": {"tfllm.b", "tfllm.errors"},
        "tfllm.b": {"tfllm.c"},
        "tfllm.c": {"tfllm.sub.d"},
        "tfllm.errors": set(),
        "tfllm.sub": {"tfllm.sub.d"},
        "tfllm.sub.d": {"tfllm.a"},
        "tfllm.trainers": set(),
        "tfllm.trainers.fit": {"tfllm.trainers.resume", "tfllm.c"},
        "tfllm.trainers.resume": {"tfllm.export.server"},
        "tfllm.export.server": {"tfllm.export.manifest", "tfllm.sub.d"},
        "tfllm.export.manifest": set(),
    }
    assert cycles(import_graph(str(tmp_path))) == [["tfllm.a", "tfllm.b", "tfllm.c", "tfllm.sub.d", "tfllm.a"]]


def test_cycles_are_found_and_printed():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert describe(cycles(graph)) == "import cycles:\n  a -> b -> c -> a"
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
