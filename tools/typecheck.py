"""Type-check the package with mypy, as it is installed rather than as it lies in the tree.

The package `sam2_triton` is assembled from top-level folders by pyproject.toml's
`[tool.setuptools.package-dir]` (`export/` is `sam2_triton.export`, ...); the editable install
maps them with an import hook that mypy cannot follow. This script lays a tree of symbolic
links in that shape under build/typecheck/ (from the same table, so it cannot drift) and runs
mypy on it. The Triton models' `model.py` files all share one module name, so each is linked
as `triton_models/<model>.py` and checked in the same run.

    python tools/typecheck.py [extra mypy arguments]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: mypy itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"
PACKAGE = "sam2_triton"
MODEL_FILES = "model_repository/*/1/model.py"


def link_tree() -> list[Path]:
    """(Re)build the link tree; return the paths mypy should check."""
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    shutil.rmtree(TREE, ignore_errors=True)
    package = TREE / PACKAGE
    package.mkdir(parents=True)
    for item in (ROOT / package_dirs[PACKAGE]).glob("*.py"):
        (package / item.name).symlink_to(item)
    for name, folder in package_dirs.items():
        if name.count(".") == 1:  # a top-level subpackage; deeper ones come with their parent
            (package / name.split(".")[1]).symlink_to(ROOT / folder, target_is_directory=True)
    models = TREE / "triton_models"
    models.mkdir()
    for model_file in sorted(ROOT.glob(MODEL_FILES)):
        (models / f"{model_file.parent.parent.name}.py").symlink_to(model_file)
    return [package, models]


def main() -> int:
    paths = link_tree()
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    command += ["--cache-dir", str(ROOT / "build" / "mypy_cache")]
    command += [*sys.argv[1:], *(str(p.relative_to(TREE)) for p in paths)]
    # Model files are excluded from the package walk: they are checked under triton_models/.
    command += ["--exclude", r"model_repository/.*/model\.py$"]
    return subprocess.run(command, cwd=TREE).returncode


if __name__ == "__main__":
    sys.exit(main())
