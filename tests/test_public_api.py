"""The public API: every name in ``dsrecon.__all__`` resolves, and the six verbs stay functions.

Regression: when the verbs' modules were named ``train.py``/``evaluate.py``, importing them bound
the module to ``dsrecon.train``, so ``dsrecon.train(model, data)`` raised "'module' object is not
callable" after any ``from dsrecon.train import ...``.
"""

import importlib
import subprocess
import sys

import dsrecon


def test_every_public_name_resolves():
    for name in dsrecon.__all__:
        assert getattr(dsrecon, name) is not None, name


def test_verbs_are_functions_even_after_their_modules_are_imported():
    for module in ("dsrecon.training", "dsrecon.evaluation", "dsrecon.comparison", "dsrecon.systems",
                   "dsrecon.data", "dsrecon.rollout"):
        importlib.import_module(module)
    for verb in ("simulate", "load", "train", "generate", "evaluate", "compare"):
        assert callable(getattr(dsrecon, verb)) and not isinstance(getattr(dsrecon, verb), type(sys)), verb


def test_import_and_version_are_cheap_and_side_effect_free():
    code = "import sys, dsrecon; print(dsrecon.__version__); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [dsrecon.__version__, "False"]  # `dsrecon --version` does not pay for importing torch
    cli = subprocess.run([sys.executable, "-m", "dsrecon", "--version"], capture_output=True, text=True, check=True)
    assert cli.stdout.strip() == f"dsrecon {dsrecon.__version__}"


def test_every_registered_model_class_is_public():
    """Issue 17: the model classes are exported (``dsrecon.ShPLRNN``, ...), one per registry name."""
    from dsrecon.models import model_class

    for name in dsrecon.MODELS:
        cls = model_class(name)
        assert getattr(dsrecon, cls.__name__) is cls and cls.__name__ in dsrecon.__all__, name
