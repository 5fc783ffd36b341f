import subprocess
import sys
from pathlib import Path

import kairos_client
import pytest

MODULES = sorted(
    f"kairos_client.{path.stem}"
    for path in Path(kairos_client.__file__).parent.glob("*.py")
    if path.stem != "__init__"
)


def test_all_names_exist() -> None:
    assert sorted(kairos_client.__all__) == sorted(set(kairos_client.__all__))
    for name in kairos_client.__all__:
        assert hasattr(kairos_client, name), name


def test_the_package_is_typed() -> None:
    assert (Path(kairos_client.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_first_without_cycle(module: str) -> None:
    # Importing each module first in a fresh interpreter exposes import cycles.
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def test_the_client_never_imports_the_gateway() -> None:
    code = "import sys, kairos_client; assert 'kairos_gateway' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
