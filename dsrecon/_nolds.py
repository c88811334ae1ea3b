"""Lazy import of nolds, the reference implementation of Rosenstein's lambda_max.

nolds is imported only when a reference computation asks for it, so that ``import dsrecon`` never
fails because of it. nolds 0.6.3 fails at import on Python 3.11 (``'nolds.datasets' is not a
package``); the package metadata pins 0.6.2 there (with ``setuptools<82`` for its
``pkg_resources``) and 0.6.3+ on 3.12+. If a user's environment still breaks, the error says how to
fix it instead of showing nolds' traceback.
"""

from __future__ import annotations

import sys
import warnings


def import_nolds():
    """Return the ``nolds`` module, or raise ``ImportError`` with the fix for this Python."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            import nolds
    except Exception as err:  # nolds raises TypeError/ModuleNotFoundError, not only ImportError
        if sys.version_info < (3, 12):
            fix = "pip install 'nolds==0.6.2' 'setuptools<82'"
        else:
            fix = "pip install 'nolds>=0.6.3'"
        raise ImportError(
            f"nolds could not be imported on Python {sys.version_info.major}."
            f"{sys.version_info.minor} ({type(err).__name__}: {err}); fix: {fix}"
        ) from err
    return nolds
