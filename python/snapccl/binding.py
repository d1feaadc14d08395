"""ctypes binding of libsnapccl: a communicator made from a torch.distributed process
group, the collectives and the fused all-reduce + residual add + RMSNorm on torch tensors.

No build step: the library is loaded with ctypes (the convention of vLLM's pynccl).
Which file: $SNAPCCL_LIBRARY, else (a package that meson installed) the library meson
installed with it, else libsnapccl.so* next to this package, else the build tree's
build/src/libsnapccl.so (this package lives in <repo>/python/snapccl), else the loader's
search path. Loaded RTLD_LOCAL, so its nccl* symbols never shadow the libnccl
PyTorch uses. Inside a PyTorch process that loaded NVIDIA's libnccl, snapccl runs in
interposed mode: communicators of ranks with a GPU each are NVIDIA's with snapccl's
kernels attached; ranks sharing a GPU (SNAPCCL_SHARED_GPU=1) get snapccl's own.

Every call runs on the current CUDA stream (torch.cuda.current_stream()), so it can be
captured in torch.cuda.graph; nothing synchronises the host. Make one eager call of each
kind before capturing (the constructor already makes a tiny fused one): the first call
of a process loads kernels and, in interposed mode, attaches to NVIDIA's communicator.
"""

import ctypes
import glob
import os
from typing import Optional, Tuple

import torch
import torch.distributed as dist

# ncclResult_t, ncclDataType_t, ncclRedOp_t as in include/nccl.h.
_SUCCESS = 0
NCCL_DTYPES = {
    torch.int8: 0,
    torch.uint8: 1,
    torch.int32: 2,
    torch.int64: 4,
    torch.float16: 6,
    torch.float32: 7,
    torch.float64: 8,
    torch.bfloat16: 9,
}
for _name, _code in (("float8_e4m3fn", 10), ("float8_e5m2", 11)):
    if hasattr(torch, _name):
        NCCL_DTYPES[getattr(torch, _name)] = _code
NCCL_OPS = {"sum": 0, "prod": 1, "max": 2, "min": 3, "avg": 4}
FUSED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# snapcclNormOut_t
NORM_OUT_DEFAULT, NORM_OUT_FP8_STATIC, NORM_OUT_FP8_DYNAMIC = 0, 1, 2
FUSED_OPTIONS_MAGIC = 0x73667573
FUSED_OPTIONS_VERSION = 1


class NcclUniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_byte * 128)]


class FusedOptions(ctypes.Structure):
    """snapcclFusedOptions (include/snapccl.h), version 1."""

    _fields_ = [
        ("size", ctypes.c_size_t),
        ("magic", ctypes.c_uint),
        ("version", ctypes.c_uint),
        ("normOut", ctypes.c_int),
        ("skipResidualOut", ctypes.c_int),
        ("scale", ctypes.c_void_p),
        ("scaleOut", ctypes.c_void_p),
        ("sumOut", ctypes.c_void_p),
    ]

    def __init__(self, **kw):
        super().__init__(ctypes.sizeof(FusedOptions), FUSED_OPTIONS_MAGIC, FUSED_OPTIONS_VERSION,
                         NORM_OUT_DEFAULT, 0, None, None, None)
        for k, v in kw.items():
            setattr(self, k, v)


class SnapcclError(RuntimeError):
    def __init__(self, func: str, code: int, text: str):
        super().__init__(f"{func} failed: code {code}: {text}")
        self.code = code


try:  # written by meson install (python/meson.build); absent in the source tree
    from ._installed import LIBDIR as _INSTALLED_LIBDIR
except ImportError:
    _INSTALLED_LIBDIR = None


def _candidates():
    env = os.environ.get("SNAPCCL_LIBRARY")
    if env:
        yield env
        return
    if _INSTALLED_LIBDIR:
        yield os.path.join(_INSTALLED_LIBDIR, "libsnapccl.so.0")
    here = os.path.dirname(os.path.abspath(__file__))
    yield from sorted(glob.glob(os.path.join(here, "libsnapccl.so*")))
    yield os.path.join(here, "..", "..", "build", "src", "libsnapccl.so")
    yield "libsnapccl.so.0"
    yield "libsnapccl.so"


