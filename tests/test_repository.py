"""The README's two quick-start commands exist and CI runs the README's test command."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def _quick_start_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quick_start_has_exactly_two_one_line_commands():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    setup, tests = commands
    assert "python3.11 -m venv .venv" in setup and "run_pipeline.py" in setup
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_and_never_swallows_failures():
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _quick_start_commands()[1] in ci
    assert "set -euo pipefail" in ci
    assert "|| true" not in ci


def _folder_table() -> dict[str, str]:
    """The README's "Folders" table: first cell (a backticked path) -> the description cell."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Folders\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_readme_folder_table_matches_the_tree():
    """Every top-level package is in the table, and every path the table names exists in its folder."""
    import re

    rows = _folder_table()
    packages = {p.parent.name + "/" for p in REPO_ROOT.glob("*/__init__.py")}
    assert packages <= set(rows), (
        f"top-level packages missing from the README's folder table: {packages - set(rows)}"
    )
    for folder, description in rows.items():
        assert (REPO_ROOT / folder).exists(), f"README folder table names {folder}, which does not exist"
        if not folder.endswith("/"):
            continue
        for name in re.findall(r"`([A-Za-z0-9_./-]+)`", description):
            if "/" in name.rstrip("/") or not re.fullmatch(r"[A-Za-z0-9_]+(/|\.py)", name):
                continue  # a command or a qualified name, not an entry of this folder
            assert (REPO_ROOT / folder / name).exists(), f"README says {folder} holds {name}; it does not"


MAX_FUNCTION_LINES = 100


def test_no_function_is_over_100_lines_without_a_reason():
    """Long functions are split along their seams; one that must stay long says why in its docstring.

    The reason is a docstring paragraph starting with "Long because" (e.g. a generated table, one
    linear protocol that reads best in one piece).
    """
    import ast

    too_long = []
    for package in ("common", "edge", "engines", "trainer"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and "Long because" not in (ast.get_docstring(node) or ""):
                    too_long.append(
                        f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({length} lines)"
                    )
    assert not too_long, "functions over 100 lines without a reason:\n" + "\n".join(too_long)
