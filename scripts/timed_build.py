"""Build the book with `jupyter-book build --all .` (every page re-read, every chapter executed), stream
its log, and report each chapter's execution time.

Writes ``_build/chapter_times.json`` and prints a table; exits with jupyter-book's exit code, and with 1
when the build log reports an execution failure (belt and braces over nb_execution_raise_on_error) or a
Sphinx warning (a broken reference, a duplicate label, a bad directive: the page would render wrong).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    start = time.perf_counter()
    proc = subprocess.Popen(["jupyter-book", "build", "--all", "."], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    times: dict[str, float] = {}
    failed = False
    warnings: list[str] = []
    for line in proc.stdout:
        sys.stdout.write(line)
        m = re.search(r"([^/\s]+)\.ipynb: Executed notebook in ([\d.]+) seconds", line)
        if m:
            times[m.group(1)] = float(m.group(2))
        if "Execution Failed" in line or "CellExecutionError" in line:
            failed = True
        if ": WARNING:" in line or ": ERROR:" in line:  # Sphinx's form; the kernel's "[IPKernelApp] WARNING |" is not
            warnings.append(line.strip())
    code = proc.wait()
    total = time.perf_counter() - start
    out = ROOT / "_build" / "chapter_times.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"chapters_s": times, "total_build_s": round(total, 1)}, indent=1))
    print("\nchapter execution times (s):")
    for name, sec in times.items():
        print(f"  {name:40s} {sec:7.1f}")
    print(f"  {'whole build':40s} {total:7.1f}")
    if warnings:
        print(f"\n{len(warnings)} Sphinx warning(s); the build fails on them:", *warnings, sep="\n  ")
    return code or int(failed or bool(warnings))


if __name__ == "__main__":
    sys.exit(main())
