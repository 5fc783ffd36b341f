import subprocess
import sys
from pathlib import Path

import kairos_core
import pytest

MODULES = sorted(
    f"kairos_core.{path.stem}"
    for path in Path(kairos_core.__file__).parent.glob("*.py")
    if path.stem != "__init__"
)


def test_all_names_exist() -> None:
    assert sorted(kairos_core.__all__) == sorted(set(kairos_core.__all__))
    for name in kairos_core.__all__:
        assert hasattr(kairos_core, name), name


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_first_without_cycle(module: str) -> None:
    # Importing each module first in a fresh interpreter exposes import cycles.
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
