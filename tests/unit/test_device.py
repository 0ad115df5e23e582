"""The device module's eager mode: the optimiser calls of a stage job stop importing torch's compiler, with the
same numbers (the package's own optimisers and ``torch.optim.SGD``, whose ``step`` imports it on every call)."""

import subprocess
import sys
import textwrap

import pytest
import torch

from bayes_transfer.device import run_eagerly

FIRST_CALLS = textwrap.dedent("""
    import sys, torch
    from bayes_transfer.inference.samplers import SGHMC
    {setup}
    p = torch.nn.Parameter(torch.ones(3))
    opt = {optimiser}
    for _ in range(3):
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()
    opt.load_state_dict(opt.state_dict())
    print("dynamo" if "torch._dynamo" in sys.modules else "eager", p.detach().tolist())
""")


#: a subclass of torch.optim.Optimizer of the package's, and torch's SGD (the downstream SGD methods' optimiser)
OPTIMISERS = {
    "SGHMC": "SGHMC([p], lr=0.1, num_data=10, momentum=0.9, temperature=0.0)",
    "SGD": "torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)",
}


def _first_calls(setup: str, optimiser: str = "SGHMC") -> tuple[str, list[float]]:
    code = FIRST_CALLS.format(setup=setup, optimiser=OPTIMISERS[optimiser])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    return out[0], eval(out[1])


def test_run_eagerly_marks_the_wrapped_optimiser_methods():
    marked = set(run_eagerly())
    assert {"zero_grad", "add_param_group", "state_dict", "load_state_dict", "SGD.step", "Adam.step"} <= marked
    assert set(run_eagerly()) == marked  # a second call changes nothing and says the same
    assert torch.optim.SGD.step.hooked  # torch's step-hook wrapper is still there (not re-wrapped per instance)


@pytest.mark.parametrize("optimiser", sorted(OPTIMISERS))
def test_optimiser_calls_skip_the_compiler_import_and_give_the_same_numbers(optimiser):
    plain_mode, plain = _first_calls("", optimiser)
    eager_mode, eager = _first_calls("from bayes_transfer.device import run_eagerly; run_eagerly()", optimiser)
    assert plain_mode == "dynamo"  # what torch does unmarked: the reason for run_eagerly
    assert eager_mode == "eager"
    torch.testing.assert_close(torch.tensor(eager), torch.tensor(plain), rtol=0, atol=0)  # the same floats
