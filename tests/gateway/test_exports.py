"""The gateway's public face, and no import cycles between its modules."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import kairos_gateway
import kairos_gateway.upstream

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(kairos_gateway.__path__, "kairos_gateway.")
    if m.name != "kairos_gateway.__main__"
)


def test_all_names_exist() -> None:
    for package in (kairos_gateway, kairos_gateway.upstream):
        assert len(package.__all__) == len(set(package.__all__))
        for name in package.__all__:
            assert hasattr(package, name), f"{package.__name__}.{name}"


def test_each_module_imports_first_without_a_cycle() -> None:
    # One interpreter; before each import every kairos_gateway module is forgotten, so
    # each module is imported first in turn, which is what exposes an import cycle.
    script = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('kairos_gateway')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_gateway_never_imports_later_packages_or_unused_features() -> None:
    # The data plane depends on kairos_core only, never on the client, CLI or UI; and
    # what only some configs use (aiohttp for JWKS, pyjwt and cryptography for JWT,
    # redis-py for Redis limits and cluster mode) loads only when configured: ~20 MB of
    # resident memory a gateway without them does not pay.
    script = (
        "import sys, kairos_gateway, kairos_gateway.cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('kairos_client', 'kairos_cli', 'kairos_ui', 'aiohttp', 'jwt', 'redis',"
        " 'cryptography')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