_lib = None


def library() -> ctypes.CDLL:
    """The loaded libsnapccl, with argument and result types declared."""
    global _lib
    if _lib is not None:
        return _lib
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
            break
        except OSError as e:
            errors.append(f"{path}: {e}")
    else:
        raise OSError("libsnapccl not found (set SNAPCCL_LIBRARY): " + "; ".join(errors))
    R, P, S, I, F = ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_float
    sigs = {
        "snapcclGetVersion": [ctypes.POINTER(ctypes.c_int)],
        "ncclGetErrorString": [R],
        "ncclGetLastError": [P],
        "ncclGetUniqueId": [ctypes.POINTER(NcclUniqueId)],
        "ncclCommInitRank": [ctypes.POINTER(P), I, NcclUniqueId, I],
        "ncclCommDestroy": [P],
        "ncclCommGetAsyncError": [P, ctypes.POINTER(R)],
        "ncclAllReduce": [P, P, S, I, I, P, P],
        "ncclAllGather": [P, P, S, I, P, P],
        "ncclReduceScatter": [P, P, S, I, I, P, P],
        "snapcclAllReduceResidualRMSNormEx": [P, P, P, P, P, S, S, F, I, P, P,
                                              ctypes.POINTER(FusedOptions)],
        "snapcclResidualRMSNorm": [P, P, P, P, P, S, S, F, I, P, ctypes.POINTER(FusedOptions)],
        "snapcclQueryFusedAlgorithm": [P, S, S, I, ctypes.POINTER(FusedOptions),
                                       ctypes.POINTER(ctypes.c_char_p)],
    }
    for name, args in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = ctypes.c_char_p if name in ("ncclGetErrorString", "ncclGetLastError") else R
    _lib = lib
    return lib


def _check(func: str, code: int):
    if code != _SUCCESS:
        lib = library()
        last = lib.ncclGetLastError(None)
        text = (last or lib.ncclGetErrorString(code) or b"").decode(errors="replace")
        raise SnapcclError(func, code, text)


def version() -> str:
    v = ctypes.c_int()
    _check("snapcclGetVersion", library().snapcclGetVersion(ctypes.byref(v)))
    return f"{v.value // 10000}.{v.value // 100 % 100}.{v.value % 100}"


def _ptr(t: Optional[torch.Tensor]):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _stream():
    return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


def _dtype(t: torch.Tensor) -> int:
    try:
        return NCCL_DTYPES[t.dtype]
    except KeyError:
        raise TypeError(f"snapccl has no datatype for {t.dtype}") from None


