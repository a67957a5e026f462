"""A folder of wheels that installs the benchmarks on a machine without network, next to its torch.

    python tools/wheelhouse.py [--output build/wheelhouse] [--python-version 3.12] \
        [--glibc 2.28] [--torch 2.11.0] [--provided torch numpy] \
        [--serving] [--local]

On a connected machine, into `--output`:
  * the project itself, built as a wheel from this tree;
  * `sam2` (a source distribution) built as a wheel against the installed torch, without
    build isolation and without its CUDA extension (SAM2_BUILD_CUDA=0): a pure-Python wheel;
  * every other distribution the two need for the target (`--python-version`, x86_64 Linux
    with C library `--glibc`; binary wheels only), resolved by pip with torch pinned to the
    target's (`--torch`, so that torchvision matches it), except the distributions the
    target already has (`--provided`, default torch) and everything only they require (CUDA
    libraries, triton, sympy, ...). Source-only pure-Python dependencies (iopath,
    antlr4-python3-runtime) are built as wheels here;
  * with `--serving`, in the subfolder `serving/`: what the served part adds (the Triton server
    carried by nvidia-pytriton, tritonclient, PyAV, ...), resolved together with the rest (so
    that the pins of both folders agree) for glibc SERVING_GLIBC or newer.
`--local` targets this interpreter and platform instead (to check the folder here). Each
folder gets a requirements.txt of exact pins; `wheelhouse.json` says what was built, for
which target, what was left to the target, and the sizes. The target installs from the
folders alone, nothing resolved again (`--no-deps`: the pins are the resolution):

    pip install --no-index --no-deps --find-links build/wheelhouse \
        -r build/wheelhouse/requirements.txt
    pip install --no-index --no-deps --find-links build/wheelhouse/serving \
        -r build/wheelhouse/serving/requirements.txt          # the served part, optional
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "build" / "wheelhouse"
MARKER = "wheelhouse.json"
REQUIREMENTS = "requirements.txt"
SERVING_FOLDER = "serving"
SAM2_SPEC = "sam2==1.1.0"
DEFAULT_PYTHON = "3.12"
DEFAULT_TORCH = "2.11.0"
DEFAULT_GLIBC = "2.28"  # oldest C library the wheels may need (manylinux_2_28: RHEL 8, Debian 10+)
SERVING_GLIBC = "2.35"  # nvidia-pytriton's wheel is manylinux_2_35 (Ubuntu 22.04 and newer)
LEGACY_MANYLINUX = {"2_17": "manylinux2014", "2_12": "manylinux2010", "2_5": "manylinux1"}
# The project's dependencies that only the served part needs (server, client, video files).
SERVING_DISTRIBUTIONS = ("nvidia-pytriton", "tritonclient", "av", "polygraphy", "pycocotools")
DEFAULT_PROVIDED = ("torch",)


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution name of a requirement string ("tritonclient[all]==2.51; ..." ->
    "tritonclient")."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical(match.group(1))


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist entries of a wheel that apply without extras."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode("utf-8")
    requirements = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            value = line.split(":", 1)[1].strip()
            if "extra ==" not in value:
                requirements.append(value)
    return requirements


def manylinux_platforms(glibc: str, machine: str = "x86_64") -> tuple[str, ...]:
    """Every manylinux tag a machine with C library `glibc` ("2.28") accepts, newest first:
    pip takes --platform tags literally and does not widen one to older versions."""
    major, minor = (int(v) for v in glibc.split("."))
    if major != 2 or minor < 5:
        raise ValueError(f"glibc {glibc}: expected 2.5 or newer")
    tags = []
    for version in range(minor, 4, -1):
        tags.append(f"manylinux_2_{version}_{machine}")
        legacy = LEGACY_MANYLINUX.get(f"2_{version}")
        if legacy:
            tags.append(f"{legacy}_{machine}")
    return tuple(tags)


@dataclass(frozen=True)
class Target:
    """The interpreter and C library wheels are chosen for (x86_64 Linux); None: this
    interpreter and machine."""

    python_version: str | None
    glibc: str | None = None

    def pip_options(self) -> list[str]:
        if self.python_version is None:
            return []
        options = ["--python-version", self.python_version, "--only-binary=:all:"]
        for platform in manylinux_platforms(self.glibc or DEFAULT_GLIBC):
            options += ["--platform", platform]
        return options

    def marker_environment(self) -> dict[str, str]:
        """Environment markers (PEP 508) of the target, to evaluate requirements with."""
        environment = {str(key): str(value) for key, value in default_environment().items()}
        if self.python_version is not None:
            environment.update(
                python_version=self.python_version,
                python_full_version=f"{self.python_version}.0",
                implementation_version=f"{self.python_version}.0",
                sys_platform="linux",
                platform_system="Linux",
                platform_machine="x86_64",
                os_name="posix",
                implementation_name="cpython",
                platform_python_implementation="CPython",
            )
        return environment

    def describe(self) -> str:
        if self.python_version is None:
            return f"this interpreter (Python {sys.version.split()[0]}) and machine"
        return f"Python {self.python_version}, x86_64 Linux with glibc >= {self.glibc}"


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    command = [sys.executable, "-m", "pip", *args]
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env)


def build_local_wheels(output: Path, sam2_spec: str) -> list[Path]:
    """This project's wheel and sam2's (no CUDA extension, against the installed torch)."""
    before = set(output.glob("*.whl"))
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(output), str(ROOT))
    env = {**os.environ, "SAM2_BUILD_CUDA": "0"}
    pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-binary",
        requirement_name(sam2_spec),
        "--wheel-dir",
        str(output),
        sam2_spec,
        env=env,
    )
    built = sorted(set(output.glob("*.whl")) - before)
    for wheel in built:
        check_pure(wheel)
    return built


def check_pure(wheel: Path) -> None:
    """SystemExit unless `wheel` installs on any Python 3 and platform (py3-none-any)."""
    if not wheel.name.endswith("-py3-none-any.whl"):
        raise SystemExit(
            f"{wheel.name} was built for this machine only; it cannot go to another target"
        )


def resolve(
    requirements: Sequence[str],
    target: Target,
    find_links: Sequence[Path],
    constraints: Sequence[str],
) -> list[dict]:
    """pip's resolution of `requirements` for `target` (nothing installed): the report's
    "install" entries (name, version, requires_dist, download_info)."""
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
        report = Path(tmp) / "report.json"
        constraint_file = Path(tmp) / "constraints.txt"
        constraint_file.write_text("".join(f"{c}\n" for c in constraints), encoding="utf-8")
        args = [
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "--target",
            str(Path(tmp) / "target"),
            "--constraint",
            str(constraint_file),
            *target.pip_options(),
        ]
        for folder in find_links:
            args += ["--find-links", str(folder)]
        pip(*args, *requirements)
        return json.loads(report.read_text(encoding="utf-8"))["install"]


def needed(
    install: Sequence[dict], roots: Sequence[str], provided: Iterable[str], target: Target
) -> list[dict]:
    """The entries of a resolution that `roots` reach without passing through a `provided`
    distribution: what the target needs beyond what it has. A requirement is followed where
    its marker holds on the target for the extras asked of its distribution."""
    by_name = {canonical(i["metadata"]["name"]): i for i in install}
    skip = {canonical(p) for p in provided}
    environment = target.marker_environment()
    left = [
        requirement
        for requirement in map(Requirement, roots)
        if requirement.marker is None or requirement.marker.evaluate(environment)
    ]
    reached: set[tuple[str, str]] = set()  # (name, extra) pairs followed
    for requirement in left:  # grows while it is walked; markers were evaluated when added
        name = canonical(requirement.name)
        if name in skip or name not in by_name:
            continue
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) in reached:
                continue
            reached.add((name, extra))
            for dependency in by_name[name]["metadata"].get("requires_dist") or []:
                dependency_requirement = Requirement(dependency)
                marker = dependency_requirement.marker
                if marker is None or marker.evaluate({**environment, "extra": extra}):
                    left.append(dependency_requirement)
    names = {name for name, _ in reached}
    return [i for i in install if canonical(i["metadata"]["name"]) in names]


def is_source(entry: dict) -> bool:
    url = entry["download_info"]["url"]
    return not url.endswith(".whl")


def build_source_only(
    requirements: Sequence[str], constraints: Sequence[str], output: Path
) -> list[Path]:
    """Wheels of the source-only distributions in the resolution of `requirements` for this
    interpreter (pure-Python ones: they then fit any target)."""
    install = resolve(requirements, Target(None), [output], constraints)
    sam2 = requirement_name(SAM2_SPEC)
    sources = [pin(i) for i in install if is_source(i) and requirement_name(pin(i)) != sam2]
    if not sources:
        return []
    before = set(output.glob("*.whl"))
    pip("wheel", "--no-deps", "--wheel-dir", str(output), *sources)
    built = sorted(set(output.glob("*.whl")) - before)
    for wheel in built:
        check_pure(wheel)
    return built


def download(pins: Sequence[str], target: Target, output: Path) -> None:
    """The wheels of `pins` (name==version) for `target` into `output`."""
    if pins:
        pip("download", "--no-deps", "--dest", str(output), *target.pip_options(), *pins)


def pin(entry: dict) -> str:
    return f"{entry['metadata']['name']}=={entry['metadata']['version']}"


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.whl")) / 2**20


def prepare_output(output: Path) -> None:
    """An empty `output` (a wheelhouse this tool wrote before is replaced; anything else that
    is not empty is refused)."""
    if output.exists() and any(output.iterdir()):
        if not (output / MARKER).is_file():
            raise SystemExit(f"{output} is not empty and not a wheelhouse: choose another --output")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text('{"status": "incomplete"}\n', encoding="utf-8")


def make_wheelhouse(
    output: Path,
    target: Target,
    torch_version: str | None,
    provided: Sequence[str],
    serving: bool,
    sam2_spec: str = SAM2_SPEC,
) -> dict[str, Any]:
    """Build the folder(s); returns what wheelhouse.json records. With `serving`, the core and
    the served part come from one resolution (so that their pins agree), for a target with at
    least SERVING_GLIBC; SystemExit naming the problem when pip cannot resolve it."""
    prepare_output(output)
    local = build_local_wheels(output, sam2_spec)
    project = next(w for w in local if canonical(w.name.split("-")[0]) == "sam2-triton")
    project_requirements = wheel_requirements(project)
    serving_names = {canonical(n) for n in SERVING_DISTRIBUTIONS}
    core_roots = [r for r in project_requirements if requirement_name(r) not in serving_names]
    serving_roots = [r for r in project_requirements if requirement_name(r) in serving_names]
    constraints = [f"torch=={torch_version}"] if torch_version else []
    roots = [*core_roots, sam2_spec]
    if serving and target.python_version is not None:
        newest = max(target.glibc or DEFAULT_GLIBC, SERVING_GLIBC, key=_version_key)
        target = Target(target.python_version, newest)
    wanted = [*roots, *serving_roots] if serving else roots
    built = build_source_only(wanted, constraints, output)
    try:
        resolution = resolve(wanted, target, [output], constraints)
    except subprocess.CalledProcessError:
        raise SystemExit(
            f"{'the served part' if serving else 'the benchmarks'} cannot be resolved for "
            f"{target.describe()} from wheels (pip's error above)"
        ) from None

    core_pins = [pin(i) for i in needed(resolution, roots, provided, target)]
    local_names = {canonical(w.name.split("-")[0]) for w in local + built}
    download([p for p in core_pins if requirement_name(p) not in local_names], target, output)
    project_pin = f"sam2-triton=={project.name.split('-')[1]}"
    (output / REQUIREMENTS).write_text(
        "".join(f"{p}\n" for p in [project_pin, *core_pins]), encoding="utf-8"
    )
    kept = set(map(requirement_name, core_pins))
    record: dict[str, Any] = {
        "target": target.describe(),
        "torch": torch_version,
        "built_here": [w.name for w in local + built],
        "requirements": [project_pin, *core_pins],
        "size_mib": round(folder_mib(output), 1),
    }
    if serving:
        folder = output / SERVING_FOLDER
        folder.mkdir()
        serving_pins = [
            p
            for p in map(pin, needed(resolution, serving_roots, provided, target))
            if requirement_name(p) not in kept
        ]
        download(serving_pins, target, folder)
        (folder / REQUIREMENTS).write_text("".join(f"{p}\n" for p in serving_pins), "utf-8")
        kept |= set(map(requirement_name, serving_pins))
        record["serving"] = {
            "requirements": serving_pins,
            "size_mib": round(folder_mib(folder), 1),
        }
    record["provided"] = sorted({canonical(i["metadata"]["name"]) for i in resolution} - kept)
    (output / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(v) for v in version.split("."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--python-version", default=DEFAULT_PYTHON, help="target Python X.Y")
    parser.add_argument(
        "--glibc",
        default=DEFAULT_GLIBC,
        help=f"target C library version: manylinux wheels up to it (serving: {SERVING_GLIBC})",
    )
    parser.add_argument(
        "--torch",
        help=f"the target's torch version, which torchvision must match (default: "
        f"{DEFAULT_TORCH}; with --local this interpreter's)",
    )
    parser.add_argument(
        "--provided",
        nargs="+",
        default=list(DEFAULT_PROVIDED),
        help="distributions the target has already (left out with what only they require)",
    )
    parser.add_argument("--serving", action="store_true", help="also serving/ (Triton, client)")
    parser.add_argument(
        "--local",
        action="store_true",
        help="for this interpreter and platform, with this machine's torch",
    )
    parser.add_argument("--sam2", default=SAM2_SPEC, help="sam2 requirement")
    args = parser.parse_args(argv)
    if args.local:
        import torch

        target = Target(None)
        torch_version = args.torch or torch.__version__.split("+")[0]
    else:
        target = Target(args.python_version, args.glibc)
        torch_version = args.torch or DEFAULT_TORCH
    record = make_wheelhouse(
        args.output, target, torch_version, args.provided, args.serving, args.sam2
    )
    print(f"\nwheelhouse for {record['target']} in {args.output}: {record['size_mib']} MiB")
    print(f"left to the target: {', '.join(record['provided']) or 'nothing'}")
    if "serving" in record:
        serving_mib = record["serving"]["size_mib"]
        print(f"serving part in {args.output / SERVING_FOLDER}: {serving_mib} MiB")
    print(
        f"install: pip install --no-index --no-deps --find-links {args.output} "
        f"-r {args.output / REQUIREMENTS}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
