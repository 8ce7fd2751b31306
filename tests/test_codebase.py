"""The codebase keeps its rules: the layering of the design notes (statically and at run time), lint and format."""

import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def test_import_contracts_are_kept():
    lint = subprocess.run(
        [Path(sys.executable).parent / "lint-imports", "--no-cache"], cwd=REPO, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "0 broken" in lint.stdout


def test_the_api_process_never_loads_torch():
    probe = "import sys, api; api.create_app(); assert 'torch' not in sys.modules, 'torch was imported'"
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_code_is_lint_clean_and_formatted():
    ruff = Path(sys.executable).parent / "ruff"
    for command in (["check", "."], ["format", "--check", "."]):
        run = subprocess.run([ruff, *command], cwd=REPO, capture_output=True, text=True)
        assert run.returncode == 0, f"ruff {' '.join(command)} (make lint fixes most):\n{run.stdout}{run.stderr}"
