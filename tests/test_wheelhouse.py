"""The job lock and its wheels (algotrading.wheelhouse), and the isolated code channel
(algotrading.jobs.stage_source): no AWS and no internet.

The lock itself is checked against what is installed here (its pins are the notebook's
versions) and against the installed packages' own metadata (the dependencies it ships). The
wheel handling runs on small wheels built here: `pip download` from a local folder with pip's
index and configuration off, and `pip install` of the staged requirements into a fresh virtual
environment in a network namespace without network (`unshare -rn`, skipped where the kernel
refuses it; PIP_NO_INDEX and a dead proxy otherwise). What only a real job proves: that the
framework image's pip accepts these wheels for its platform and installs them without network.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from algotrading import jobs, wheelhouse
from algotrading.errors import JobError, ParameterError

ROOT = Path(__file__).resolve().parents[1]


# --- the real lock -----------------------------------------------------------------------------

def test_the_packaged_lock_is_requirements_job_txt() -> None:
    assert wheelhouse.LOCK.read_bytes() == (ROOT / "requirements" / "job.txt").read_bytes()


def test_the_lock_pins_what_runs_here_and_leaves_torch_to_the_image() -> None:
    """`make lock` solves job.in within dev.txt's pins, so a job installs the notebook's
    versions; torch stays the framework image's."""
    pins = wheelhouse.read_lock()
    assert "torch" not in pins
    for pin in pins.values():
        assert pin.version == version(pin.name), pin.name
        assert pin.hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in pin.hashes)
    for spec in (ROOT / "requirements" / "job.in").read_text().splitlines():
        if spec and not spec.startswith("#"):
            assert wheelhouse.canonical(spec) in pins


def _needs(name: str) -> set[str]:
    """What the installed distribution `name` requires (its metadata; extras left out)."""
    out = set()
    for text in requires(name) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": "", "python_version": "3.11"}):
            out.add(wheelhouse.canonical(req.name))
    return out


def test_each_entry_gets_its_share_of_the_lock_with_everything_it_needs() -> None:
    """The closure from pip-compile's `# via` lines, checked against the packages' own metadata:
    every requirement of a shipped package is shipped too, or is torch (in the image)."""
    from algotrading.backtest import job
    from algotrading.rl import train as rl_train

    pins = wheelhouse.read_lock()  # models.train submits with jobs.REQUIREMENTS
    for requirements in (jobs.REQUIREMENTS, job.REQUIREMENTS, rl_train.REQUIREMENTS):
        shipped = {p.name for p in wheelhouse.closure(pins, [jobs._name(r) for r in requirements])}
        assert {wheelhouse.canonical(jobs._name(r)) for r in requirements} <= shipped
        for name in shipped:
            assert _needs(name) - shipped <= {"torch"}, name
    backtest = {p.name for p in wheelhouse.closure(pins, [jobs._name(r) for r in job.REQUIREMENTS])}
    assert {"numba", "llvmlite", "scipy"} <= backtest and "gymnasium" not in backtest
    with pytest.raises(ParameterError, match="no pin for \\['not-in-the-lock'\\].*make lock"):
        wheelhouse.closure(pins, ["numpy", "not_in_the_lock"])


def test_the_image_accepts_manylinux_cpython_311_and_pure_wheels_only() -> None:
    tags = wheelhouse.allowed_tags()
    assert {"cp311-cp311-manylinux_2_28_x86_64", "cp311-cp311-manylinux_2_17_x86_64",
            "cp311-abi3-manylinux2014_x86_64", "cp311-none-any", "py3-none-any"} <= tags
    assert not {"cp312-cp312-manylinux_2_28_x86_64", "cp311-cp311-macosx_11_0_arm64",
                "cp311-cp311-manylinux_2_36_x86_64", "cp311-cp311-musllinux_1_2_x86_64"} & tags


# --- wheels built here -------------------------------------------------------------------------

