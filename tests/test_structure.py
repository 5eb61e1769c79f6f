"""The project's structure: no import circle (imports inside functions count), no upward import.

checks/, kalamclient/ and standin/ stand on their own (history in, verdicts out; a client; a server):
they import nothing of loadtest/ or users/. users/ are thin Locust users: nothing of loadtest.plugin.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("checks", "kalamclient", "standin", "users", "loadtest", "servers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py") if (REPO / pkg).is_dir() else ():
            out[_module_name(path)] = path
        # a compiled module (setup.py) is a module of its package too: kalamclient/_speedups.c
        for path in (REPO / pkg).rglob("*.c") if (REPO / pkg).is_dir() else ():
            out[_module_name(path)] = path
    return out


def _imports(name: str, path: Path, known: set) -> set:
    """Every project module this one imports, at any depth of the file (functions included)."""
    if path.suffix == ".c":
        return set()   # the compiled modules import no project module (orjson at most)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()

    def add(target: str) -> None:
        # "a.b.c" may be a module or a name in module "a.b"
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                full = f"{prefix}.{alias.name}"
                add(full if full in known else prefix)
    return found


def graph() -> dict[str, set]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}




def cycles(g: dict) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-loops."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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


def test_no_import_circle_among_the_projects_modules():
    g = graph()
    assert cycles(g) == []


def test_the_circle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_upward_import():
    g = graph()
    upward = []
    for mod, targets in g.items():
        top = mod.split(".")[0]
        for t in targets:
            ttop = t.split(".")[0]
            if top in ("checks", "kalamclient", "standin") and ttop in ("loadtest", "users"):
                upward.append((mod, t))
            if top == "users" and (t == "loadtest.plugin" or ttop == "loadtest"):
                upward.append((mod, t))
            if top in ("checks", "kalamclient") and ttop in ("standin", "servers"):
                upward.append((mod, t))
    assert upward == []


def test_no_module_global_locates_the_run():
    """State is reached through Locust's environment: the old locators are gone."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in _modules().values())
    for locator in ("_state[", "_observer[", "_process[", "current_run(", "current_observer("):
        assert locator not in text, locator


def test_python_m_loadtest_help_lists_every_option_once_in_its_group():
    # the options as Locust's parser gets them (its own process: Locust must not be imported here)
    code = ("import json; from loadtest.__main__ import _Collect; from loadtest.options import add_arguments, GROUPS; "
            "c = _Collect(); add_arguments(c); "
            "print(json.dumps([[a[0] for a, _ in c.calls], {k: list(v) for k, v in GROUPS.items()}]))")
    got = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    flags, groups = json.loads(got.stdout)
    grouped = [f for fs in groups.values() for f in fs]
    assert sorted(grouped) == sorted(flags) and len(set(grouped)) == len(grouped)
    p = subprocess.run([sys.executable, "-m", "loadtest", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    for title, fs in groups.items():
        section = p.stdout.split(f"\n{title}:\n", 1)[1].split("\n\n", 1)[0]
        assert all(f in section for f in fs), (title, section)
    assert "(default: 20.0)" in p.stdout and "%%" not in p.stdout
    bad = subprocess.run([sys.executable, "-m", "loadtest", "run"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "try --help" in bad.stderr


def test_the_options_reference_is_the_parsers_own_output():
    # docs/options.md cannot go stale: it is `python3 -m loadtest options`, and this fails when they differ
    p = subprocess.run([sys.executable, "-m", "loadtest", "options"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    doc = (REPO / "docs" / "options.md").read_text()
    assert p.stdout == doc, "docs/options.md is stale: run `python3 -m loadtest options > docs/options.md`"
    from loadtest.options import GROUPS
    flags = [f for fs in GROUPS.values() for f in fs]
    assert sorted(line.split("`")[1] for line in doc.splitlines() if line.startswith("| `")) == sorted(flags)


def _defines(path: Path, name: str) -> bool:
    """Does the module at path bind this name at its top level (def, class, assignment, import)?"""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
    return False


def test_the_benchmarks_import_what_the_project_has():
    # the benchmarks are not run by the suite, and import the project inside functions: a module that moved
    # (loadtest.provision → loadtest.run.provision) broke them silently once
    modules = _modules()
    wrong = []
    for path in sorted((REPO / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not node.module or node.level:
                continue
            if node.module.split(".")[0] not in PACKAGES:
                continue
            target = modules.get(node.module)
            if target is None:
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno}: no module {node.module}")
                continue
            for a in node.names:
                if f"{node.module}.{a.name}" not in modules and not _defines(target, a.name):
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.module} has no {a.name}")
    assert wrong == []
