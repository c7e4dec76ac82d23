"""A stand-in for the smoke-test child that misbehaves: ``crash`` (SIGSEGV, as a backend's
native code would) or ``hang`` (never answers). ``python tests/ota_probe_faults.py MODE BUNDLE
[--backend B] [--profile P]``; ``pass-through`` runs the real probe."""

from __future__ import annotations

import os
import signal
import sys
import time

if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "hang":
        while True:
            time.sleep(60)
    from edge_runtime.ota.probe import main

    sys.exit(main(rest))
