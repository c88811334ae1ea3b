"""nolds, the reference for Rosenstein's lambda_max, imports lazily and fails with its fix."""

from __future__ import annotations

import builtins
import sys

import pytest

from dsrecon._nolds import import_nolds


def test_import_nolds_returns_module_with_lyap_r():
    nolds = import_nolds()
    assert callable(nolds.lyap_r)


def test_broken_nolds_import_names_the_fix(monkeypatch):
    # nolds 0.6.3 on Python 3.11 fails inside its own import with a TypeError; simulate that
    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "nolds" or name.startswith("nolds."):
            raise TypeError("'nolds.datasets' is not a package")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "nolds", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ImportError, match=r"nolds could not be imported on Python 3\.\d+ .*fix: pip install 'nolds"):
        import_nolds()


def test_import_dsrecon_does_not_import_nolds_or_reservoirpy():
    import subprocess

    code = "import sys, dsrecon; dsrecon.load; print('nolds' in sys.modules, 'reservoirpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
