"""Numbers that do not depend on the CPU (algotrading.numerics), checked against emulated CPUs.

Each run trains in a fresh process: the forecaster, a short PPO and the GARCH fit. The emulations
cap every library below this machine's AVX-512 the way an older CPU would: torch's ATen kernels
(ATEN_CPU_CAPABILITY), oneDNN (ONEDNN_MAX_CPU_ISA), MKL (MKL_ENABLE_INSTRUCTIONS), OpenBLAS
(OPENBLAS_CORETYPE), numpy's own SIMD loops (NPY_DISABLE_CPU_FEATURES) and glibc's libm
(GLIBC_TUNABLES: no AVX2/FMA variants of exp, log, pow). What an emulation cannot show: a CPU
whose instructions compute differently (none should, IEEE 754 fixes the basic operations), other
operating systems' libm, or another architecture (aarch64 wheels are other builds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

pytestmark = pytest.mark.slow

SCRIPT = r"""
import algotrading  # first, as every entry point does: it pins the kernels
import json
from algotrading import numerics, scenarios, schema, sources
from algotrading.models import forecast
from algotrading.rl import train

prices = schema.to_prices(sources.read("sample").frame, "GSPC")
model, _ = forecast.train(prices, forecast.Config(epochs=12))
ppo = train.train(prices, "2006-12-31", seed=0, total_timesteps=1024, n_envs=2, n_steps=128)
garch = scenarios.fit(prices, "garch")
print(json.dumps({"forecast": model.meta["weights_sha256"], "ppo": ppo.config["weights_sha256"],
                  "garch": garch, "state": numerics.state()}))
"""

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
SSE42 = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
         "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OPENBLAS_CORETYPE": "Nehalem",
         "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
         "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX2,-FMA"}


def start(extra: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in (*AVX2, *SSE42, "ALGO_NUMERICS")}
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env={**env, **extra}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def test_training_gives_the_same_weights_and_fit_on_older_cpus():
    runs = {"this CPU": start({}), "AVX2 only": start(AVX2), "SSE4.2 only": start(SSE42)}
    done = {name: finish(proc) for name, proc in runs.items()}
    base, err = done["this CPU"]
    assert base["state"]["baseline"] and base["state"]["torch"] == "DEFAULT"
    assert "NumericsWarning" not in err
    for name, (other, _) in done.items():
        assert other["forecast"] == base["forecast"], name  # sha256 of the weights, bit for bit
        assert other["ppo"] == base["ppo"], name
        assert other["garch"] == base["garch"], name  # every fitted parameter, exactly


def test_native_kernels_differ_by_cpu_and_warn():
    """The emulation is not vacuous: with ALGO_NUMERICS=native the same caps change the weights
    (torch's AVX-512 kernels round otherwise than its baseline ones), and training says so."""
    native, err = finish(start({"ALGO_NUMERICS": "native"}))
    capped, _ = finish(start({"ALGO_NUMERICS": "native", **SSE42}))
    assert native["forecast"] != capped["forecast"]
    assert not native["state"]["baseline"] and "NumericsWarning" in err


def test_state_and_check_report_what_is_in_force(monkeypatch):
    from algotrading import numerics

    now = numerics.state()
    assert set(now) == {"torch", "openblas", "mkl_cbwr", "baseline"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if now["baseline"]:
            assert numerics.check("a test") == now  # pinned: silent
    monkeypatch.setenv("MKL_CBWR", "AUTO")  # as if the user overrode a pin after import
    with pytest.warns(numerics.NumericsWarning, match="a test: kernels chosen by this CPU"):
        assert not numerics.check("a test")["baseline"]


KERNEL = r"""
import hashlib, json
import numba, numpy as np
from algotrading import backtest, schema, sources
prices = schema.to_prices(sources.read("sample").frame, "GSPC")
table = backtest.sweep("sma", prices, {"fast_period": range(5, 30, 3),
                                       "slow_period": range(40, 200, 20)})
many = backtest.run_many("sma", {"A": prices, "B": prices.iloc[1000:]}, fast_period=10,
                         slow_period=30)
x = np.random.default_rng(0).normal(size=10_001)
loose = numba.njit(fastmath={"reassoc"})(lambda a: a.sum())
print(json.dumps({"sweep": hashlib.sha256(table.to_numpy(float).tobytes()).hexdigest(),
                  "many": hashlib.sha256(many.to_numpy(float).tobytes()).hexdigest(),
                  "reassoc": float(loose(x)).hex()}))
"""


def test_compiled_backtests_give_the_same_bits_on_a_baseline_cpu(tmp_path):
    """numba compiles the kernel for this CPU (AVX-512 here); NUMBA_CPU_NAME=generic compiles it
    for the x86-64 baseline (SSE2, two lanes). The sweep's and run_many's tables are the same
    bits on both: no fast-math anywhere, and the vectorised sums (kernel.lane_sum) add in one
    fixed order. Not vacuous: a sum compiled with fast-math reassociation differs between them."""
    def run(extra: dict[str, str]) -> dict:
        done = subprocess.run([sys.executable, "-c", KERNEL], env={**os.environ, **extra},
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    host = run({})
    generic = run({"NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path)})
    assert generic["sweep"] == host["sweep"] and generic["many"] == host["many"]
    assert generic["reassoc"] != host["reassoc"]
