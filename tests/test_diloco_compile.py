"""DiLoCo in a torch.compile'd training step: the model and the step
(forward, backward, ``opt.step()``, ``zero_grad``, an LR scheduler) compiled
on two real peers. The wrapper's outer work is excluded from tracing
(``torch.compiler.disable``), so the compiled step compiles the inner
optimizer and runs the sync eagerly: the peers' global params end
bit-identical, every scheduled outer sync happened, the scheduler drove the
inner LR, and the result is the eager run's (to float rounding: the compiled
inner AdamW rounds differently)."""

import numpy as np
import pytest

from harness import PeerGroup


@pytest.mark.timeout(240)
def test_compiled_training_step_with_diloco_on_two_peers():
    runs = {}
    for backend in ("aot_eager", None):
        with PeerGroup(2, "compiled_diloco", {"backend": backend}, timeout=180) as g:
            runs[backend] = g.results()
    a, b = runs["aot_eager"]
    assert a["global_"] == b["global_"]
    assert a["steps"] == b["steps"] == 23 and a["syncs"] == b["syncs"] == 4 and a["world"] == b["world"] == 2
    assert a["lr"] == b["lr"] == pytest.approx(2e-3 * 0.5 ** 3)  # StepLR(7, 0.5) after 23 steps
    eager = np.array(runs[None][0]["params"])
    assert runs[None][0]["global_"] == runs[None][1]["global_"]
    assert np.abs(np.array(a["params"]) - eager).max() < 1e-5 and np.abs(eager).max() > 0.1
