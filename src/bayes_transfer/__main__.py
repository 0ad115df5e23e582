"""Command line: ``python -m bayes_transfer demo [--quick] [--n-train N] [--seeds S ...] ...``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bayes_transfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="pre-train, learn the prior and run every method on the bundled digits")
    demo.add_argument("--quick", action="store_true",
                      help="a few steps per stage (seconds): checks that everything runs; numbers are not evidence")
    demo.add_argument("--n-train", type=int, default=None, help="downstream training examples (class-balanced)")
    demo.add_argument("--seeds", type=int, nargs="+", default=None,
                      help="downstream seeds, each its own subsample (default 0 1 2); the first also seeds the source")
    demo.add_argument("--pretraining", choices=["supervised", "simclr"], default=None)
    demo.add_argument("--steps", type=int, default=None, help="downstream optimisation steps per fit")
    demo.add_argument("--device", default=None, help="cpu, cuda, mps or auto (default)")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    demo.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if args.command == "demo":
        from bayes_transfer.demo import QUICK, DemoSettings, run_demo

        given = {"n_train": args.n_train, "seeds": tuple(args.seeds) if args.seeds else None,
                 "pretraining": args.pretraining, "steps": args.steps}
        settings = dataclasses.replace(QUICK if args.quick else DemoSettings(),
                                       **{k: v for k, v in given.items() if v is not None})
        run_demo(settings, device=args.device, threads=args.threads, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