class Communicator:
    """A snapccl communicator over the ranks of a torch.distributed process group.

    Collective: every rank of `group` constructs it at the same point. The unique id is
    made on the group's rank 0 and broadcast through the group (any backend: gloo, nccl);
    each rank then calls ncclCommInitRank on `device` (default: the current CUDA device).
    """

    def __init__(self, group: Optional[dist.ProcessGroup] = None,
                 device: Optional[torch.device] = None):
        self.lib = library()
        self.group = group if group is not None else dist.group.WORLD
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif isinstance(device, int):
            device = torch.device("cuda", device)
        self.device = device
        uid = NcclUniqueId()
        if self.rank == 0:
            _check("ncclGetUniqueId", self.lib.ncclGetUniqueId(ctypes.byref(uid)))
        box = [bytes(uid.internal) if self.rank == 0 else None]
        src = dist.get_global_rank(self.group, 0) if self.group is not dist.group.WORLD else 0
        dist.broadcast_object_list(box, src=src, group=self.group)
        ctypes.memmove(uid.internal, box[0], 128)
        self.comm = ctypes.c_void_p()
        with torch.cuda.device(self.device):
            _check("ncclCommInitRank", self.lib.ncclCommInitRank(
                ctypes.byref(self.comm), self.world_size, uid, self.rank))
            # One tiny fused call, eagerly and on every rank together: loads the fused
            # kernels now rather than at a first call that might be inside a capture.
            x = torch.zeros(1, 8, dtype=torch.bfloat16, device=self.device)
            self.fused_add_rms_norm(x, x.clone(), None, 1e-6)
            torch.cuda.current_stream().synchronize()

    # ---- collectives (all on torch.cuda.current_stream()) ----

    def _check_tensor(self, t: torch.Tensor, name: str):
        if not t.is_cuda or t.device != self.device:
            raise ValueError(f"{name} is on {t.device}, the communicator on {self.device}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")

    def all_reduce(self, tensor: torch.Tensor, out: Optional[torch.Tensor] = None,
                   op: str = "sum") -> torch.Tensor:
        """out = sum (or op) over ranks of tensor; in place when out is None."""
        out = tensor if out is None else out
        self._check_tensor(tensor, "tensor")
        self._check_tensor(out, "out")
        if out.numel() != tensor.numel() or out.dtype != tensor.dtype:
            raise ValueError("out must match tensor in size and dtype")
        _check("ncclAllReduce", self.lib.ncclAllReduce(
            _ptr(tensor), _ptr(out), tensor.numel(), _dtype(tensor), NCCL_OPS[op], self.comm,
            _stream()))
        return out

    def all_gather(self, output: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """output (world_size x input.numel()) = every rank's input, in rank order."""
        self._check_tensor(input, "input")
        self._check_tensor(output, "output")
        if output.numel() != input.numel() * self.world_size or output.dtype != input.dtype:
            raise ValueError("output must hold world_size x input.numel() elements of input.dtype")
        _check("ncclAllGather", self.lib.ncclAllGather(
            _ptr(input), _ptr(output), input.numel(), _dtype(input), self.comm, _stream()))
        return output

    def reduce_scatter(self, output: torch.Tensor, input: torch.Tensor,
                       op: str = "sum") -> torch.Tensor:
        """output = this rank's slice of the reduction of input (world_size x output.numel())."""
        self._check_tensor(input, "input")
        self._check_tensor(output, "output")
        if input.numel() != output.numel() * self.world_size or output.dtype != input.dtype:
            raise ValueError("input must hold world_size x output.numel() elements of output.dtype")
        _check("ncclReduceScatter", self.lib.ncclReduceScatter(
            _ptr(input), _ptr(output), output.numel(), _dtype(input), NCCL_OPS[op], self.comm,
            _stream()))
        return output

    # ---- the fused op ----

    def fused_add_rms_norm(
        self,
        input: torch.Tensor,
        residual: Optional[torch.Tensor],
        weight: Optional[torch.Tensor],
        eps: float = 1e-6,
        *,
        norm_out: Optional[torch.Tensor] = None,
        residual_out: Optional[torch.Tensor] = None,
        in_place: bool = False,
        write_residual: bool = True,
        quant: Optional[str] = None,
        scale: Optional[torch.Tensor] = None,
        sum_out: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """residual_out = all_reduce(input) + residual; norm_out = RMSNorm(residual_out) * weight.

        input, residual: [..., hidden] of bf16/fp16/fp32 (residual None: zeros); weight:
        [hidden] (None: ones). in_place: norm_out is input and residual_out is residual
        (vLLM's convention), unless given. quant: None, "fp8_static" (scale: a 1-element
        fp32 tensor, q = x / scale) or "fp8_dynamic" (per-token fp32 scales returned).
        sum_out: also receive the plain all-reduced sum. Returns (norm_out, residual_out
        or None, dynamic scales or None)."""
        if input.dtype not in FUSED_DTYPES:
            raise TypeError(f"the fused op takes bfloat16, float16 or float32, not {input.dtype}")
        self._check_tensor(input, "input")
        hidden = input.shape[-1]
        tokens = input.numel() // hidden if hidden else 0
        fp8 = quant is not None
        if quant not in (None, "fp8_static", "fp8_dynamic"):
            raise ValueError(f"quant must be None, 'fp8_static' or 'fp8_dynamic', not {quant!r}")
        if norm_out is None:
            if in_place and not fp8:
                norm_out = input
            else:
                ndt = torch.float8_e4m3fn if fp8 else input.dtype
                norm_out = torch.empty(input.shape, dtype=ndt, device=input.device)
        if write_residual and residual_out is None:
            if in_place and residual is not None:
                residual_out = residual
            else:
                residual_out = torch.empty_like(input)
        if not write_residual:
            residual_out = None
        for t, n in ((residual, "residual"), (weight, "weight"), (norm_out, "norm_out"),
                     (residual_out, "residual_out"), (sum_out, "sum_out"), (scale, "scale")):
            if t is not None:
                self._check_tensor(t, n)
        opt = FusedOptions(skipResidualOut=0 if write_residual else 1)
        scales = None
        if quant == "fp8_static":
            if scale is None or scale.dtype != torch.float32 or scale.numel() != 1:
                raise ValueError("fp8_static needs scale: a 1-element float32 CUDA tensor")
            opt.normOut, opt.scale = NORM_OUT_FP8_STATIC, scale.data_ptr()
        elif quant == "fp8_dynamic":
            scales = torch.empty(tokens, dtype=torch.float32, device=input.device)
            opt.normOut, opt.scaleOut = NORM_OUT_FP8_DYNAMIC, scales.data_ptr()
        if sum_out is not None:
            opt.sumOut = sum_out.data_ptr()
        _check("snapcclAllReduceResidualRMSNormEx", self.lib.snapcclAllReduceResidualRMSNormEx(
            _ptr(input), _ptr(residual), _ptr(weight), _ptr(norm_out), _ptr(residual_out), tokens,
            hidden, ctypes.c_float(eps), NCCL_DTYPES[input.dtype], self.comm, _stream(),
            ctypes.byref(opt)))
        return norm_out, residual_out, scales

    def fused_algorithm(self, tokens: int, hidden: int, dtype: torch.dtype = torch.bfloat16) -> str:
        """The algorithm snapccl would run the fused op with ("oneshot", "twoshot", ...)."""
        name = ctypes.c_char_p()
        _check("snapcclQueryFusedAlgorithm", self.lib.snapcclQueryFusedAlgorithm(
            self.comm, tokens, hidden, NCCL_DTYPES[dtype], None, ctypes.byref(name)))
        return name.value.decode()

    def async_error(self) -> int:
        st = ctypes.c_int()
        _check("ncclCommGetAsyncError", self.lib.ncclCommGetAsyncError(self.comm, ctypes.byref(st)))
        return st.value

    def destroy(self):
        if self.comm:
            with torch.cuda.device(self.device):
                torch.cuda.current_stream().synchronize()
                _check("ncclCommDestroy", self.lib.ncclCommDestroy(self.comm))
            self.comm = ctypes.c_void_p()


def residual_rms_norm(sum_: torch.Tensor, residual: Optional[torch.Tensor],
                      weight: Optional[torch.Tensor], eps: float = 1e-6, *,
                      norm_out: Optional[torch.Tensor] = None,
                      residual_out: Optional[torch.Tensor] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The separate kernel alone (no communication): residual_out = sum_ + residual,
    norm_out = RMSNorm(residual_out) * weight, on the current device and stream."""
    lib = library()
    if sum_.dtype not in FUSED_DTYPES:
        raise TypeError(f"bfloat16, float16 or float32, not {sum_.dtype}")
    hidden = sum_.shape[-1]
    tokens = sum_.numel() // hidden if hidden else 0
    norm_out = torch.empty_like(sum_) if norm_out is None else norm_out
    residual_out = torch.empty_like(sum_) if residual_out is None else residual_out
    _check("snapcclResidualRMSNorm", lib.snapcclResidualRMSNorm(
        _ptr(sum_), _ptr(residual), _ptr(weight), _ptr(norm_out), _ptr(residual_out), tokens,
        hidden, ctypes.c_float(eps), NCCL_DTYPES[sum_.dtype], _stream(), None))
    return norm_out, residual_out
