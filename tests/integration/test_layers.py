"""The layers point one way: the config, the baselines and the evaluation run import nothing
above them (checked in fresh interpreters: the test process has imported everything)."""

import subprocess
import sys


def test_importing_the_config_imports_no_lightning_evaluation_or_baselines():
    """config.py sits at the bottom of the import graph (a fresh interpreter: this one has
    imported everything already)."""
    code = (
        "import sys, icl.config; print(sorted(m for m in sys.modules if m.startswith(('lightning', "
        "'pytorch_lightning', 'icl.baselines', 'icl.evaluation.run', 'icl.training.module'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_baselines_and_the_evaluation_run_import_no_lightning_and_baselines_no_checkpoint_loading():
    code = (
        "import sys, icl.baselines; "
        "assert not [m for m in sys.modules if m.startswith(('icl.checkpoint', 'lightning'))]; "
        "import icl.evaluation.run; assert not [m for m in sys.modules if m.startswith('lightning')]"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
