"""snapccl from Python: a thin ctypes binding (no build step), see binding.py and
docs/FUSED.md.

    import torch.distributed as dist, snapccl
    dist.init_process_group("gloo")          # or "nccl"; only used to share the unique id
    comm = snapccl.Communicator()            # on torch.cuda.current_device()
    comm.all_reduce(x)
    norm, residual, _ = comm.fused_add_rms_norm(x, residual, weight, 1e-6, in_place=True)
"""
from .binding import (
    FUSED_DTYPES,
    NCCL_DTYPES,
    NCCL_OPS,
    Communicator,
    FusedOptions,
    SnapcclError,
    library,
    residual_rms_norm,
    version,
)

__all__ = [
    "Communicator",
    "FusedOptions",
    "SnapcclError",
    "FUSED_DTYPES",
    "NCCL_DTYPES",
    "NCCL_OPS",
    "library",
    "residual_rms_norm",
    "version",
]