def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(folder: Path, name: str, version_: str, requires_: tuple[str, ...] = (),
                body: str = "") -> Path:
    """A minimal pure-Python wheel (PEP 427): one module and its dist-info."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version_}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version_!r}\n{body}",
        f"{info}/METADATA": "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version_}\n"
                            + "".join(f"Requires-Dist: {r}\n" for r in requires_),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    path = folder / f"{name}-{version_}-py3-none-any.whl"
    record = "".join(f"{k},{_record_hash(v.encode())},{len(v.encode())}\n" for k, v in files.items())
    with zipfile.ZipFile(path, "w") as wheel:
        for k, v in files.items():
            wheel.writestr(k, v)
        wheel.writestr(f"{info}/RECORD", record + f"{info}/RECORD,,\n")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def house(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three small wheels and a lock of them in pip-compile's format (with a second, foreign
    hash per pin, as a lock has one per platform), installed as the package's lock."""
    folder = tmp_path / "house"
    alpha = build_wheel(folder, "tinyalpha", "1.0", ("tinybeta==2.0",), "import tinybeta\n")
    beta = build_wheel(folder, "tinybeta", "2.0")
    other = build_wheel(folder, "tinyother", "3.0")
    lock = tmp_path / "job.txt"
    lock.write_text(f"""#
# This file is autogenerated by pip-compile with Python 3.11
#
tinyalpha==1.0 \\
    --hash=sha256:{_sha(alpha)} \\
    --hash=sha256:{"0" * 64}
    # via -r requirements/job.in
tinybeta==2.0 \\
    --hash=sha256:{_sha(beta)}
    # via
    #   -c requirements/dev.txt
    #   tinyalpha
tinyother==3.0 \\
    --hash=sha256:{_sha(other)}
    # via -r requirements/job.in

# The following packages are considered to be unsafe in a requirements file:
# torch
""")
    monkeypatch.setattr(wheelhouse, "LOCK", lock)
    monkeypatch.setenv("ALGO_WHEELHOUSE", str(folder))
    return folder


def test_read_lock_parses_pins_hashes_and_via(house: Path) -> None:
    pins = wheelhouse.read_lock()
    assert list(pins) == ["tinyalpha", "tinybeta", "tinyother"]
    assert pins["tinybeta"].via == {"tinyalpha"} and pins["tinyalpha"].via == frozenset()
    assert pins["tinyalpha"].hashes == {_sha(house / "tinyalpha-1.0-py3-none-any.whl"), "0" * 64}
    assert [p.name for p in wheelhouse.closure(pins, ["TinyAlpha"])] == ["tinyalpha", "tinybeta"]
    bad = house.parent / "bad.txt"
    bad.write_text("tinyalpha==1.0\n--index-url https://example.invalid/simple\n")
    with pytest.raises(ParameterError, match="bad.txt:2: not a line of a pip-compile lock"):
        wheelhouse.read_lock(bad)


def test_stage_source_ships_the_wheels_and_an_index_free_requirements_file(house: Path,
                                                                           tmp_path) -> None:
    code = jobs.stage_source(tmp_path / "code", ["tinyalpha>=1"], isolated=True)
    shipped = sorted(p.name for p in (code / "wheels").iterdir())
    assert shipped == ["tinyalpha-1.0-py3-none-any.whl", "tinybeta-2.0-py3-none-any.whl"]
    assert (code / "requirements.txt").read_text().splitlines()[1:] == [
        "--no-index", "--find-links wheels",
        f"tinyalpha==1.0 --hash=sha256:{_sha(house / shipped[0])}",
        f"tinybeta==2.0 --hash=sha256:{_sha(house / shipped[1])}"]
    assert (code / "algotrading" / "jobs.py").is_file()
    # staged again (a retry into the same folder): the old wheels are replaced, not added to
    jobs.stage_source(code, ["tinybeta"], isolated=True)
    assert sorted(p.name for p in (code / "wheels").iterdir()) == ["tinybeta-2.0-py3-none-any.whl"]
    jobs.stage_source(tmp_path / "none", (), isolated=True)  # nothing to install: no wheels
    assert not (tmp_path / "none" / "wheels").exists()
    assert (tmp_path / "none" / "requirements.txt").read_text() == ""


