"""The package's layering, read from the source (ast, nothing imported but the CLI's command table):
the library never imports a job (only `cli.py` imports the modules that hold the commands' `run_*` entry
points), and `judge/` imports nothing from `clip/` (shared training machinery lives in `training/`)."""

from __future__ import annotations

import ast
from pathlib import Path

import animatch
from animatch.cli import COMMANDS

PACKAGE = Path(animatch.__file__).parent

def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (lazy imports inside functions too); `from pkg import name`
    counts as importing `pkg.name` as well, since the name may be a submodule."""
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _entry_modules() -> set[str]:
    return {target.split(":")[0] for _cls, target, _help in COMMANDS.values()}


def _job_imports() -> set[tuple[str, str]]:
    entries = _entry_modules()
    return {(module, imported) for module, imports in _graph().items() if module != "animatch.cli"
            for imported in imports & entries if imported != module}


def test_the_import_reader_sees_lazy_relative_and_submodule_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "animatch" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "mod.py").write_text("def f():\n    from animatch.clip import train\n    from . import sibling\n"
                                "    from ..judge.cli import judge_batch\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "animatch")
    found = _imports(pkg / "mod.py")
    assert {"animatch.clip.train", "animatch.sub.sibling", "animatch.judge.cli"} <= found


def test_only_the_cli_imports_a_commands_entry_point_module():
    assert "animatch.audit.run" in _entry_modules() and len(_entry_modules()) >= 10
    assert _job_imports() == set(), "library modules import a job (an entry-point module of cli.COMMANDS)"


def test_judge_imports_nothing_from_clip():
    judge = {module: imports for module, imports in _graph().items() if module.startswith("animatch.judge")}
    assert len(judge) > 5  # the judge package was read
    assert {(m, i) for m, imports in judge.items() for i in imports
            if i == "animatch.clip" or i.startswith("animatch.clip.")} == set()
