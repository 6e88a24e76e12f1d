"""Numbers that do not depend on the CPU.

The numerical libraries pick their kernels by the instructions the CPU offers: torch's vectorised
ops (AVX-512, AVX2 or the baseline build), MKL (torch's BLAS), oneDNN, and the OpenBLAS that
numpy and scipy ship. Different kernels round differently, so one seed gave other weights, another
PPO policy and another GARCH fit on a colleague's machine. `PINS` fixes each library to kernels
every x86-64 CPU runs the same way; `pin()` sets them in the environment, which the libraries read
when they load, so `import algotrading` (the package calls it first) pins every library loaded
after it, and every process started after it (notebook kernels, SageMaker entry scripts, tests).
The "Python (algotrading)" kernel spec carries the same variables for JupyterLab.

What it costs: the forecaster and PPO train in the same time (their tensors are small; measured in
docs/reproducibility.md); numpy matrix products in the same process use OpenBLAS's SSE4.2
kernels, slower for large matrices. `ALGO_NUMERICS=native` leaves every library to choose, for
speed, with results that may differ by CPU in the last digits (and then, through training, in
whole trades). Training also needs one thread per library (`one_thread`): a parallel reduction
sums in an order that depends on the thread count.

tests/test_numerics.py proves it by emulating older CPUs (AVX2-only, SSE4.2-only) through the
variables that cap each library and glibc, and comparing the weights' sha256 and the GARCH fit.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",  # torch: the baseline kernels, not AVX2/AVX-512 ones
    "MKL_CBWR": "COMPATIBLE",  # MKL: conditional numerical reproducibility across CPUs
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN (torch's mkldnn ops): no wider vector units
    "OPENBLAS_CORETYPE": "Nehalem",  # numpy's and scipy's OpenBLAS: SSE4.2 kernels, no FMA
}
SWITCH = "ALGO_NUMERICS"  # "native": leave each library to pick its kernels


class NumericsWarning(UserWarning):
    """Training runs with kernels chosen by this CPU: its results may not come back elsewhere."""


def pinned() -> bool:
    """Whether the pins apply (the default) or the user asked for native kernels."""
    return os.environ.get(SWITCH, "").strip().lower() != "native"


def pin() -> None:
    """Set PINS in this process's environment (unless ALGO_NUMERICS=native). Libraries already
    loaded keep their kernels: `state()` tells, and training warns."""
    if pinned():
        os.environ.update(PINS)


def state() -> dict[str, Any]:
    """What is in force now: torch's kernel level (if torch is loaded), OpenBLAS's core (numpy's
    and scipy's), MKL's reproducibility mode, and whether that is the pinned baseline."""
    from threadpoolctl import threadpool_info

    torch = sys.modules.get("torch")
    cores = sorted({i.get("architecture") or "?" for i in threadpool_info()
                    if i.get("internal_api") == "openblas"})
    now = {"torch": torch.backends.cpu.get_cpu_capability() if torch else None,
           "openblas": cores, "mkl_cbwr": os.environ.get("MKL_CBWR")}
    now["baseline"] = ((now["torch"] in (None, "DEFAULT"))
                       and all(c.lower() == PINS["OPENBLAS_CORETYPE"].lower() for c in cores)
                       and now["mkl_cbwr"] == PINS["MKL_CBWR"])
    return now


def check(what: str) -> dict[str, Any]:
    """`state()`, warning when `what` (a training) runs off the baseline: with ALGO_NUMERICS=native,
    or because numpy or torch were loaded before `algotrading` pinned them."""
    now = state()
    if not now["baseline"]:
        why = ("ALGO_NUMERICS=native" if not pinned() else
               "numpy/scipy or torch were loaded before algotrading; import algotrading first "
               "(or use the 'Python (algotrading)' kernel)")
        warnings.warn(f"{what}: kernels chosen by this CPU ({why}); results may differ on "
                      f"another machine: torch {now['torch']}, OpenBLAS {now['openblas']}",
                      NumericsWarning, stacklevel=2)
    return now


@contextmanager
def one_thread() -> Iterator[None]:
    """One thread for torch and for every BLAS/OpenMP pool in the block; restored after."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    with threadpool_limits(1):
        if torch:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(threads)


def weights_sha256(state_dict: Mapping[str, Any]) -> str:
    """sha256 over a torch state_dict's names, dtypes, shapes and bytes: equal iff the weights are
    bit for bit the same (the file torch.save writes also holds pickling details)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def install_kernel(user: bool = False) -> None:
    """The "Python (algotrading)" Jupyter kernel for this interpreter, carrying PINS (into the venv,
    or the user's Jupyter folder with `user`)."""
    from ipykernel.kernelspec import install

    env = dict(PINS) if pinned() else {}
    path = install(kernel_name="algotrading", display_name="Python (algotrading)", env=env,
                   user=user, prefix=None if user else sys.prefix)
    print(f"kernel 'algotrading' installed in {path}")


if __name__ == "__main__":  # python -m algotrading.numerics --install-kernel [--user]
    import argparse

    parser = argparse.ArgumentParser(prog="python -m algotrading.numerics",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--install-kernel", action="store_true", help="install the Jupyter kernel")
    parser.add_argument("--user", action="store_true", help="into the user's Jupyter folder")
    args = parser.parse_args()
    if args.install_kernel:
        install_kernel(args.user)
    else:
        print(state())
