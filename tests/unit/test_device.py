"""The device module's eager mode: the first optimiser calls of a stage job stop importing torch's compiler.

(``torch.optim.SGD.step`` itself imports it on every call, whatever is marked, so the check uses the package's
own optimiser.)"""

import subprocess
import sys
import textwrap

import torch

from bayes_transfer.device import run_eagerly

FIRST_CALLS = textwrap.dedent("""
    import sys, torch
    from bayes_transfer.inference.samplers import SGHMC
    {setup}
    p = torch.nn.Parameter(torch.ones(3))
    opt = SGHMC([p], lr=0.1, num_data=10, momentum=0.9, temperature=0.0)  # a subclass of torch.optim.Optimizer
    for _ in range(3):
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()
    opt.load_state_dict(opt.state_dict())
    print("dynamo" if "torch._dynamo" in sys.modules else "eager", p.detach().tolist())
""")


def _first_calls(setup: str) -> tuple[str, list[float]]:
    out = subprocess.run([sys.executable, "-c", FIRST_CALLS.format(setup=setup)], capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    return out[0], eval(out[1])


def test_run_eagerly_marks_the_wrapped_optimiser_methods():
    assert set(run_eagerly()) == {"zero_grad", "add_param_group", "state_dict", "load_state_dict"}


def test_first_optimiser_calls_skip_the_compiler_import_and_give_the_same_numbers():
    plain_mode, plain = _first_calls("")
    eager_mode, eager = _first_calls("from bayes_transfer.device import run_eagerly; run_eagerly()")
    assert plain_mode == "dynamo"  # what torch does unmarked: the reason for run_eagerly
    assert eager_mode == "eager"
    torch.testing.assert_close(torch.tensor(eager), torch.tensor(plain), rtol=0, atol=0)  # the same floats
