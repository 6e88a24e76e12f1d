"""The job lock's wheels for the training container, so a job with network isolation installs
what the notebook runs without a package index.

`requirements/job.txt` (copied into the package as `job-lock.txt` by `make lock`) pins, with
hashes, what the jobs' entries import beyond the framework image. `closure` picks a job's share
of it (the named packages and everything they need, from pip-compile's `# via` lines), `fill`
puts a wheel of each into a folder (from a local cache, `ALGO_WHEELHOUSE`, downloaded into that
cache with `pip download` when missing), and `requirements_text` is the requirements file that
installs them from that folder only. Client side only: the container runs plain pip.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from algotrading.errors import JobError, ParameterError

LOCK = Path(__file__).with_name("job-lock.txt")  # requirements/job.txt, copied by `make lock`
FOLDER = "wheels"  # in the code channel, next to requirements.txt
PYTHON = (3, 11)  # the framework image's Python (jobs.PY_VERSION)
# The image's platform: the PyTorch training DLC is Ubuntu 22.04 (glibc 2.35) on x86_64. pip
# before 24 does not expand manylinux_2_35 into the older manylinux tags, so they are listed.
PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(35, 4, -1)),
             "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")
DEFAULT_CACHE = Path("~/.cache/algotrading/wheels")


@dataclass(frozen=True)
class Pin:
    """One package of the lock: its name (canonical), version, sha256 hashes and the packages
    that need it (pip-compile's `# via`, canonical; `-r`/`-c` lines left out)."""
    name: str
    version: str
    hashes: frozenset[str]
    via: frozenset[str]


def canonical(name: str) -> str:
    """PEP 503's normalised name (what pip compares)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path | None = None) -> dict[str, Pin]:
    """The lock's pins by canonical name. A line the parser does not understand is refused,
    naming the file and line, rather than silently dropped. Default: LOCK."""
    path = path or LOCK
    pins: dict[str, Pin] = {}
    current: dict | None = None
    in_via = False

    def close() -> None:
        if current:
            pins[current["name"]] = Pin(current["name"], current["version"],
                                        frozenset(current["hashes"]), frozenset(current["via"]))

    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if pin := re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\]+)\s*\\?", text):
            close()
            current, in_via = {"name": canonical(pin[1]), "version": pin[2], "hashes": [],
                               "via": []}, False
        elif digest := re.fullmatch(r"--hash=sha256:([0-9a-f]{64})\s*\\?", text):
            if current is None:
                raise ParameterError(f"{path}:{number}: a hash before any pin")
            current["hashes"].append(digest[1])
        elif text == "# via" or text.startswith("# via "):  # "# via numba" fits on one line
            in_via = True
            parent = text[len("# via"):].strip()
            if current is not None and parent and not parent.startswith("-"):
                current["via"].append(canonical(parent))
        elif in_via and current is not None and text.startswith("#   "):
            parent = text[1:].strip()
            if not parent.startswith("-"):  # -r requirements/job.in, -c requirements/dev.txt
                current["via"].append(canonical(parent))
        elif not text or text.startswith("#"):
            in_via = False
        else:
            raise ParameterError(f"{path}:{number}: not a line of a pip-compile lock: {line!r}")
    close()
    return pins


def closure(pins: dict[str, Pin], names: list[str]) -> list[Pin]:
    """`names` and every pin they need (transitively), in the lock's order. A name the lock
    does not pin is refused: the container could not install it without an index."""
    wanted = [canonical(n) for n in names]
    missing = [n for n in wanted if n not in pins]
    if missing:
        raise ParameterError(f"{LOCK}: no pin for {missing}; add them to requirements/job.in and "
                             "run `make lock`, or turn network isolation off "
                             "(ALGO_JOB_NETWORK_ISOLATION=false) to let the container pip-install")
    needs: dict[str, set[str]] = {}
    for pin in pins.values():
        for parent in pin.via:
            needs.setdefault(parent, set()).add(pin.name)
    seen, todo = set(), list(wanted)
    while todo:
        name = todo.pop()
        if name in seen or name not in pins:  # a parent outside the lock (torch: the image's)
            continue
        seen.add(name)
        todo += sorted(needs.get(name, ()))
    return [pin for name, pin in pins.items() if name in seen]


def allowed_tags() -> frozenset[str]:
    """The wheel tags pip in the image accepts (CPython 3.11, manylinux x86_64, pure Python)."""
    from packaging import tags

    found = [*tags.cpython_tags(PYTHON, abis=[f"cp{PYTHON[0]}{PYTHON[1]}"], platforms=PLATFORMS),
             *tags.compatible_tags(PYTHON, f"cp{PYTHON[0]}{PYTHON[1]}", PLATFORMS)]
    return frozenset(str(t) for t in found)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find(pin: Pin, folder: Path, accepted: frozenset[str]) -> Path | None:
    """A wheel of `pin` in `folder` whose tags the image accepts and whose sha256 the lock lists."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    for path in sorted(folder.glob("*.whl")):
        try:
            name, version, _, wheel_tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        if canonical(name) != pin.name or str(version) != pin.version:
            continue
        if {str(t) for t in wheel_tags} & accepted and _sha256(path) in pin.hashes:
            return path
    return None


def cache_dir() -> Path:
    """ALGO_WHEELHOUSE, else ~/.cache/algotrading/wheels: where wheels are looked for first and
    downloaded to (an instance without an index fills ALGO_WHEELHOUSE by hand)."""
    return Path(os.environ.get("ALGO_WHEELHOUSE") or DEFAULT_CACHE).expanduser()


def download(pins: list[Pin], folder: Path) -> None:
    """`pip download` the pins' wheels for the image's platform into `folder`, each checked
    against the lock's hashes (pip's --require-hashes), from whatever index pip is configured
    with (PIP_INDEX_URL, PIP_FIND_LINKS, pip.conf)."""
    folder.mkdir(parents=True, exist_ok=True)
    with TemporaryDirectory(prefix="algotrading-wheels-") as tmp:
        request = Path(tmp, "requirements.txt")
        request.write_text("".join(
            f"{p.name}=={p.version} " + " ".join(f"--hash=sha256:{h}" for h in sorted(p.hashes)) + "\n"
            for p in pins))
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--require-hashes", "--no-deps", "--only-binary=:all:",
                   "--implementation", "cp", "--python-version", f"{PYTHON[0]}.{PYTHON[1]}",
                   "--abi", f"cp{PYTHON[0]}{PYTHON[1]}", "--abi", "abi3", "--abi", "none",
                   *(a for p in PLATFORMS for a in ("--platform", p)),
                   "--dest", str(folder), "--requirement", str(request)]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise JobError(f"pip download of {[f'{p.name}=={p.version}' for p in pins]} into {folder} "
                       f"failed (no index here?): {done.stderr.strip()[-1500:]}\nPut the wheels "
                       "in ALGO_WHEELHOUSE by hand, or turn network isolation off "
                       "(ALGO_JOB_NETWORK_ISOLATION=false)")


