"""The layering of the design notes, checked statically (import-linter) and at run time."""

import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def test_import_contracts_are_kept():
    lint = subprocess.run([Path(sys.executable).parent / "lint-imports", "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "0 broken" in lint.stdout


def test_the_api_process_never_loads_torch():
    probe = "import sys, api; api.create_app(); assert 'torch' not in sys.modules, 'torch was imported'"
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
