"""PyTorch collectives through whatever libnccl the process loaded (run under torchrun,
optionally with LD_PRELOAD=libsnapccl.so). Every check compares against a CPU reference
built from every rank's inputs (all ranks draw them from the same seeds), with
integer-valued data so fp32/bf16/fp16 results are exact whatever the reduction order.

Usage: torchrun --nproc-per-node N tests/torch/collectives.py [--shared-gpu] [--no-broadcast]
Prints one line per check and exits non-zero on any mismatch."""
import argparse
import os
import sys

import torch
import torch.distributed as dist

SIZES = [1, 3, 17, 1023, 65537, 1000003]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def data(rank, n, dtype, seed):
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    # |x| <= 8 and at most 8 ranks: every partial sum is an integer below 2^8, exact in bf16.
    return torch.randint(-8, 9, (n,), generator=g).to(dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared-gpu", action="store_true", help="every rank on cuda:0")
    ap.add_argument("--no-broadcast", action="store_true")
    args = ap.parse_args()
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = torch.device("cuda", 0 if args.shared_gpu else local)
    torch.cuda.set_device(dev)
    dist.init_process_group("nccl", device_id=dev)
    failures = 0

    def check(name, got, want):
        nonlocal failures
        ok = torch.equal(got.cpu(), want)
        if not ok:
            failures += 1
            bad = (got.cpu() != want).nonzero()
            print(f"rank {rank} FAIL {name}: {bad.numel()} wrong, first at {bad[0].tolist()}", flush=True)
        elif rank == 0:
            print(f"ok {name}", flush=True)

    seed = 1
    for dtype in DTYPES:
        for n in SIZES:
            seed += 1
            t = data(rank, n, dtype, seed).to(dev)
            dist.all_reduce(t)
            want = sum(data(r, n, torch.float64, seed) for r in range(world)).to(dtype)
            check(f"all_reduce {dtype} n={n}", t, want)

            seed += 1
            x = data(rank, n, dtype, seed).to(dev)
            out = torch.full((n * world,), float("nan"), dtype=dtype, device=dev)
            dist.all_gather_into_tensor(out, x)
            check(f"all_gather_into_tensor {dtype} n={n}", out,
                  torch.cat([data(r, n, dtype, seed) for r in range(world)]))

            seed += 1
            x = data(rank, n * world, dtype, seed).to(dev)
            out = torch.full((n,), float("nan"), dtype=dtype, device=dev)
            dist.reduce_scatter_tensor(out, x)
            full = sum(data(r, n * world, torch.float64, seed) for r in range(world))
            check(f"reduce_scatter_tensor {dtype} n={n}", out, full[rank * n:(rank + 1) * n].to(dtype))

            if not args.no_broadcast:
                seed += 1
                x = data(rank, n, dtype, seed).to(dev)
                dist.broadcast(x, src=world - 1)
                check(f"broadcast {dtype} n={n}", x, data(world - 1, n, dtype, seed))
    dist.barrier()
    if rank == 0:
        print("ok barrier", flush=True)

    # Subgroups: every rank alone, and all ranks in reverse order.
    singles = [dist.new_group([r]) for r in range(world)]
    rev = dist.new_group(list(reversed(range(world))))
    for n in (5, 4099):
        seed += 1
        t = data(rank, n, torch.float32, seed).to(dev)
        dist.all_reduce(t, group=singles[rank])
        check(f"new_group single all_reduce n={n}", t, data(rank, n, torch.float32, seed))
        seed += 1
        t = data(rank, n, torch.float32, seed).to(dev)
        dist.all_reduce(t, group=rev)
        check(f"new_group reversed all_reduce n={n}", t,
              sum(data(r, n, torch.float64, seed) for r in range(world)).float())

    # all_reduce captured in a CUDA graph, replayed with new inputs each time.
    n = 4097
    buf = torch.zeros(n, dtype=torch.float32, device=dev)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):  # warm up outside the graph (lazy init, attach)
            dist.all_reduce(buf)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        dist.all_reduce(buf)
    for rep in range(20):
        seed += 1
        buf.copy_(data(rank, n, torch.float32, seed).to(dev))
        graph.replay()
        torch.cuda.synchronize()
        check(f"graph replay {rep} all_reduce n={n}", buf,
              sum(data(r, n, torch.float64, seed) for r in range(world)).float())

    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        print(f"{'PASS' if failures == 0 else 'FAIL'} torch collectives world={world} "
              f"shared_gpu={args.shared_gpu} preload={os.environ.get('LD_PRELOAD', '')}", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
