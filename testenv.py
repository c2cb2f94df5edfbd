"""Pytest plugin loaded first (-p testenv): a throwaway secret so settings load with DEBUG off."""

import os
import signal

os.environ.setdefault(
    "SECRET_KEY", "test-only-secret-key-not-for-production-0123456789"
)
# The test client and the browser tests' live server speak plain HTTP.
os.environ.setdefault("INSECURE_HTTP", "1")
os.environ.setdefault("VAR_DIR", os.path.join(os.path.dirname(__file__), "var", "test"))
# WhiteNoise warns on every request when STATIC_ROOT is missing (tests never collect).
os.makedirs(os.path.join(os.environ["VAR_DIR"], "staticfiles"), exist_ok=True)
# See manage.py: long-spinning OpenMP threads make tiny models crawl on a busy machine.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")


def _unwind(signum, frame):
    """Raise KeyboardInterrupt: pytest then unwinds as it does for Ctrl-C."""
    raise KeyboardInterrupt(f"signal {signum}")


# SIGTERM (a `timeout` around the suite, a runner giving up) would otherwise end
# pytest at once, skipping every `finally` and fixture teardown, and leave what
# the running test started (a whole `make run` stack, in its own process group)
# serving on. As Ctrl-C, the test's cleanup runs and the summary says so.
if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _unwind)
