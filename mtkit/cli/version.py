"""`mtkit --version`: mtkit's and torch's versions and what this torch can run on."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from mtkit.errors import plural


def version_text() -> str:
    """Three lines: mtkit and Python, torch, and the devices (CUDA, CPU capability)."""
    import torch

    try:
        mtkit_version = version("mtkit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        mtkit_version = "(not installed)"
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        gpus = plural(torch.cuda.device_count(), "GPU")
        cuda = f"CUDA {torch.version.cuda}: {gpus}, {', '.join(names)}"
    elif torch.version.cuda:
        cuda = f"CUDA {torch.version.cuda} build, but no GPU is available"
    else:
        cuda = "CUDA: not available (a CPU-only build of torch)"
    cpu = torch.backends.cpu.get_cpu_capability()
    return "\n".join(
        [
            f"mtkit {mtkit_version} (Python {platform.python_version()})",
            f"torch {torch.__version__}",
            f"{cuda}; CPU capability: {cpu}",
        ]
    )
