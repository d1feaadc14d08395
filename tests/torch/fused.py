"""The Python binding (python/snapccl) against PyTorch's own ops, under torchrun.

    SNAPCCL_SHARED_GPU=1 torchrun --nproc-per-node 2 tests/torch/fused.py --shared-gpu
    torchrun --nproc-per-node 8 tests/torch/fused.py            # a GPU per rank

torch.distributed runs on gloo by default (NVIDIA's NCCL refuses two ranks on one GPU;
--backend nccl on a GPU per rank, or with LD_PRELOAD=libsnapccl.so). It only shares the
unique id and computes the references: torch's all_reduce (on fp32 CPU copies, then
rounded to the dtype), then the residual add and the RMSNorm in torch (fp32 math,
dtype-rounded tensors, as vLLM's fused_add_rms_norm). Checks:
  * comm.all_reduce / all_gather / reduce_scatter equal torch's, exactly (integer data);
  * comm.fused_add_rms_norm: residual_out and norm_out within an ulp or two of torch's,
    for bf16/fp16/fp32 x tokens x hidden (pack multiples and not), in place and not,
    without residual or weight, with a sum output, fp8 static and dynamic (against
    torch's float8_e4m3fn of the same values, one fp8 step), and the algorithm used;
  * every output bitwise identical on every rank;
  * the fused op captured in torch.cuda.graph and replayed with fresh inputs;
  * the separate kernel (snapccl.residual_rms_norm) against torch.
Prints one line per check on rank 0 and exits non-zero on any mismatch."""
import argparse
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import snapccl  # noqa: E402

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
TOKENS = [1, 5, 64, 300]
HIDDEN = [8, 4096, 4100 + 3, 8192]
EPS = 1e-6
# Relative and absolute tolerances per dtype: a couple of ulps at the values' scale.
TOL = {torch.bfloat16: (2 ** -6, 2 ** -6), torch.float16: (2 ** -9, 2 ** -9),
       torch.float32: (2e-6, 2e-6)}
FP8 = getattr(torch, "float8_e4m3fn", None)


