"""Rules that span several routes or sections of a configuration.

Each function returns a list of `FieldError` (empty when all is well) so callers can
report every problem at once. Rules about one field or one model live on the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .auth import REDACTED, secret_problem
from .errors import FieldError
from .paths import PathTemplate
from .route import Router

if TYPE_CHECKING:
    from .config import GatewayConfig

__all__ = ["auth_errors", "duplicate_route_errors"]


def duplicate_route_errors(
    routes: Sequence[Router], templates: Sequence[PathTemplate] | None = None
) -> list[FieldError]:
    """Routes with the same path pattern (placeholder names ignored) and a shared method.

    ``templates`` are the routes' parsed external paths when the caller already has
    them; otherwise they are parsed here.
    """
    if templates is None:
        templates = [route.external_template() for route in routes]
    first_by_shape: dict[tuple[str, ...], list[int]] = {}
    errors: list[FieldError] = []
    for index, (route, template) in enumerate(zip(routes, templates, strict=True)):
        earlier = first_by_shape.setdefault(template.shape, [])
        for other in earlier:
            shared = [m for m in route.methods if m in routes[other].methods]
            if shared:
                errors.append(
                    FieldError(
                        ("routers", index, "external_path"),
                        f"routers[{other}] and routers[{index}] both route "
                        f"{', '.join(shared)} {routes[other].external_path!r}"
                        + (
                            f" (same pattern as {route.external_path!r})"
                            if route.external_path != routes[other].external_path
                            else ""
                        ),
                    )
                )
        earlier.append(index)
    return errors


def auth_errors(config: GatewayConfig, *, redacted: bool = False) -> list[FieldError]:
    """JWT key problems: conflicting secrets; a missing or weak key when auth is used.

    With ``redacted`` (the config is a redacted dump), a secret that is exactly ``"***"``
    is set but unknown, so its strength is not judged. Messages never include the
    secret itself.
    """
    jwt = config.jwt
    jwt_secret = config.jwt_secret
    jwt_secret_in_block = None if jwt is None else jwt.secret
    has_public_key = jwt is not None and (jwt.public_key is not None or jwt.jwks_url is not None)
    errors: list[FieldError] = []
    if (
        jwt_secret is not None
        and jwt_secret_in_block is not None
        and jwt_secret.get_secret_value() != jwt_secret_in_block.get_secret_value()
    ):
        errors.append(
            FieldError(("jwt", "secret"), "differs from jwt_secret; keep only one of them")
        )
    if jwt_secret is not None and has_public_key:
        errors.append(
            FieldError(("jwt_secret",), "is unused: jwt verifies with a public key; remove it")
        )
    protected = [i for i, route in enumerate(config.routers) if route.auth_required]
    if not protected:
        return errors
    secrets = [(("jwt_secret",), jwt_secret), (("jwt", "secret"), jwt_secret_in_block)]
    if not has_public_key and all(secret is None for _, secret in secrets):
        errors.append(
            FieldError(
                (),
                f"routers[{protected[0]}] has auth_required but no JWT key is configured: "
                "set jwt_secret, jwt.secret, jwt.public_key or jwt.jwks_url",
            )
        )
    for loc, secret in secrets:
        if secret is None or (redacted and secret.get_secret_value() == REDACTED):
            continue
        problem = secret_problem(secret.get_secret_value())
        if problem is not None:
            errors.append(FieldError(loc, problem))
    return errors
