"""Claire de Binare.

httpx imports its command-line client (``httpx._main``: click, rich, pygments; about
7 MiB per process) whenever those happen to be installed, and no service uses it. A
``None`` entry in ``sys.modules`` makes that one import fail, and httpx falls back to
what it does without its ``cli`` extra. Everything of httpx a service uses is untouched;
tests/kernel/test_service_imports.py keeps rich out of the services.
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
