"""The Python binding (python/snapccl) without a GPU: import, library discovery, the dtype
and op tables against include/nccl.h, argument errors, and the error text of real
failing calls into the built library (standalone: no GPU and no real NCCL involved).

    SNAPCCL_LIBRARY=build/src/libsnapccl.so python3 tests/python/test_binding.py

Uses PyTorch when it can be imported, else the stand-in in tests/python/stub_torch (CI
has Debian's python3 and no PyPI). meson test runs it (suite unit) with the built
library. SNAPCCL_BINDING_PATH (optional) is where `import snapccl` is looked for first,
e.g. an installed copy; by default the repository's python/."""
import ctypes
import os
import re
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
try:
    import torch  # noqa: F401
    STUB = False
except ImportError:
    sys.path.insert(0, os.path.join(HERE, "stub_torch"))
    import torch  # noqa: F401
    STUB = True
sys.path.insert(0, os.environ.get("SNAPCCL_BINDING_PATH") or os.path.join(REPO, "python"))
import snapccl  # noqa: E402
from snapccl import binding  # noqa: E402

NCCL_H = os.path.join(REPO, "include", "nccl.h")


def nccl_h_enum(typedef):
    """name -> value of the enumerators of include/nccl.h's `typedef enum {...} typedef;`."""
    with open(NCCL_H) as f:
        text = f.read()
    body = re.search(r"typedef enum\s*\{([^}]*)\}\s*" + typedef + r"\s*;", text).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return {m.group(1): int(m.group(2), 0) for m in re.finditer(r"(nccl\w+)\s*=\s*(\w+)", body)}


def fresh_library(path):
    """library() as a first call with SNAPCCL_LIBRARY=path (None: unset) would load it."""
    saved = os.environ.get("SNAPCCL_LIBRARY")
    try:
        if path is None:
            os.environ.pop("SNAPCCL_LIBRARY", None)
        else:
            os.environ["SNAPCCL_LIBRARY"] = path
        binding._lib = None
        return binding.library()
    finally:
        if saved is None:
            os.environ.pop("SNAPCCL_LIBRARY", None)
        else:
            os.environ["SNAPCCL_LIBRARY"] = saved
        binding._lib = None


def tensor(shape, dtype, dev="cuda:0", **kw):
    if STUB:
        return torch.Tensor(shape, dtype, torch.device(dev), **kw)
    return torch.empty(shape, dtype=dtype, device=dev)


def unready_communicator(device="cuda:0"):
    """A Communicator whose init never ran: the handle is NULL, as before ncclCommInitRank."""
    c = object.__new__(snapccl.Communicator)
    c.lib, c.device, c.world_size, c.rank = binding.library(), torch.device(device), 2, 0
    c.comm = ctypes.c_void_p()
    return c


class Import(unittest.TestCase):
    def test_public_names(self):
        for name in snapccl.__all__:
            self.assertTrue(hasattr(snapccl, name), name)
        self.assertTrue(issubclass(snapccl.SnapcclError, RuntimeError))


class Discovery(unittest.TestCase):
    def test_environment_names_the_library(self):
        path = os.environ["SNAPCCL_LIBRARY"]
        lib = fresh_library(path)
        self.assertEqual(lib._name, path)
        v = ctypes.c_int()
        self.assertEqual(lib.snapcclGetVersion(ctypes.byref(v)), 0)
        self.assertGreater(v.value, 0)

    def test_version_string(self):
        self.assertRegex(snapccl.version(), r"^\d+\.\d+\.\d+$")

    def test_missing_library_says_how_to_name_it(self):
        with self.assertRaises(OSError) as e:
            fresh_library("/nonexistent/libsnapccl.so")
        self.assertIn("SNAPCCL_LIBRARY", str(e.exception))
        self.assertIn("/nonexistent/libsnapccl.so", str(e.exception))

    def test_search_order_without_environment(self):
        saved = os.environ.pop("SNAPCCL_LIBRARY")
        try:
            found = list(binding._candidates())
        finally:
            os.environ["SNAPCCL_LIBRARY"] = saved
        pkg = os.path.dirname(os.path.abspath(binding.__file__))
        tree = os.path.normpath(os.path.join(pkg, "..", "..", "build", "src", "libsnapccl.so"))
        normalized = [os.path.normpath(p) for p in found]
        self.assertIn(tree, normalized)
        self.assertEqual(found[-2:], ["libsnapccl.so.0", "libsnapccl.so"])  # the loader's path
        installed = getattr(binding, "_INSTALLED_LIBDIR", None)
        if installed:  # an installed package looks where meson installed the library first
            self.assertEqual(os.path.dirname(found[0]), installed)


