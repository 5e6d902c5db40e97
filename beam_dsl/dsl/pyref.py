"""Python classes a spec names (USING), found by reading source, never by importing it.

lint must not run code from the files it reads, nor import scikit-learn (it
takes seconds). So a dotted name is resolved the way a reader would: the
top-level package is located on ``sys.path`` (``importlib.util.find_spec`` of
a top-level name finds it without importing it), then each part is a
sub-package, a module, or a name a module defines or re-exports (``from ._x
import Name``), followed through the source with :mod:`ast`. What the source
cannot tell (compiled modules, names made at import time) is "unknown", and
lint stays silent about it: only a certain answer becomes a diagnostic.
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass

_MAX_HOPS = 12  # re-exports and base classes followed, at most


@dataclass(frozen=True)
class ClassInfo:
    """What the source says of a class: the keyword arguments its constructor takes
    (None where ``**kwargs`` takes any, or where it could not be followed) and whether it
    is a scikit-learn classifier or regressor (None where unknown)."""

    params: frozenset[str] | None
    task: str | None


@dataclass(frozen=True)
class Missing:
    """A dotted name the source shows does not exist: ``where`` lacks ``name``."""

    where: str
    name: str
    choices: tuple[str, ...]


def resolve(dotted: str, folders: tuple[str, ...] = ()) -> ClassInfo | Missing | None:
    """The class ``dotted`` names, what is certainly missing, or None when unknown.
    ``folders`` are searched before ``sys.path`` (a spec's own folder, say)."""
    parts = dotted.split(".")
    if len(parts) < 2 or parts[0] in sys.modules and not getattr(
        sys.modules[parts[0]], "__file__", None
    ):
        return None  # a module made in this process (no source to read): unknown
    try:
        spec = importlib.machinery.PathFinder.find_spec(parts[0], [*folders, *sys.path])
        spec = spec or importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return Missing("", parts[0], ())
    locations = list(spec.submodule_search_locations or [])
    module_file = spec.origin if spec.origin and spec.origin.endswith(".py") else None
    for i, part in enumerate(parts[1:], start=1):
        found = _submodule(locations, part)
        if found is not None:
            locations, module_file = found
            continue
        if module_file is None:
            return None  # a namespace package or compiled module: nothing to read
        node = _find(module_file, part, 0)
        if node is None:
            choices = _names(module_file) + tuple(_subnames(locations))
            return Missing(".".join(parts[:i]), part, choices)
        if node == "unknown" or i != len(parts) - 1:
            return None
        file, cls = node
        return ClassInfo(_params(file, cls, 0), _task(file, cls, 0))
    return None  # the name is a module, not a class (USING checks that elsewhere)


def _submodule(locations: list[str], part: str) -> tuple[list[str], str | None] | None:
    for base in locations:
        package = os.path.join(base, part)
        if os.path.isfile(os.path.join(package, "__init__.py")):
            return [package], os.path.join(package, "__init__.py")
        if os.path.isfile(package + ".py"):
            return [], package + ".py"
        if any(n.startswith(part + ".") and n.endswith((".so", ".pyd")) for n in
               _listdir(base)):
            return [], None  # compiled
    return None


def _subnames(locations: list[str]) -> list[str]:
    out = []
    for base in locations:
        for name in _listdir(base):
            stem = name.split(".")[0]
            if not stem.startswith("_") and (name.endswith(".py") or
                                             os.path.isdir(os.path.join(base, name))):
                out.append(stem)
    return out


@functools.cache
def _listdir(path: str) -> tuple[str, ...]:
    try:
        return tuple(os.listdir(path))
    except OSError:
        return ()


@functools.cache
def _tree(file: str) -> ast.Module | None:
    try:
        with open(file, encoding="utf-8") as f:
            return ast.parse(f.read(), file)
    except (OSError, SyntaxError, ValueError):
        return None


def _names(file: str) -> tuple[str, ...]:
    tree = _tree(file)
    if tree is None:
        return ()
    out = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out.append(node.name)
        elif isinstance(node, ast.ImportFrom):
            out.extend(a.asname or a.name for a in node.names)
    return tuple(n for n in out if not n.startswith("_"))


def _statements(body: list[ast.stmt]):
    """Module-level statements, including those inside ``if``/``try`` blocks."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _statements(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _statements(node.body + node.orelse + node.finalbody
                                   + [s for h in node.handlers for s in h.body])
        else:
            yield node


def _find(file: str, name: str, hops: int):
    """(file, ClassDef) of ``name`` in module ``file``; None if the module certainly lacks
    it; "unknown" if it may be made at import time. A package's module ``__getattr__``
    is taken as lazy loading of its sub-modules (found as files before this)."""
    tree = _tree(file)
    if tree is None or hops > _MAX_HOPS:
        return "unknown"
    package = os.path.basename(file) == "__init__.py"
    stars = []
    for node in _statements(tree.body):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return file, node
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    stars.append(_module_file(file, node.module, node.level))
                elif (alias.asname or alias.name) == name:
                    target = _module_file(file, node.module, node.level)
                    return _find(target, alias.name, hops + 1) if target else "unknown"
        elif isinstance(node, ast.Import):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return "unknown"
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.FunctionDef)):
            targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
            names = {getattr(t, "id", None) for t in targets} | {getattr(node, "name", None)}
            if name in names or ("__getattr__" in names and not package):
                return "unknown"
    for star in stars:
        found = _find(star, name, hops + 1) if star else "unknown"
        if found is not None:
            return found
    return None


def _module_file(file: str, module: str | None, level: int) -> str | None:
    """The source file of ``from <level dots><module> import``, seen from ``file``."""
    if level == 0:
        spec_parts = (module or "").split(".")
        try:
            spec = importlib.util.find_spec(spec_parts[0])
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return spec.origin if spec and spec.origin and len(spec_parts) == 1 else None
        base = list(spec.submodule_search_locations)[0]
        rest = spec_parts[1:]
    else:
        base = os.path.dirname(file)
        for _ in range(level - 1):
            base = os.path.dirname(base)
        rest = module.split(".") if module else []
    path = os.path.join(base, *rest)
    if os.path.isfile(os.path.join(path, "__init__.py")):
        return os.path.join(path, "__init__.py")
    if os.path.isfile(path + ".py"):
        return path + ".py"
    return None


def _bases(file: str, cls: ast.ClassDef, hops: int):
    """(file, ClassDef) of each base class the source can follow, or "unknown"."""
    for base in cls.bases:
        name = base.id if isinstance(base, ast.Name) else None
        if name is None:
            yield "unknown"
            continue
        found = _find(file, name, hops + 1)
        yield found if isinstance(found, tuple) else "unknown"


def _params(file: str, cls: ast.ClassDef, hops: int) -> frozenset[str] | None:
    found = _init_params(file, cls, hops)
    return frozenset() if found is _NO_INIT else found


_NO_INIT = object()  # no class on the way defines __init__: object's, which takes nothing


def _init_params(file: str, cls: ast.ClassDef, hops: int):
    """The keywords of the first ``__init__`` on the way up from ``cls`` (bases left to
    right, depth first: the MRO where no two bases share an ancestor that defines one),
    :data:`_NO_INIT`, or None where a base on the way cannot be followed."""
    if hops > _MAX_HOPS:
        return None
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args
            if args.kwarg is not None:
                return None
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            return frozenset(names[1:] if names and names[0] == "self" else names)
    for base in _bases(file, cls, hops):
        if base == "unknown":
            return None
        found = _init_params(*base, hops + 1)
        if found is not _NO_INIT:
            return found
    return _NO_INIT


def _task(file: str, cls: ast.ClassDef, hops: int) -> str | None:
    if hops > _MAX_HOPS:
        return None
    for base in cls.bases:
        name = getattr(base, "id", getattr(base, "attr", None))
        if name == "ClassifierMixin":
            return "classification"
        if name == "RegressorMixin":
            return "regression"
    for base in _bases(file, cls, hops):
        if base != "unknown":
            task = _task(*base, hops + 1)
            if task:
                return task
    return None
