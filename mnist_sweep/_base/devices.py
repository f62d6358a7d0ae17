"""The devices a run trains on: what the chosen backend sees (``jax.devices()``), a line that names
them, and whether this machine has a GPU at all, asked without starting any framework.

:func:`accelerators` imports the backend (JAX or TensorFlow, never Keras), so it is called after
:func:`mnist_sweep._base.settings.use_backend`. A parent that trains nothing itself (``run --jobs N``)
asks :func:`accelerators_in_child` instead: a framework started in the parent would hold GPU memory
(JAX preallocates 75% of the card) for the whole run, under its workers.

Example:
    >>> backend = use_backend("auto")
    >>> describe_devices(accelerators(backend))       # on a GPU: 'gpu: NVIDIA H200'
    'cpu (2 cores)'
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from mnist_sweep._base.settings import cpu_count

#: Device nodes of a GPU driver (NVIDIA, NVIDIA under WSL2, AMD ROCm): a machine without any has no GPU.
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")


class Device(NamedTuple):
    """One accelerator: its platform as the backend names it (``gpu``, ``tpu``) and its model."""

    platform: str
    name: str


def machine_has_gpu() -> bool:
    """Whether a GPU driver's device node exists (cheap: starts no framework, loads no CUDA)."""
    return any(os.path.exists(node) for node in _GPU_NODES) or bool(glob.glob("/proc/driver/nvidia/gpus/*"))


def accelerators(backend: str) -> list[Device]:
    """The non-CPU devices ``backend`` trains on in this process, in its order ([] on a CPU).

    It starts the backend's runtime: on JAX with a GPU that preallocates GPU memory (unless
    ``XLA_PYTHON_CLIENT_PREALLOCATE=false``), so call it only in a process that trains.
    """
    if backend == "jax":
        import jax

        return [Device("gpu" if d.platform in ("cuda", "rocm") else d.platform, d.device_kind)
                for d in jax.devices() if d.platform != "cpu"]
    if backend == "tensorflow":
        import tensorflow as tf

        return [Device("gpu", tf.config.experimental.get_device_details(d).get("device_name", "GPU"))
                for d in tf.config.list_physical_devices("GPU")]
    return []


_PROBE = ("import json, sys\n"
          "from mnist_sweep._base.settings import use_backend\n"
          "from mnist_sweep._base.devices import accelerators\n"
          "print(json.dumps(accelerators(use_backend(sys.argv[1]))))\n")


def accelerators_in_child(backend: str, timeout: float = 120.0) -> list[Device]:
    """:func:`accelerators` asked in a short child process (it holds no GPU memory afterwards);
    [] without asking on a machine with no GPU driver (:func:`machine_has_gpu`), and [] when the
    child fails (the run then goes on as on a CPU)."""
    if not machine_has_gpu():
        return []
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, backend], env=env, capture_output=True, text=True,
                              timeout=timeout, check=True)
        return [Device(*device) for device in json.loads(proc.stdout.strip().splitlines()[-1])]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, TypeError):
        return []


def describe_devices(devices: Sequence[Device], cores: int | None = None) -> str:
    """What a run trains on, for its first line.

    >>> describe_devices([]), describe_devices([Device("gpu", "NVIDIA H200")], cores=2)
    ('cpu (2 cores)', 'gpu: NVIDIA H200')
    >>> describe_devices([Device("gpu", "NVIDIA H200")] * 2)
    '2 gpus: 2 x NVIDIA H200'
    """
    if not devices:
        n = cores or cpu_count()
        return f"cpu ({n} core{'s' if n != 1 else ''})"
    platforms = Counter(d.platform for d in devices)
    platform = " + ".join(platforms) if len(platforms) > 1 else devices[0].platform
    models = ", ".join(f"{count} x {name}" if count > 1 else name
                       for name, count in Counter(d.name for d in devices).items())
    return f"{platform}: {models}" if len(devices) == 1 else f"{len(devices)} {platform}s: {models}"


def visible_gpu_ids(count: int) -> list[str]:
    """The names of the ``count`` GPUs this process sees, as ``CUDA_VISIBLE_DEVICES`` names them:
    its own entries where it is set (a worker given ``2,3`` sees them as 0 and 1), else ``0..count-1``."""
    own = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    return own[:count] if len(own) >= count else [str(i) for i in range(count)]
