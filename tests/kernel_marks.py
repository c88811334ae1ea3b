"""Whether the C kernel builds in this test session, and the mark that skips the tests needing it.

Built at import (once per session; the cache goes to the session's folder, ``conftest.py``), without
the one-line fallback warning of :func:`dsrecon.fast._kernels.available`.
"""

from __future__ import annotations

import pytest

from dsrecon.fast import _kernels


def _kernel_builds() -> bool:
    try:
        _kernels.c_library()
        return True
    except RuntimeError:
        return False


KERNEL_BUILDS = _kernel_builds()
needs_kernel = pytest.mark.skipif(not KERNEL_BUILDS, reason="no C compiler: the C kernel cannot be built")
