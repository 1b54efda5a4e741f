"""Listing, deleting and purging resources: the native calls shared by the
stream, queue and KV clients (each names its own resource kind)."""

from __future__ import annotations

import ctypes
from typing import Callable, List

from ._core import Call
from ._errors import check
from ._native import lib
from ._util import resource, scope


def list_names(function: str, operation: str, tenant: str, namespace: str, prefix: str) -> Callable[[int, Call], List[str]]:
    """A pool work function listing names under ``prefix`` in the namespace;
    it returns the names without their "tenant/namespace/" part, sorted."""
    qualified = scope(tenant, namespace, prefix)
    strip = len(qualified) - len(prefix.encode())

    def work(h: int, _: Call) -> List[str]:
        out = ctypes.c_void_p()
        check(getattr(lib(), function)(h, qualified, ctypes.byref(out)), operation)
        try:
            count = lib().fm_strings_len(out.value)
            return [lib().fm_strings_get(out.value, i)[strip:].decode() for i in range(count)]
        finally:
            lib().fm_strings_free(out.value)

    return work


def delete(function: str, operation: str, tenant: str, namespace: str, name: str) -> Callable[[int, Call], None]:
    qualified = resource(tenant, namespace, name)

    def work(h: int, _: Call) -> None:
        check(getattr(lib(), function)(h, qualified), operation)

    return work


def purge(function: str, operation: str, tenant: str, namespace: str, name: str) -> Callable[[int, Call], int]:
    qualified = resource(tenant, namespace, name)

    def work(h: int, _: Call) -> int:
        removed = ctypes.c_uint64()
        check(getattr(lib(), function)(h, qualified, ctypes.byref(removed)), operation)
        return int(removed.value)

    return work
