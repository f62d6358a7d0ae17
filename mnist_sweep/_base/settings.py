"""Process-wide settings, owned here and nowhere else: the Keras backend, JAX's compilation
cache, thread pools and XLA flags, CPU pinning, library log levels and ``gc.freeze``.

Most of them only take effect before Keras (and with it JAX or TensorFlow) is imported, so
:func:`mnist_sweep.run` and the CLI call :func:`prepare_process` first, and ``import
mnist_sweep`` imports no Keras at all (its API is loaded lazily).

Example:
    >>> backend = prepare_process("auto")      # before anything imports keras
    >>> backend
    'jax'
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence

from mnist_sweep.errors import InputError

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def resolve_backend(name: str = "auto") -> str:
    """The Keras backend that ``name`` means: 'auto' is $KERAS_BACKEND, else jax if installed, else tensorflow."""
    if name != "auto":
        return name
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    return "jax" if importlib.util.find_spec("jax") is not None else "tensorflow"


def compilation_cache_dir() -> str:
    """Where the JAX backend keeps compiled XLA executables between processes:
    ``$JAX_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/mnist_sweep/xla`` (``~/.cache/...``)."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mnist_sweep", "xla")


def use_backend(name: str = "auto") -> str:
    """Select the Keras 3 backend before Keras is imported; returns the backend in use.

    On JAX it also turns on JAX's persistent compilation cache (:func:`compilation_cache_dir`),
    for every executable however small: trials of the same structure compile the same program,
    in this run, a resumed one or another worker on this machine.

    If Keras was already imported (a notebook that ran ``import keras`` first), 'auto' keeps the
    backend Keras runs on, with a warning when it is not the fast one; a named backend that
    differs is an error.

    Raises:
        InputError: Keras already runs on another backend than the one named, or jax is missing.
    """
    wanted = resolve_backend(name)
    if "keras" in sys.modules:
        import keras

        running = keras.backend.backend()
        if running == wanted:
            return running
        if name == "auto":
            warnings.warn(f"Keras was imported before mnist_sweep chose its backend: training runs on {running}, "
                          f"not {wanted} (about 2x slower per epoch on CPU); import mnist_sweep before keras, "
                          "or set KERAS_BACKEND=jax", stacklevel=2)
            return running
        raise InputError(f"training.backend: Keras already runs on {running} in this process, "
                         f"cannot switch to {wanted}")
    if wanted == "jax" and importlib.util.find_spec("jax") is None:
        raise InputError("training.backend: 'jax' is not installed (pip install jax; on a GPU: "
                         "pip install 'jax[cuda12]')")
    os.environ["KERAS_BACKEND"] = wanted
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if wanted == "jax":
        os.environ["JAX_COMPILATION_CACHE_DIR"] = compilation_cache_dir()
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    return wanted


def quiet_libraries() -> None:
    """Optuna logs only errors (each trial's outcome is on our progress line); TensorFlow's C++
    start-up chatter and Optuna's experimental-feature warnings are silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def prepare_process(backend: str = "auto", threads: int | None = None) -> str:
    """Everything a process does once before its first trial: backend, thread pools, log levels.

    Returns the Keras backend in use.
    """
    name = use_backend(backend)
    if threads:
        apply_backend_threads(threads, name)
    quiet_libraries()
    return name


def freeze_long_lived_objects() -> None:
    """Move what lives for the whole run (modules, the dataset) out of the garbage collector's
    sight: each trial's ``gc.collect`` (Keras's ``clear_session``) then scans only the last
    model's objects (faster trials: see docs/performance.md)."""
    import keras  # noqa: F401 - it imports its backend (JAX or TensorFlow): long-lived too

    gc.collect()
    gc.freeze()


def keras_without_tensorflow() -> None:
    """On JAX, Keras's lazy ``tensorflow`` handle answers "not available" while TensorFlow is not
    imported, as if it were not installed.

    Keras asks ``tf.available`` (which imports TensorFlow when installed) in every
    ``serialize_keras_object``, so ``get_config`` and ``save`` imported all of TensorFlow into a JAX
    run: seconds of start-up, C++ log lines, a second framework that may claim GPU memory. Those
    probes only ask whether an object is a TensorFlow type, which none can be while TensorFlow is
    not imported. Once TensorFlow is imported (a notebook that imports it), Keras asks again. Keras
    code that uses TensorFlow outright (``tf.data`` input, export) still imports it; the layers that
    first ask (text lookup, hashing: none in these models) see it missing. Call it after the backend
    is chosen, where a model is built or loaded. See docs/decisions.md (2026-12-04).
    """
    import keras
    from keras.src.utils import module_utils

    if keras.backend.backend() == "tensorflow":
        return

    lazy = module_utils.tensorflow
    if "tensorflow" not in sys.modules:
        lazy._available = False
    elif lazy._available is False:
        lazy._available = None  # imported since: Keras checks again on its next probe


def allowed_cpus() -> list[int] | None:
    """The cores this process may run on, or None where the OS has no affinity API (not Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    allowed = allowed_cpus()
    return len(allowed) if allowed else os.cpu_count() or 1


def format_cpu_list(cpus: Sequence[int]) -> str:
    """Cores as Linux writes them: ``[0, 1, 2, 5]`` -> ``'0-2,5'``."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def parse_cpu_list(text: str) -> list[int]:
    """Cores written as Linux writes them (``taskset -c``, ``/sys/.../cpus_allowed_list``): ``0-3,6``.

    >>> parse_cpu_list("0-2,5")
    [0, 1, 2, 5]
    """
    cpus: set[int] = set()
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"not a core list like 0-3,6: {text!r}")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise ValueError(f"range {part.strip()!r} runs backwards")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def pin_to_cpus(cpus: Sequence[int]) -> None:
    """Run this process (and the threads it starts later) on ``cpus`` only; call before Keras is
    imported, so the runtimes size their thread pools to them.

    Raises:
        InputError: a core is not one this process may use, or the OS cannot pin (not Linux).
    """
    allowed = allowed_cpus()
    if allowed is None:
        raise InputError("--cpus: pinning to cores needs Linux (sched_setaffinity)")
    missing = sorted(set(cpus) - set(allowed))
    if missing:
        raise InputError(f"--cpus: core {format_cpu_list(missing)} is not available to this process "
                         f"(available: {format_cpu_list(allowed)})")
    os.sched_setaffinity(0, cpus)


def limit_threads(threads: int) -> None:
    """Limit this process's compute thread pools to ``threads``; call before Keras is imported.

    Sets OpenMP/BLAS/TensorFlow thread variables and, for one thread, XLA's single-threaded CPU
    mode (the JAX backend; XLA has no flag for a pool of K > 1 threads). XLA's flag covers its
    Eigen pool only: its dot library (XNNPACK) and compiler (LLVM) still start a thread per core,
    which is why ``run --jobs`` also pins each worker (:func:`pin_to_cpus`).
    """
    for name in _THREAD_ENV:
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(max(1, min(2, threads)))
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            single = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            os.environ["XLA_FLAGS"] = f"{flags} {single}".strip()


def apply_backend_threads(threads: int, backend: str) -> None:
    """On the TensorFlow backend, set its intra/inter-op pools before its runtime starts."""
    if backend != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:  # the runtime already started (e.g. in-process tests): the env vars still apply
        pass
