#!/usr/bin/env python
"""Per-step cost of a learned low-rank Gaussian prior, measured side by side with plain training.

For each backbone this times one full SGD step (forward, backward, ``SGD(momentum=0.9).step()``, model
in train mode, one fixed random batch) of four variants:

* ``plain``: cross-entropy only;
* ``prior`` (ours, the training path of ``bayes_transfer.inference.loop.fit``): backward of the cross-entropy,
  then ``BoundPrior.add_grad_(1 / N)`` adds the gradient of ``-log p / N`` in two passes over the
  per-parameter factor blocks, with a random rank-k :class:`GaussianPrior` over the backbone
  parameters bound once outside the timed loop (no concatenation, no autograd graph);
* ``prior_autograd`` (ours, differentiable): ``ce - BoundPrior.log_prob() / N`` through autograd;
* ``peer`` (the authors' formulation): every step ``torch.cat`` of all backbone parameters and the
  ``log_prob`` of a float32 ``torch.distributions.LowRankMultivariateNormal(loc, cov_factor (d x k),
  cov_diag)`` built once outside the loop (``cov_factor`` is the transposed k x d factor, a view, and
  ``validate_args`` is left at torch's default, both as in the authors' code).

All share the same prior values (mean = initial backbone values, positive random variance,
factor ``randn * 1e-3``) and each has its own copy of the same initial model and its own optimizer.
Timing is interleaved: after warm-up steps of every variant, each of R rounds times one step of each
variant in a rotating order, so a noisy machine hits all variants alike. Reported per variant: the
median step time; per ratio: the median of the per-round ratios and their interquartile range.

    python benchmarks/prior_overhead.py                 # small_resnet 8x8 b32, resnet50 224 b8
    python benchmarks/prior_overhead.py --quick         # smoke run (resnet50 at 64 px, few rounds)
    python benchmarks/prior_overhead.py --backbones small_resnet --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

try:
    from bayes_transfer.device import get_device
    from bayes_transfer.models.resnets import build_model, split_named_parameters
    from bayes_transfer.priors.gaussian import GaussianPrior
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from bayes_transfer.device import get_device
    from bayes_transfer.models.resnets import build_model, split_named_parameters
    from bayes_transfer.priors.gaussian import GaussianPrior

VARIANTS = ("plain", "prior", "prior_autograd", "peer")
NUM_CLASSES = 10


def sync(device: torch.device) -> None:
    """Wait for queued kernels; only CUDA runs asynchronously here."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default="small_resnet,resnet50",
                   help="comma-separated subset of small_resnet,resnet50 (default: both)")
    p.add_argument("--small-size", type=int, default=8, help="small_resnet input side (default 8)")
    p.add_argument("--small-batch", type=int, default=32, help="small_resnet batch size (default 32)")
    p.add_argument("--small-rounds", type=int, default=50, help="timed rounds for small_resnet (default 50)")
    p.add_argument("--resnet50-size", type=int, default=224, help="resnet50 input side (default 224)")
    p.add_argument("--resnet50-batch", type=int, default=8, help="resnet50 batch size (default 8)")
    p.add_argument("--resnet50-rounds", type=int, default=15, help="timed rounds for resnet50 (default 15)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up steps per variant (default: 5 for small_resnet, 2 for resnet50)")
    p.add_argument("--rank", type=int, default=20, help="low-rank factor rank k (default 20)")
    p.add_argument("--num-data", type=int, default=50000, help="N in ce - log p / N (default 50000)")
    p.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate (default 1e-3)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: get_device())")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small_resnet 5 rounds, resnet50 at 64 px batch 2, 2 rounds, 1 warm-up")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.small_rounds = min(args.small_rounds, 5)
        args.resnet50_size = 64
        args.resnet50_batch = 2
        args.resnet50_rounds = min(args.resnet50_rounds, 2)
        args.warmup = 1 if args.warmup is None else args.warmup
    for name in ("small_size", "small_batch", "small_rounds", "resnet50_size", "resnet50_batch",
                 "resnet50_rounds", "rank", "num_data"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    for b in args.backbones:
        if b not in ("small_resnet", "resnet50"):
            p.error(f"unknown backbone {b!r}; choose from small_resnet, resnet50")
    return args


def configs(args) -> list[dict]:
    out = []
    for b in args.backbones:
        if b == "small_resnet":
            out.append(dict(arch=b, size=args.small_size, channels=1, batch=args.small_batch,
                            rounds=args.small_rounds, warmup=5 if args.warmup is None else args.warmup,
                            kwargs=dict(in_channels=1)))
        else:
            out.append(dict(arch=b, size=args.resnet50_size, channels=3, batch=args.resnet50_batch,
                            rounds=args.resnet50_rounds, warmup=2 if args.warmup is None else args.warmup,
                            kwargs={}))
    return out


def random_prior(backbone: dict, rank: int, gen: torch.Generator) -> GaussianPrior:
    """Rank-``rank`` prior centred at the current backbone values, positive random variance."""
    names = list(backbone)
    shapes = [tuple(backbone[n].shape) for n in names]
    mean = torch.cat([backbone[n].detach().reshape(-1).float().cpu() for n in names])
    d = mean.numel()
    variance = 1e-2 * (0.5 + torch.rand(d, generator=gen))
    factor = torch.randn(rank, d, generator=gen) * 1e-3
    return GaussianPrior(mean, variance, factor, names, shapes,
                         metadata={"kind": "random benchmark prior", "rank": rank})


def run_config(cfg: dict, args, device: torch.device) -> dict:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    base = build_model(cfg["arch"], NUM_CLASSES, **cfg["kwargs"])
    backbone0, _ = split_named_parameters(base)
    d = sum(p.numel() for p in backbone0.values())
    t0 = time.perf_counter()
    prior = random_prior(backbone0, args.rank, gen)
    n = args.num_data

    models = {v: copy.deepcopy(base).to(device).train() for v in VARIANTS}
    del base, backbone0
    opts = {v: torch.optim.SGD(models[v].parameters(), lr=args.lr, momentum=0.9) for v in VARIANTS}
    x = torch.randn(cfg["batch"], cfg["channels"], cfg["size"], cfg["size"], generator=gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (cfg["batch"],), generator=gen).to(device)

    # ours: bind once (per-parameter blocks on the parameters' device). "prior" is the training path
    # (BoundPrior.add_grad_ after the data loss's backward); "prior_autograd" differentiates log_prob()
    bb_prior, _ = split_named_parameters(models["prior"])
    bound = prior.bind(bb_prior).to(device)
    bb_auto, _ = split_named_parameters(models["prior_autograd"])
    bound_auto = prior.bind(bb_auto).to(device)

    # peer: the authors' formulation, distribution built once; float32, cov_factor = the stored
    # (k x d) factor transposed, a (d x k) view as in their code (LowRankMultivariateNormal(mean,
    # cov_mat_sqr.t(), variance)); default validate_args
    bb_peer, _ = split_named_parameters(models["peer"])
    peer_params = list(bb_peer.values())
    peer_dist = torch.distributions.LowRankMultivariateNormal(
        loc=prior.mean.to(device, torch.float32),
        cov_factor=prior.factor.to(device, torch.float32).T,
        cov_diag=prior.variance.to(device, torch.float32),
    )
    sync(device)
    setup_s = time.perf_counter() - t0

    # sanity: both formulations give the same log-density at the initial parameters
    with torch.no_grad():
        lp_ours = float(bound.log_prob())
        lp_peer = float(peer_dist.log_prob(torch.cat([p.reshape(-1) for p in peer_params])))
    rel_diff = abs(lp_ours - lp_peer) / max(abs(lp_ours), 1e-30)

    def step(v: str) -> None:
        model, opt = models[v], opts[v]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if v == "prior_autograd":
            loss = loss - bound_auto.log_prob() / n
        elif v == "peer":
            theta = torch.cat([p.reshape(-1) for p in peer_params])
            loss = loss - peer_dist.log_prob(theta) / n
        loss.backward()
        if v == "prior":
            bound.add_grad_(1.0 / n)
        opt.step()

    def timed(v: str) -> float:
        sync(device)
        t = time.perf_counter()
        step(v)
        sync(device)
        return time.perf_counter() - t

    for _ in range(cfg["warmup"]):
        for v in VARIANTS:
            timed(v)
    times = {v: [] for v in VARIANTS}
    for r in range(cfg["rounds"]):
        k = r % len(VARIANTS)
        for v in VARIANTS[k:] + VARIANTS[:k]:  # rotating order
            times[v].append(timed(v))
        print(f"  {cfg['arch']} round {r + 1}/{cfg['rounds']}: "
              + "  ".join(f"{v} {times[v][-1] * 1e3:.1f} ms" for v in VARIANTS), flush=True)

    t = {v: np.asarray(times[v]) for v in VARIANTS}

    def ratio_stats(num: str) -> dict:
        rr = t[num] / t["plain"]
        q1, med, q3 = np.percentile(rr, [25, 50, 75])
        return {"median": float(med), "q1": float(q1), "q3": float(q3), "per_round": rr.tolist()}

    res = {
        "backbone": cfg["arch"],
        "input": f"{cfg['channels']}x{cfg['size']}x{cfg['size']}",
        "batch": cfg["batch"],
        "d": d,
        "rank": args.rank,
        "rounds": cfg["rounds"],
        "warmup": cfg["warmup"],
        "setup_s": setup_s,
        "log_prob_ours": lp_ours,
        "log_prob_peer": lp_peer,
        "log_prob_rel_diff": rel_diff,
        "median_ms": {v: float(np.median(t[v]) * 1e3) for v in VARIANTS},
        "times_ms": {v: (t[v] * 1e3).tolist() for v in VARIANTS},
        "prior/plain": ratio_stats("prior"),
        "autograd/plain": ratio_stats("prior_autograd"),
        "peer/plain": ratio_stats("peer"),
    }
    del models, opts, bound, bound_auto, bb_auto, peer_dist, peer_params, bb_prior, bb_peer, prior, x, y
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def fmt_ratio(s: dict) -> str:
    return f"{s['median']:.3f} [{s['q1']:.3f}-{s['q3']:.3f}]"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "argv": sys.argv[1:] if argv is None else list(argv),
    }
    print(f"device: {env['device']} ({env['device_name']})  torch: {env['torch']}  "
          f"threads: {env['threads']}  python: {env['python']}", flush=True)

    results = []
    for cfg in configs(args):
        print(f"[{cfg['arch']}] input {cfg['channels']}x{cfg['size']}x{cfg['size']}, batch {cfg['batch']}, "
              f"rank {args.rank}, warm-up {cfg['warmup']}, rounds {cfg['rounds']}", flush=True)
        res = run_config(cfg, args, device)
        print(f"[{cfg['arch']}] d = {res['d']:,}, setup {res['setup_s']:.1f} s, log p ours {res['log_prob_ours']:.6g}"
              f" vs peer {res['log_prob_peer']:.6g} (rel diff {res['log_prob_rel_diff']:.1e})", flush=True)
        results.append(res)

    header = (f"{'backbone':<13} {'input':>9} {'batch':>5} {'d':>10} {'rank':>4} {'plain_ms':>9} "
              f"{'prior_ms':>9} {'peer_ms':>9}  {'prior/plain [IQR]':<22} {'autograd/plain [IQR]':<22} "
              f"{'peer/plain [IQR]':<22}")
    print()
    print(f"Per-step time, median over rounds; ratios: median [Q1-Q3] of per-round ratios "
          f"(device {env['device']}, torch {env['torch']}, {env['threads']} threads)")
    print(header)
    print("-" * len(header))
    for r in results:
        m = r["median_ms"]
        print(f"{r['backbone']:<13} {r['input']:>9} {r['batch']:>5} {r['d']:>10} {r['rank']:>4} "
              f"{m['plain']:>9.2f} {m['prior']:>9.2f} {m['peer']:>9.2f}  "
              f"{fmt_ratio(r['prior/plain']):<22} {fmt_ratio(r['autograd/plain']):<22} "
              f"{fmt_ratio(r['peer/plain']):<22}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": env, "results": results}, indent=2))
        print(f"wrote {args.json}")
    bad = [r["backbone"] for r in results
           if not all(math.isfinite(r[k]["median"]) for k in ("prior/plain", "peer/plain"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
