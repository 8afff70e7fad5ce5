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
