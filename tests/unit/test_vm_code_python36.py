"""VM-side code runs on the image's system Python: it must parse as 3.6 and use only the stdlib."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

VM_PACKAGE = Path(__file__).resolve().parents[2] / "contextualization" / "gwms_context"
VM_SOURCES = sorted(VM_PACKAGE.rglob("*.py"))


def test_vm_package_has_sources() -> None:
    assert VM_SOURCES, f"no Python sources under {VM_PACKAGE}"


@pytest.mark.parametrize("source", VM_SOURCES, ids=lambda p: str(p.relative_to(VM_PACKAGE)))
def test_vm_source_parses_with_python36_grammar(source: Path) -> None:
    ast.parse(source.read_text(encoding="utf-8"), filename=str(source), feature_version=(3, 6))


@pytest.mark.parametrize("source", VM_SOURCES, ids=lambda p: str(p.relative_to(VM_PACKAGE)))
def test_vm_source_imports_only_stdlib_and_itself(source: Path) -> None:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    allowed = set(sys.stdlib_module_names) | {"gwms_context"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in allowed, f"{source.name}:{node.lineno} imports {name}"


def test_vm_package_needs_no_python_newer_than_36() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("vermin")),
            "-t=3.6-",
            "--no-tips",
            "--violations",
            str(VM_PACKAGE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
