"""A digest of the source code a plugin runs, so results never outlive the code that made them.

A plugin's results depend on its code as much as on its settings. Version numbers are bumped
by people and forgotten by people; an editable install changes code without changing any
version. So a plugin's fingerprint includes the SHA-256 of the source files it can execute:
the module that defines its factory and, transitively, every module of the same top-level
package that module imports, at module level or inside a function (the lazy imports that keep
start-up light). Other packages (numpy, scipy, hydraopt's core) are covered by the package
versions in the provenance and the stage versions.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path


def plugin_code_digest(module_name: str) -> str:
    """SHA-256 over the source of ``module_name`` and what it imports from its own package."""
    digest = hashlib.sha256()
    for name, path in sorted(_closure(module_name).items()):
        digest.update(f"{name}\0".encode())
        digest.update(path.read_bytes() if path else b"(no source)")
    return digest.hexdigest()


def _closure(module_name: str) -> dict[str, Path | None]:
    top = module_name.partition(".")[0]
    root = _package_root(top)  # found once: every module of the closure lives under it
    found: dict[str, Path | None] = {module_name: _source_path(module_name, root)}
    todo = [module_name]
    while todo:
        current = todo.pop()
        path = found[current]
        if path is None or path.suffix != ".py":
            continue
        for name in _imports(current, path):
            if name.partition(".")[0] != top or name in found:
                continue
            source = _source_path(name, root)
            if source is not None:  # not a module: a function or class imported by name
                found[name] = source
                todo.append(name)
    return found


def _source_path(module_name: str, root: Path | None) -> Path | None:
    """The file of a module, found from its top-level package's folder ``root`` without
    importing it (importing would run the module, and pull in numba or torch to hash them)."""
    _, _, rest = module_name.partition(".")
    if root is None:
        return None
    if root.is_file():  # a top-level module, not a package
        return root if not rest else None
    base = root.joinpath(*rest.split(".")) if rest else root
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _package_root(top: str) -> Path | None:
    """The folder of top-level package ``top`` (or the file of a top-level module)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None  # a namespace package or a built-in module: nothing to hash
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def _imports(module_name: str, path: Path) -> list[str]:
    """Modules ``path`` imports anywhere in its body, as absolute names; ``from a import b``
    yields both ``a`` and ``a.b`` (``b`` may be a submodule)."""
    package = module_name if path.name == "__init__.py" else module_name.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            if base:
                names.append(base)
                names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return names


def _absolute(module: str | None, level: int, package: str) -> str:
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - level + 1]) if level <= len(parts) else ""
    return f"{base}.{module}" if module and base else (module or base)
