"""A stand-in for PyTorch, for testing python/snapccl where torch cannot be installed
(CI: Debian's python3, no PyPI). It has only what the binding touches: dtypes, devices,
a tensor type, torch.cuda's stream and device context, and torch.distributed's names.
Tests build FakeTensor objects; nothing here computes."""
class dtype:
    def __init__(self, name, is_floating_point):
        self.name, self.is_floating_point = name, is_floating_point

    def __repr__(self):
        return "torch." + self.name


int8, uint8, int16, int32, int64 = (dtype(n, False) for n in ("int8", "uint8", "int16", "int32", "int64"))
float16, float32, float64, bfloat16 = (dtype(n, True) for n in ("float16", "float32", "float64", "bfloat16"))
float8_e4m3fn, float8_e5m2 = dtype("float8_e4m3fn", True), dtype("float8_e5m2", True)
complex64 = dtype("complex64", False)


class device:
    def __init__(self, type, index=None):
        if isinstance(type, str) and ":" in type:
            type, index = type.split(":")
        self.type, self.index = type, None if index is None else int(index)

    def __eq__(self, other):
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __repr__(self):
        return f"device('{self.type}:{self.index}')" if self.index is not None else f"device('{self.type}')"


class Tensor:
    """A tensor as far as the binding looks: shape, dtype, device, an address."""

    def __init__(self, shape, dtype, device_, address=0x1000, contiguous=True):
        self.shape, self.dtype, self.device = tuple(shape), dtype, device_
        self._address, self._contiguous = address, contiguous

    @property
    def is_cuda(self):
        return self.device.type == "cuda"

    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    def is_contiguous(self):
        return self._contiguous

    def data_ptr(self):
        return self._address


def empty(shape, dtype, device):
    return Tensor(shape, dtype, device)


def empty_like(t):
    return Tensor(t.shape, t.dtype, t.device)


from . import cuda, distributed  # noqa: E402,F401
