"""Makes this interpreter look like a base install (``pip install -e .``, no extras): the
modules of every distribution outside lossatlas's own requirements fail to import.

Put this folder on PYTHONPATH with LOSSATLAS_BLOCKED_MODULES (comma-separated top-level names,
from conftest.base_install_env); child processes inherit both.
"""

import os
import sys

_BLOCKED = frozenset(filter(None, os.environ.get("LOSSATLAS_BLOCKED_MODULES", "").split(",")))


class _NotInTheBaseInstall:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(
                f"No module named {name!r} (outside the base install)", name=name
            )
        return None


if _BLOCKED:
    sys.meta_path.insert(0, _NotInTheBaseInstall())
