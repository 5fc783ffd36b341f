"""`python -m kairos_gateway` is the same as `kairos-gateway`."""

from .cli import main

raise SystemExit(main())
