"""The function app's functions, built once per test process.

`FunctionApp.get_functions()` builds every function and registers its bindings; a second call on the same
app raises "does not have a unique function name", so tests share one build.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def app_functions() -> tuple[Any, ...]:
    import function_app

    return tuple(function_app.app.get_functions())
