"""The BLAS configuration of CI's second pass over the numerically sensitive tests (``pytest -m numeric``).

A test comparing floats computed two ways holds on one machine only if its tolerance is too tight:
other CPUs and thread counts take other BLAS/LAPACK kernels and reduction orders (issue 21). The second
pass reruns those tests on this machine configured to compute differently from its default:

- one thread everywhere: ``OMP_NUM_THREADS`` (torch's intra-op pool and MKL read it), ``MKL_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS``;
- another OpenBLAS kernel for numpy and scipy (``OPENBLAS_CORETYPE``): Haswell (AVX2, FMA) where the
  default is an AVX-512 kernel, Sandybridge (AVX, no FMA) where it is Haswell or Zen, else Nehalem; kept
  only where OpenBLAS takes it (checked in a subprocess), and never set where the environment already
  sets it (some machines need it because older OpenBLAS builds crash on them);
- a lower instruction set for torch's MKL (``MKL_ENABLE_INSTRUCTIONS`` and ``MKL_CBWR``, which also picks
  other LAPACK code paths) and for torch's own vectorized kernels (``ATEN_CPU_CAPABILITY``): AVX2 where
  the CPU has AVX-512, SSE4.2 / the scalar-generic kernels where it has AVX2.

Run in the default environment, it prints the variables as ``NAME=value`` lines on stdout (for ``env``)
and on stderr the one line naming the configuration and the kernels in effect under it. It exits 1 if
under those variables torch does not run on one thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

#: OpenBLAS's default kernel -> the kernel the second pass asks for (``OPENBLAS_CORETYPE``).
OTHER_OPENBLAS_KERNEL = {
    "skylakex": "Haswell", "cooperlake": "Haswell", "sapphirerapids": "Haswell",
    "haswell": "Sandybridge", "zen": "Sandybridge",
}
#: torch's CPU capability -> (MKL instruction set, ATen capability) one level below it.
LOWER_TORCH_ISA = {"AVX512": ("AVX2", "avx2"), "AVX2": ("SSE4_2", "default")}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def probe() -> dict[str, object]:
    """The kernels and thread counts in effect in this process."""
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401  (scipy's own OpenBLAS, if it has one, loads here)
    import torch
    from threadpoolctl import threadpool_info

    openblas = sorted({f"{info.get('architecture')}" for info in threadpool_info() if info["internal_api"] == "openblas"})
    version = sorted({str(info.get("version")) for info in threadpool_info() if info["internal_api"] == "openblas"})
    return {"openblas": openblas, "openblas_version": version, "torch_threads": torch.get_num_threads(),
            "aten": torch.backends.cpu.get_cpu_capability()}


def probe_under(variables: dict[str, str]) -> dict[str, object]:
    """:func:`probe` in a fresh interpreter whose environment adds ``variables``."""
    done = subprocess.run([sys.executable, __file__, "--probe"], env={**os.environ, **variables},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def choose(native: dict[str, object]) -> tuple[dict[str, str], list[str]]:
    """The second pass's variables for a machine whose defaults are ``native``, and notes on what stays."""
    variables, notes = dict(ONE_THREAD), []
    if "OPENBLAS_CORETYPE" in os.environ:
        notes.append(f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} kept from the environment")
    elif native["openblas"]:
        kernel = native["openblas"][0]
        other = OTHER_OPENBLAS_KERNEL.get(kernel.lower(), "Nehalem")
        if [other] == probe_under({**variables, "OPENBLAS_CORETYPE": other})["openblas"]:
            variables["OPENBLAS_CORETYPE"] = other
        else:
            notes.append(f"OpenBLAS kernel {kernel} kept: OPENBLAS_CORETYPE={other} does not take here")
    lower = LOWER_TORCH_ISA.get(str(native["aten"]))
    if lower is not None:
        variables.update(MKL_ENABLE_INSTRUCTIONS=lower[0], MKL_CBWR=lower[0], ATEN_CPU_CAPABILITY=lower[1])
    else:
        notes.append(f"torch's kernels kept: no instruction set below {native['aten']} to ask for")
    return variables, notes


def main() -> int:
    if sys.argv[1:] == ["--probe"]:
        print(json.dumps(probe()))
        return 0
    native = probe()
    variables, notes = choose(native)
    ran = probe_under(variables)
    settings = " ".join(f"{name}={value}" for name, value in variables.items())
    line = (f"numeric pass under {settings}: numpy/scipy OpenBLAS {'/'.join(ran['openblas_version'])} kernel "
            f"{'/'.join(ran['openblas']) or 'none'} (default {'/'.join(native['openblas']) or 'none'}), torch "
            f"{ran['torch_threads']} thread(s), ATen {ran['aten']} (default {native['aten']})")
    print("; ".join([line, *notes]), file=sys.stderr)
    if ran["torch_threads"] != 1:
        print(f"torch runs {ran['torch_threads']} threads under OMP_NUM_THREADS=1", file=sys.stderr)
        return 1
    print("\n".join(f"{name}={value}" for name, value in variables.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
