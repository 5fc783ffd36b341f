"""The built-in policies, each configured by its own config fields (not ``plugins``).

========================  ========  ============================  ======================
policy                    priority  phases                        config
========================  ========  ============================  ======================
``security_headers``      2100      on_headers                    ``security_headers``
``cors``                  2000      on_headers                    ``cors``
``body_limit``            1900      on_headers                    ``max_body_size``
``client_cert``           1600      before_upstream               ``listen.tls``
``jwt``                   1450      on_request, before_upstream   ``auth_required``, ``jwt``
``rate_limit``            910       on_request                    ``rate_limit``
========================  ========  ============================  ======================

Higher runs first within a phase, so a 413 from the body limit already carries the
security and CORS headers. Plugins without a priority of their own run at 800, after
all of these.
"""

from .body_limit import BodyLimit
from .client_cert import ClientCertificate
from .cors import CorsPolicy
from .jwt import JwtPolicy
from .ratelimit import RateLimitPolicy
from .security_headers import SecurityHeaders

__all__ = [
    "BodyLimit",
    "ClientCertificate",
    "CorsPolicy",
    "JwtPolicy",
    "RateLimitPolicy",
    "SecurityHeaders",
]