def gen(seed, shape, dtype, lo=-1.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(dtype)


def rms_norm(r, w, eps):
    rf = r.float()
    y = rf * torch.rsqrt(rf.pow(2).mean(-1, keepdim=True) + eps)
    return y * w.float() if w is not None else y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared-gpu", action="store_true", help="every rank on cuda:0")
    ap.add_argument("--backend", default="gloo")
    args = ap.parse_args()
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = torch.device("cuda", 0 if args.shared_gpu else local)
    torch.cuda.set_device(dev)
    dist.init_process_group(args.backend)
    comm = snapccl.Communicator()
    # Where torch's own collectives run: CPU tensors on gloo, CUDA tensors on nccl.
    tdev = dev if args.backend == "nccl" else torch.device("cpu")
    failures = 0

    def report(name, ok, detail=""):
        nonlocal failures
        if not ok:
            failures += 1
            print(f"rank {rank} FAIL {name} {detail}", flush=True)
        elif rank == 0:
            print(f"ok {name}", flush=True)

    def close(name, got, want, rtol, atol):
        try:
            torch.testing.assert_close(got.float().cpu(), want.float().cpu(), rtol=rtol, atol=atol)
            report(name, True)
        except AssertionError as e:
            report(name, False, str(e).splitlines()[0:4])

    def same_everywhere(name, t):
        """Rank 0's bytes broadcast; every rank compares its own."""
        mine = t.contiguous().view(torch.uint8).to(tdev)
        ref = mine.clone()
        dist.broadcast(ref, src=0)
        report(f"{name} identical on every rank", torch.equal(mine.cpu(), ref.cpu()))

    def torch_sum(xs_rank, dtype):
        # A copy: for a float32 CPU tensor .float().to("cpu") is the tensor itself, and
        # torch's in-place all-reduce would overwrite the input snapccl is given next.
        t = xs_rank.float().to(tdev).clone()
        dist.all_reduce(t)  # torch's own all-reduce
        return t.cpu().to(dtype)

    # ---- collectives, exact on integer-valued data ----
    seed = 100
    for dtype in DTYPES:
        for n in (1, 17, 4099, 100003):
            seed += 1
            x = torch.randint(-8, 9, (n,), generator=torch.Generator().manual_seed(seed * 31 + rank))
            want = x.float().to(tdev)
            dist.all_reduce(want)
            want = want.cpu()
            got = comm.all_reduce(x.to(dtype).to(dev))
            report(f"all_reduce {dtype} n={n}", torch.equal(got.float().cpu(), want))
            parts = [torch.zeros(n, device=tdev) for _ in range(world)]
            dist.all_gather(parts, x.float().to(tdev))
            parts = [p.cpu() for p in parts]
            out = torch.full((world * n,), float("nan"), dtype=dtype, device=dev)
            comm.all_gather(out, x.to(dtype).to(dev))
            report(f"all_gather {dtype} n={n}", torch.equal(out.float().cpu(), torch.cat(parts)))
            big = torch.randint(-8, 9, (n * world,), generator=torch.Generator().manual_seed(seed * 37 + rank))
            full = big.float().to(tdev)
            dist.all_reduce(full)
            full = full.cpu()
            out = torch.full((n,), float("nan"), dtype=dtype, device=dev)
            comm.reduce_scatter(out, big.to(dtype).to(dev))
            report(f"reduce_scatter {dtype} n={n}", torch.equal(out.float().cpu(), full[rank * n:(rank + 1) * n]))
    torch.cuda.synchronize()

    # ---- the fused op ----
    def fused_case(dtype, tokens, hidden, *, in_place=False, no_residual=False, no_weight=False,
                   quant=None, with_sum=False, seed=0):
        name = (f"fused {dtype} {tokens}x{hidden}{' in-place' if in_place else ''}"
                f"{' no-residual' if no_residual else ''}{' no-weight' if no_weight else ''}"
                f"{' ' + quant if quant else ''}{' sum-out' if with_sum else ''}"
                f" [{comm.fused_algorithm(tokens, hidden, dtype)}]")
        x = gen(seed * 1000 + rank, (tokens, hidden), dtype)
        res = None if no_residual else gen(seed * 1000 + 999, (tokens, hidden), dtype, -2, 2)
        w = None if no_weight else gen(seed * 1000 + 998, (hidden,), dtype, 0.5, 1.5)
        s_ref = torch_sum(x, dtype)
        r_ref = (s_ref.float() + (res.float() if res is not None else 0)).to(dtype)
        xd = x.to(dev)
        resd = None if res is None else res.to(dev)
        wd = None if w is None else w.to(dev)
        sum_out = torch.full_like(xd, float("nan")) if with_sum else None
        scale = torch.tensor([2 ** -6], dtype=torch.float32, device=dev) if quant == "fp8_static" else None
        norm, rout, scales = comm.fused_add_rms_norm(xd, resd, wd, EPS, in_place=in_place, quant=quant,
                                                     scale=scale, sum_out=sum_out)
        torch.cuda.synchronize()
        rtol, atol = TOL[dtype]
        if in_place and quant is None:
            report(f"{name}: norm_out is the input", norm.data_ptr() == xd.data_ptr())
        if in_place and resd is not None:
            report(f"{name}: residual_out is the residual", rout.data_ptr() == resd.data_ptr())
        if with_sum:
            close(f"{name}: sum_out", sum_out, s_ref, rtol, atol * world)
        close(f"{name}: residual_out", rout, r_ref, rtol, atol * world)
        # The norm from snapccl's own residual (conditioned, as tests/fused_ref.h does).
        v = rms_norm(rout.cpu(), w, EPS)
        if quant is None:
            close(f"{name}: norm_out", norm, v.to(dtype), rtol, atol)
        else:
            q_scale = scale.cpu() if quant == "fp8_static" else scales.cpu()[:, None]
            if quant == "fp8_dynamic":
                want = torch.clamp(v.abs().amax(-1) / 448.0, min=1.0 / (448 * 512))
                close(f"{name}: dynamic scales", scales, want, 1e-5, 0)
            q_ref = (v / q_scale).clamp(-448, 448).to(FP8).float()
            close(f"{name}: fp8 norm_out", norm.float(), q_ref, 2 ** -3 + 1e-3, 2 ** -9)
        same_everywhere(f"{name}: norm_out", norm)
        same_everywhere(f"{name}: residual_out", rout)

    seed = 1
    for dtype in DTYPES:
        for tokens in TOKENS:
            for hidden in HIDDEN:
                seed += 1
                fused_case(dtype, tokens, hidden, seed=seed, in_place=(seed % 3 == 0))
    for i, kw in enumerate([dict(no_residual=True), dict(no_weight=True), dict(with_sum=True),
                            dict(quant="fp8_static"), dict(quant="fp8_dynamic"),
                            dict(quant="fp8_dynamic", in_place=True)]):
        if "quant" in kw and FP8 is None:
            continue
        for dtype, tokens, hidden in ((torch.bfloat16, 3, 4096), (torch.float16, 200, 8192),
                                      (torch.float32, 17, 4100 + 3)):
            seed += 1
            fused_case(dtype, tokens, hidden, seed=seed, **kw)

    # ---- captured in a CUDA graph, replayed with fresh inputs ----
    tokens, hidden, dtype = 16, 4096, torch.bfloat16
    sx = torch.zeros(tokens, hidden, dtype=dtype, device=dev)
    sres = torch.zeros_like(sx)
    sw = gen(7, (hidden,), dtype, 0.5, 1.5).to(dev)
    snorm = torch.empty_like(sx)
    srout = torch.empty_like(sx)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm up outside the graph
            comm.fused_add_rms_norm(sx, sres, sw, EPS, norm_out=snorm, residual_out=srout)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        comm.fused_add_rms_norm(sx, sres, sw, EPS, norm_out=snorm, residual_out=srout)
    for rep in range(10):
        seed += 1
        x = gen(seed * 1000 + rank, (tokens, hidden), dtype)
        res = gen(seed * 1000 + 999, (tokens, hidden), dtype, -2, 2)
        sx.copy_(x.to(dev))
        sres.copy_(res.to(dev))
        graph.replay()
        torch.cuda.synchronize()
        r_ref = (torch_sum(x, dtype).float() + res.float()).to(dtype)
        rtol, atol = TOL[dtype]
        close(f"graph replay {rep}: residual_out", srout, r_ref, rtol, atol * world)
        close(f"graph replay {rep}: norm_out", snorm, rms_norm(srout.cpu(), sw.cpu(), EPS).to(dtype), rtol, atol)

    # ---- the separate kernel ----
    for dtype in DTYPES:
        s = gen(5, (33, 5000), dtype).to(dev)
        res = gen(6, (33, 5000), dtype).to(dev)
        w = gen(7, (5000,), dtype, 0.5, 1.5).to(dev)
        norm, rout = snapccl.residual_rms_norm(s, res, w, EPS)
        torch.cuda.synchronize()
        rtol, atol = TOL[dtype]
        r_ref = (s.float() + res.float()).to(dtype)
        close(f"residual_rms_norm {dtype}: residual_out", rout, r_ref, rtol, atol)
        close(f"residual_rms_norm {dtype}: norm_out", norm, rms_norm(rout, w, EPS).to(dtype), rtol, atol)

    report("no asynchronous error", comm.async_error() == 0)
    comm.destroy()
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        print(f"{'PASS' if failures == 0 else 'FAIL'} snapccl binding world={world} "
              f"shared_gpu={args.shared_gpu} backend={args.backend} snapccl={snapccl.version()}", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
