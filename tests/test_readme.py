"""The README's Python example runs as written."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow  # a fresh interpreter and database train the example as written
def test_readme_example_runs(tmp_path):
    block = re.search(r"## In a few lines\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(block)
    out = subprocess.run([sys.executable, str(script)], env={**os.environ, "NNTRANSFER_HOME": str(tmp_path / "home")},
                         capture_output=True, text=True, timeout=600)
    try:
        assert out.returncode == 0, out.stderr
        lines = [line for line in out.stdout.splitlines() if line.startswith(("pretrain-finetune", "baseline"))]
        assert len(lines) == 3 and all(" done " in line for line in lines)
    finally:
        subprocess.run([sys.executable, "-m", "nntransfer.cli", "db", "stop"],
                       env={**os.environ, "NNTRANSFER_HOME": str(tmp_path / "home")}, capture_output=True, timeout=120)
