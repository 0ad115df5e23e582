"""Command line: ``python -m bayes_transfer demo [--n-train N] [--seed S] ...``."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bayes_transfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="pre-train, learn the prior and run every method on the bundled digits")
    demo.add_argument("--n-train", type=int, default=25, help="downstream training examples (class-balanced)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--pretraining", choices=["supervised", "simclr"], default="supervised")
    demo.add_argument("--steps", type=int, default=300, help="downstream optimisation steps per fit")
    demo.add_argument("--device", default=None, help="cpu, cuda, mps or auto (default)")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    demo.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if args.command == "demo":
        from bayes_transfer.demo import run_demo

        run_demo(n_train=args.n_train, seed=args.seed, pretraining=args.pretraining, steps=args.steps,
                 device=args.device, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
