"""Async tests run with plain asyncio.run (no plugin), each under a time limit."""

import asyncio
import inspect
import os
from typing import Any

import pytest

TEST_TIMEOUT_S = float(os.environ.get("FLOWMESH_TEST_TIMEOUT", "120"))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: Any) -> Any:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def limited() -> None:
        await asyncio.wait_for(fn(**kwargs), TEST_TIMEOUT_S)

    asyncio.run(limited())
    return True