class Tables(unittest.TestCase):
    def test_dtypes_match_nccl_h(self):
        codes = nccl_h_enum("ncclDataType_t")
        want = {torch.int8: "ncclInt8", torch.uint8: "ncclUint8", torch.int32: "ncclInt32",
                torch.int64: "ncclInt64", torch.float16: "ncclFloat16",
                torch.float32: "ncclFloat32", torch.float64: "ncclFloat64",
                torch.bfloat16: "ncclBfloat16"}
        if hasattr(torch, "float8_e4m3fn"):
            want[torch.float8_e4m3fn] = "ncclFloat8e4m3"
            want[torch.float8_e5m2] = "ncclFloat8e5m2"
        self.assertEqual(set(binding.NCCL_DTYPES), set(want))
        for dt, name in want.items():
            self.assertEqual(binding.NCCL_DTYPES[dt], codes[name], f"{dt} -> {name}")

    def test_ops_match_nccl_h(self):
        codes = nccl_h_enum("ncclRedOp_t")
        self.assertEqual(binding.NCCL_OPS, {"sum": codes["ncclSum"], "prod": codes["ncclProd"],
                                            "max": codes["ncclMax"], "min": codes["ncclMin"],
                                            "avg": codes["ncclAvg"]})

    def test_fused_dtypes(self):
        self.assertEqual(binding.FUSED_DTYPES, (torch.bfloat16, torch.float16, torch.float32))
        for dt in binding.FUSED_DTYPES:
            self.assertIn(dt, binding.NCCL_DTYPES)

    def test_fused_options_layout(self):
        # snapcclFusedOptions: size_t, 2 x unsigned, 2 x int, 3 pointers on x86-64.
        self.assertEqual(ctypes.sizeof(binding.FusedOptions), 8 + 4 + 4 + 4 + 4 + 3 * 8)
        o = binding.FusedOptions(normOut=binding.NORM_OUT_FP8_STATIC)
        self.assertEqual((o.size, o.magic, o.version, o.normOut),
                         (ctypes.sizeof(o), binding.FUSED_OPTIONS_MAGIC,
                          binding.FUSED_OPTIONS_VERSION, binding.NORM_OUT_FP8_STATIC))


@unittest.skipIf(not STUB, "checks on stand-in tensors (a real torch would need a GPU)")
class ArgumentErrors(unittest.TestCase):
    def setUp(self):
        self.c = unready_communicator()

    def test_unsupported_dtype(self):
        with self.assertRaisesRegex(TypeError, "no datatype"):
            binding._dtype(tensor([4], torch.int16))

    def test_tensor_on_another_device(self):
        with self.assertRaisesRegex(ValueError, "cuda:1"):
            self.c.all_reduce(tensor([4], torch.float32, "cuda:1"))
        with self.assertRaisesRegex(ValueError, "cpu"):
            self.c.all_reduce(tensor([4], torch.float32, "cpu"))

    def test_not_contiguous(self):
        with self.assertRaisesRegex(ValueError, "contiguous"):
            self.c.all_reduce(tensor([4], torch.float32, contiguous=False))

    def test_mismatched_sizes(self):
        x = tensor([8], torch.float32)
        with self.assertRaisesRegex(ValueError, "out must match"):
            self.c.all_reduce(x, out=tensor([4], torch.float32))
        with self.assertRaisesRegex(ValueError, "world_size"):
            self.c.all_gather(tensor([8], torch.float32), x)  # needs 2 x 8
        with self.assertRaisesRegex(ValueError, "world_size"):
            self.c.reduce_scatter(x, tensor([8], torch.float32))  # needs input of 2 x 8

    def test_unknown_op(self):
        with self.assertRaises(KeyError):
            self.c.all_reduce(tensor([4], torch.float32), op="mean")

    def test_fused_arguments(self):
        with self.assertRaisesRegex(TypeError, "bfloat16, float16 or float32"):
            self.c.fused_add_rms_norm(tensor([2, 8], torch.int32), None, None)
        with self.assertRaisesRegex(ValueError, "quant"):
            self.c.fused_add_rms_norm(tensor([2, 8], torch.bfloat16), None, None, quant="int4")
        with self.assertRaisesRegex(ValueError, "fp8_static needs scale"):
            self.c.fused_add_rms_norm(tensor([2, 8], torch.bfloat16), None, None,
                                      quant="fp8_static")


class LibraryErrors(unittest.TestCase):
    """Real calls into the built library that fail before any GPU work."""

    def test_check_raises_the_last_error(self):
        lib = binding.library()
        code = lib.ncclAllReduce(None, None, 1, 7, 0, None, None)  # NULL communicator
        self.assertEqual(code, nccl_h_enum("ncclResult_t")["ncclInvalidArgument"])
        text = lib.ncclGetLastError(None).decode()
        self.assertIn("ncclAllReduce", text)
        with self.assertRaises(snapccl.SnapcclError) as e:
            binding._check("ncclAllReduce", code)
        self.assertEqual(e.exception.code, code)
        self.assertIn(text, str(e.exception))

    @unittest.skipIf(not STUB, "stand-in tensors")
    def test_collectives_on_a_null_communicator(self):
        c = unready_communicator()
        x, y = tensor([8], torch.float32, address=0x2000), tensor([16], torch.float32)
        for call, func in ((lambda: c.all_reduce(x), "ncclAllReduce"),
                           (lambda: c.all_gather(y, x), "ncclAllGather"),
                           (lambda: c.reduce_scatter(x, y), "ncclReduceScatter")):
            with self.assertRaises(snapccl.SnapcclError) as e:
                call()
            msg = str(e.exception)
            self.assertTrue(msg.startswith(func + " failed: code 4: "), msg)
            self.assertIn(func + ":", msg)  # the library's own reason names the call
            self.assertIn("comm", msg)

    def test_async_error_of_a_null_communicator(self):
        c = unready_communicator()
        with self.assertRaises(snapccl.SnapcclError) as e:
            c.async_error()
        self.assertEqual(e.exception.code, 4)
        self.assertIn("ncclCommGetAsyncError", str(e.exception))


if __name__ == "__main__":
    if not os.environ.get("SNAPCCL_LIBRARY"):
        sys.exit("set SNAPCCL_LIBRARY to the built libsnapccl.so")
    unittest.main(verbosity=2)
