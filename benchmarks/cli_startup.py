"""Start-up cost of the command line: `autopilot validate FILE --json` next to the validator's own time.

On the same generated ultrachat-shaped JSONL file (benchmarks/validate_bench.py makes it), each figure is
the best of several fresh processes, run round by round so that a busy spell hits them all alike:

- validator: `validate_dataset` on the file, timed inside its process after its imports (the work alone);
- validator process: the wall time of a `python -c` that imports the validator and runs it (the work as a
  program of its own: interpreter and imports included);
- cli: the wall time of `python -m autopilot validate FILE --json`, stdout to /dev/null (everything a user waits
  for: the interpreter, the imports, the settings, the parser, the work, the JSON);
- python: the wall time of a bare `python -c pass`, and import: `autopilot.cli` imported and the parser of
  `validate` built (what `autopilot validate` builds).

Target: cli within 1.3x of validator (the work alone); the ratio to the validator process is printed too.

    .venv/bin/python benchmarks/cli_startup.py [--size-mb 150] [--repeats 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.validate_bench import generate  # noqa: E402

TARGET_RATIO = 1.3
# Bytecode as an installed CLI has it, cached outside the work tree even where PYTHONDONTWRITEBYTECODE is set.
CHILD_ENV = {
    **{key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "autopilot-cli-startup-pycache"),
}
VALIDATOR_PROGRAM = (
    "import sys; from shared.validation import DatasetSource, validate_dataset; "
    "validate_dataset([DatasetSource.from_path(sys.argv[1], split='train')])"
)
PARSER_PROBE = (
    "import time; start = time.perf_counter(); from autopilot.cli import build_parser; build_parser('validate'); "
    "print(time.perf_counter() - start)"
)


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, cwd=PROJECT_ROOT, env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return time.perf_counter() - start


def _validator_seconds(path: Path) -> float:
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "benchmarks" / "validate_bench.py"),
            "--contender=validator",
            f"--file={path}",
        ],
        cwd=PROJECT_ROOT,
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def _parser_seconds() -> float:
    done = subprocess.run(
        [sys.executable, "-c", PARSER_PROBE],
        cwd=PROJECT_ROOT,
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip())


def measure(path: Path, repeats: int) -> dict[str, float]:
    """Best of `repeats` for each figure, in seconds."""
    cli = [sys.executable, "-m", "autopilot", "validate", str(path), "--json"]
    # A first round compiles bytecode and warms the page cache; it is not counted.
    _wall(cli)
    _validator_seconds(path)
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, seconds in (
            ("validator", _validator_seconds(path)),
            ("cli", _wall(cli)),
            ("validator_process", _wall([sys.executable, "-c", VALIDATOR_PROGRAM, str(path)])),
            ("python", _wall([sys.executable, "-c", "pass"])),
            ("import", _parser_seconds()),
        ):
            best[name] = min(best.get(name, seconds), seconds)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=150.0, help="size of the generated file (default 150)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure, best kept (default 5)")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep the file (reused if there)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"train-{args.size_mb:g}mb.jsonl"
        if not path.exists():
            generate(path, args.size_mb)
        best = measure(path, args.repeats)
    ratio = best["cli"] / best["validator"]
    size = path.stat().st_size / 1e6 if args.keep else args.size_mb
    print(f"file: {size:.0f} MB of ultrachat-shaped JSONL; best of {args.repeats} fresh processes each")
    print(f"{'':<46} {'seconds':>8}")
    print(f"{'validator (validate_dataset, the work alone)':<46} {best['validator']:>8.3f}")
    print(f"{'validator as a process of its own (wall)':<46} {best['validator_process']:>8.3f}")
    print(f"{'autopilot validate FILE --json (wall)':<46} {best['cli']:>8.3f}")
    print(f"{'  of which: python -c pass (wall)':<46} {best['python']:>8.3f}")
    print(f"{'  of which: autopilot.cli, validate parser':<46} {best['import']:>8.3f}")
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print(f"cli / validator process = {best['cli'] / best['validator_process']:.2f}")
    print(f"cli / validator = {ratio:.2f} (target <= {TARGET_RATIO}): {verdict}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
