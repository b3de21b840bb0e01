"""GIVEN the project tree, WHEN it is packaged the way Azure Functions packages it (every file `.funcignore` lets
through, gitignore syntax, as Core Tools and azd do), THEN the package imports `function_app` with all its
functions from the package alone, and holds no key file, state folder, node module, test or tool.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("function_app.py", "host.json", "requirements.txt", "functions/support.py", "shared/ledger.py")
NEVER = (".autopilot/", "node_modules/", ".venv/", "tests/", "benchmarks/", "autopilot/", "infra/", "docs/")
KEY_FILES = ("local.settings.json", ".env")
KEY_SUFFIXES = (".pem", ".key", ".pfx")


def package_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    ignore = pathspec.PathSpec.from_lines("gitignore", (ROOT / ".funcignore").read_text().splitlines())
    # Files git ignores (the venv, state folders) would be uploaded too if they were there: check them as well.
    present = [path for path in listed if (ROOT / path).is_file()]
    for folder in (".autopilot", "node_modules", ".venv"):
        if (ROOT / folder).is_dir():
            present += [str(p.relative_to(ROOT)) for p in list((ROOT / folder).rglob("*"))[:200] if p.is_file()]
    return sorted(path for path in set(present) if not ignore.match_file(path))


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("package")
    for path in package_files():
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, target / path)
    return target


def test_the_package_holds_what_the_app_runs_and_nothing_else(package: Path) -> None:
    files = [str(path.relative_to(package)) for path in package.rglob("*") if path.is_file()]
    for needed in NEEDED:
        assert needed in files, needed
    for path in files:
        assert not path.startswith(NEVER), path
        assert Path(path).name not in KEY_FILES and not path.endswith(KEY_SUFFIXES), path
        assert "__pycache__" not in path, path
    assert len(files) < 200, f"{len(files)} files: more than the app's code"


def test_the_package_imports_function_app_with_every_function_from_itself_alone(package: Path) -> None:
    code = (
        "import json, function_app, shared; "
        "print(json.dumps({'functions': len(function_app.app.get_functions()), 'shared': shared.__file__}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=package,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["shared"].startswith(str(package)) and answer["functions"] >= 15
