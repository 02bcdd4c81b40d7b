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


def test_readme_set_up_keeps_two_commands_and_documents_the_cpu_only_install():
    from packaging.requirements import Requirement

    setup = README.read_text().split("## Set-up")[1].split("\n## ")[0]
    blocks = re.findall(r"```bash\n(.*?)```", setup, re.S)
    commands = [line.split("#")[0].strip() for line in blocks[0].splitlines() if line.strip()]
    assert commands == ['pip install -e ".[test]"', "nntransfer run examples/digits_transfer.py"]
    cpu = re.search(r"pip install torch==(\S+) torchvision==(\S+) --index-url https://download.pytorch.org/whl/cpu",
                    blocks[1])
    assert cpu, "the CPU-only install: PyTorch's CPU wheel index, before the project install"
    wanted = re.findall(r'"((?:torch|torchvision)[<>=!][^"]*)"', (README.parent / "setup.py").read_text())
    pins = {"torch": cpu.group(1), "torchvision": cpu.group(2)}
    assert sorted(Requirement(r).name for r in wanted) == ["torch", "torchvision"]
    for requirement in map(Requirement, wanted):  # the CPU pair satisfies setup.py, so pip keeps it
        assert requirement.specifier.contains(pins[requirement.name]), requirement
