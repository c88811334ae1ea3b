"""``dsrecon.compare``: the public verb; the implementation is the ``dsrecon.comparison`` package.

This module only re-exports. Import the parts from ``dsrecon.comparison`` (``CompareResult``,
``load_grid``, ...), not from here: importing a submodule named ``compare`` binds the module to
the attribute ``dsrecon.compare`` and would shadow the lazily resolved function.
"""

from dsrecon.comparison import CompareResult, compare

__all__ = ["compare", "CompareResult"]
