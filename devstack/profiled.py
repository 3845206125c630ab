"""`python -m devstack.profiled OUTPUT MODULE [ARG ...]`: run `python -m MODULE` under
pyinstrument and save the profile session to OUTPUT when it exits.

pyinstrument's own command line saves nothing when the program dies of SIGTERM, which
is how uvicorn ends after its graceful shutdown (it re-raises the signal with the
handler it found). Here that handler turns SIGTERM into a normal exit first.
"""

import runpy
import signal
import sys
from types import FrameType

from pyinstrument import Profiler


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    output, module, *args = sys.argv[1:]
    signal.signal(signal.SIGTERM, _exit)
    # 10 ms between samples: a cost small enough to profile a process while it is measured.
    profiler = Profiler(interval=0.01, async_mode="disabled")
    sys.argv = [module, *args]
    profiler.start()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        profiler.stop().save(output)


if __name__ == "__main__":
    main()
