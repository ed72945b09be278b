"""The layers point one way: the config, the checkpoint reader, the baselines and the evaluation
run import nothing above them (checked in fresh interpreters: the test process has imported
everything)."""

import ast
import subprocess
import sys

import pytest


def imported(modules: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with ``prefixes`` that importing ``modules`` loads in a fresh interpreter."""
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout)


LIGHTNING = ("lightning", "pytorch_lightning")


@pytest.mark.parametrize(
    "modules,forbidden",
    [
        # config.py sits at the bottom of the import graph
        ("icl.config", (*LIGHTNING, "icl.baselines", "icl.evaluation.run", "icl.training.module")),
        # `icl eval` reads checkpoints without the training stack
        ("icl.checkpoint.io, icl.checkpoint.load", LIGHTNING),
        # CheckpointPredictor receives a loaded model: the baselines load none
        ("icl.baselines", (*LIGHTNING, "icl.checkpoint")),
        ("icl.evaluation.run", LIGHTNING),
    ],
    ids=["config", "checkpoint_reading", "baselines", "evaluation_run"],
)
def test_a_layer_imports_nothing_above_it(modules, forbidden):
    assert imported(modules, forbidden) == []