def _offline(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`command` with pip's configuration and index off and a dead proxy, in a network namespace
    with no network when the kernel allows one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    env.update(kwargs.pop("env", {}))
    no_net = ["unshare", "-rn"] if shutil.which("unshare") and subprocess.run(
        ["unshare", "-rn", "true"], capture_output=True).returncode == 0 else []
    return subprocess.run([*no_net, *command], env=env, capture_output=True, text=True, **kwargs)


@pytest.mark.slow  # pip in subprocesses
def test_the_staged_requirements_install_offline_into_a_fresh_venv(house: Path, tmp_path) -> None:
    """What the container does (`pip install -r requirements.txt`, the SDK's
    install_requirements.py), from another folder, without an index or network; then the
    package and the wheels import in that environment."""
    code = jobs.stage_source(tmp_path / "code", ["tinyalpha"], isolated=True)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    done = _offline([sys.executable, "-m", "pip", "--python", str(python), "install",
                     "--no-cache-dir", "-r", str(code / "requirements.txt")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ran = _offline([str(python), "-c", "import algotrading.jobs, tinyalpha, tinybeta; "
                    "print(tinyalpha.VERSION, tinybeta.VERSION)"], cwd=code)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["1.0", "2.0"]
    other = _offline([str(python), "-c", "import tinyother"], cwd=code)
    assert "No module named 'tinyother'" in other.stderr  # only the entry's share was shipped
    # what the environment already has at the pinned version pip leaves alone, hash mode or not:
    # without the wheels the same file installs nothing and succeeds (the image's own packages)
    (code / "wheels").rename(tmp_path / "away")
    again = _offline([sys.executable, "-m", "pip", "--python", str(python), "install",
                      "--no-cache-dir", "-r", str(code / "requirements.txt")], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("Requirement already satisfied") == 2
    (tmp_path / "away").rename(code / "wheels")
    # a wheel that does not match its hash is refused by the container's pip
    wheel = code / "wheels" / "tinybeta-2.0-py3-none-any.whl"
    build_wheel(wheel.parent, "tinybeta", "2.0", body="EVIL = 1\n")
    fresh = tmp_path / "venv2"
    venv.create(fresh, with_pip=False)
    refused = _offline([sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"),
                        "install", "--no-cache-dir", "-r", str(code / "requirements.txt")],
                       cwd=tmp_path)
    assert refused.returncode != 0 and "THESE PACKAGES DO NOT MATCH THE HASHES" in refused.stderr


@pytest.mark.slow  # pip in subprocesses
def test_fill_downloads_what_the_cache_lacks_from_a_local_folder(house: Path, tmp_path,
                                                                 monkeypatch) -> None:
    """`pip download` for the image's platform, hash-checked, from a local folder as the only
    source (PIP_FIND_LINKS, no index); the cache keeps the wheels for the next job."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALGO_WHEELHOUSE", str(cache))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    pins = wheelhouse.closure(wheelhouse.read_lock(), ["tinyalpha"])
    out = wheelhouse.fill(pins, tmp_path / "a")
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in out)
    assert [_sha(p) for p in out] == [_sha(house / p.name) for p in out]
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))  # from the cache alone now
    assert [p.name for p in wheelhouse.fill(pins, tmp_path / "b")] == [p.name for p in out]
    # a cached wheel whose hash the lock does not list is not used; the source is tried again
    # and its tampered wheel is refused by pip's hash check
    tampered = tmp_path / "tampered"
    build_wheel(tampered, "tinybeta", "2.0", body="EVIL = 1\n")
    shutil.copy2(tampered / "tinybeta-2.0-py3-none-any.whl", cache)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tampered))
    with pytest.raises(JobError, match="(?s)pip download of \\['tinybeta==2.0'\\].*DO NOT MATCH THE "
                       "HASHES.*ALGO_WHEELHOUSE"):
        wheelhouse.fill(pins, tmp_path / "c")


@pytest.mark.slow  # pip in subprocesses
def test_a_cache_without_the_platforms_wheel_is_refused(house: Path, tmp_path, monkeypatch) -> None:
    """A wheel for another platform (here a macOS one) is not shipped even if its hash is in
    the lock (a lock lists every platform's hash)."""
    mac = tmp_path / "mac"
    built = build_wheel(mac, "tinybeta", "2.0")
    renamed = built.rename(mac / "tinybeta-2.0-cp311-cp311-macosx_11_0_arm64.whl")
    beta = _sha(house / "tinybeta-2.0-py3-none-any.whl")
    lock = wheelhouse.LOCK.read_text().replace(beta, _sha(renamed))
    wheelhouse.LOCK.write_text(lock)
    monkeypatch.setenv("ALGO_WHEELHOUSE", str(mac))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(mac))
    pins = wheelhouse.closure(wheelhouse.read_lock(), ["tinybeta"])
    assert wheelhouse.find(pins[0], mac, wheelhouse.allowed_tags()) is None
    with pytest.raises(JobError, match="tinybeta==2.0"):
        wheelhouse.fill(pins, tmp_path / "out")


def test_network_isolation_defaults_on(monkeypatch) -> None:
    monkeypatch.delenv("ALGO_JOB_NETWORK_ISOLATION", raising=False)
    monkeypatch.delenv("ALGO_STACK", raising=False)
    assert jobs.network_isolation() is True
    for text, expected in (("false", False), (" TRUE ", True)):
        monkeypatch.setenv("ALGO_JOB_NETWORK_ISOLATION", text)
        assert jobs.network_isolation() is expected
    assert jobs.network_isolation(False) is False
