"""Wall time of ``nntransfer status examples/digits_transfer.py`` (the CLI reading a recipe's state), and whether
it imports torch.

    python benchmarks/cli_status.py [--runs 7]

Uses a temporary NNTRANSFER_HOME whose embedded server is started (and the demo's tables filled) first, so the
runs measure the command, not the first start. Python's bytecode cache is on, as in an installed package: the
first (unmeasured) runs write nntransfer's ``.pyc`` files even where ``PYTHONDONTWRITEBYTECODE`` is set (this
sandbox sets it; without the cache every run compiles nntransfer's ~100 modules again, ~0.2 s). Prints min /
median / max wall seconds of whole processes and the modules that took longest to import in one of them
(``python -X importtime``). The target (issue 15): the median ≤ 1.5 s on an idle two-core machine, and no torch.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "digits_transfer.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="nntransfer-bench-status-")
    env = dict(os.environ, NNTRANSFER_HOME=home)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    command = [sys.executable, "-m", "nntransfer.cli", "status", str(RECIPE)]
    try:
        # the first start of the embedded server and the tables is not what is measured
        subprocess.run([sys.executable, "-c", "from nntransfer.orchestration.fill import fill_tables\n"
                        f"from nntransfer.orchestration.recipes import load_recipe\nfill_tables(load_recipe({str(RECIPE)!r}))"],
                       env=env, check=True, capture_output=True)
        subprocess.run(command, env=env, check=True, capture_output=True)  # writes the CLI's bytecode
        walls = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            walls.append(time.perf_counter() - started)
        timing = subprocess.run([sys.executable, "-X", "importtime", *command[1:]], env=env, check=True,
                                capture_output=True, text=True).stderr
    finally:
        subprocess.run([sys.executable, "-m", "nntransfer.cli", "db", "stop"], env=env, capture_output=True)
    imported = [line.split("|") for line in timing.splitlines() if line.startswith("import time:")]
    cumulative = sorted(((int(us), name.rstrip()) for _, _, us, name in
                         ((*parts[0].split(":"), parts[1], parts[2]) for parts in imported) if us.strip().isdigit()),
                        reverse=True)
    top = [(us, name) for us, name in cumulative if not name.startswith("  ")][:8]
    print(f"nntransfer status {RECIPE.relative_to(ROOT)}: {args.runs} runs, wall seconds "
          f"min {min(walls):.2f} / median {statistics.median(walls):.2f} / max {max(walls):.2f}")
    print(f"torch imported: {any(name.strip() == 'torch' for _, name in cumulative)}")
    print("largest top-level imports (cumulative ms):", ", ".join(f"{name.strip()} {us / 1000:.0f}" for us, name in top))
    print(f"load average while measuring: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