def fill(pins: list[Pin], target: Path, cache: Path | None = None) -> list[Path]:
    """A wheel of each pin in `target`, copied from `cache` (default `cache_dir()`); the ones
    the cache lacks are downloaded into it first. Returns the copied files."""
    cache = cache or cache_dir()
    accepted = allowed_tags()
    missing = [p for p in pins if not cache.is_dir() or find(p, cache, accepted) is None]
    if missing:
        download(missing, cache)
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for pin in pins:
        found = find(pin, cache, accepted)
        if found is None:
            raise JobError(f"{cache} has no wheel of {pin.name}=={pin.version} for CPython "
                           f"{PYTHON[0]}.{PYTHON[1]} on manylinux x86_64 with a hash the lock "
                           f"{LOCK.name} lists")
        out.append(Path(shutil.copy2(found, target / found.name)))
    return out


def requirements_text(pins: list[Pin], wheels: list[Path]) -> str:
    """A requirements file that installs exactly these wheels from `./wheels` and nothing from an
    index (pip resolves a relative --find-links against the requirements file's folder when that
    folder has it, which it does in the code channel), each checked against its file's hash."""
    by_name = {canonical(w.name.split("-")[0]): w for w in wheels}
    lines = ["# Written by algotrading.wheelhouse: no index; the wheels of requirements/job.txt",
             "--no-index", f"--find-links {FOLDER}"]
    lines += [f"{p.name}=={p.version} --hash=sha256:{_sha256(by_name[p.name])}" for p in pins]
    return "\n".join(lines) + "\n"
