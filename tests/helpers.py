"""Shared test helpers. Every wait has a deadline; there are no bare sleep loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "",
) -> T:
    """Call `predicate` until it returns something truthy, and return that; exceptions it
    raises count as "not yet". Fails the test with `message` and the last error at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # "not yet" while the system converges
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(
                f"timed out after {timeout}s waiting for {message or predicate}{detail}"
            )
        time.sleep(interval)


async def async_wait_for(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "",
) -> T:
    """`wait_for` for coroutines."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = await predicate()
            if value:
                return value
        except Exception as e:
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(
                f"timed out after {timeout}s waiting for {message or predicate}{detail}"
            )
        await asyncio.sleep(interval)


def running_pod(core_v1: Any, namespace: str, *, timeout: float = 60) -> Any:
    """The first Running pod in `namespace` (a CoreV1Api is passed in, to keep this module
    free of a client of its own)."""
    return wait_for(
        lambda: next(
            (
                p
                for p in core_v1.list_namespaced_pod(namespace).items
                if p.status.phase == "Running"
            ),
            None,
        ),
        timeout=timeout,
        message=f"a Running pod in {namespace}",
    )


def service_account_with_rules(
    api: Any, namespace: str, name: str, rules: list[dict[str, Any]]
) -> None:
    """A ServiceAccount `name` in `namespace`, bound to a Role of the same name with `rules`."""
    import kubernetes

    core = kubernetes.client.CoreV1Api(api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
