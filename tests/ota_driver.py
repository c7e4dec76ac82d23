"""``python -m tests.ota_driver CONFIG.json [--kill-at STAGE] [--fsize-after-download N]``: run
one update check the way ``edge-runtime update`` does, with faults a test asks for:

- ``--kill-at STAGE``: SIGKILL this process right after the install passed STAGE (downloaded,
  extracted, smoke-tested, switched): a power cut at that boundary;
- ``--fsize-after-download N``: once the bundle is downloaded, no file this process writes may
  grow past N bytes (RLIMIT_FSIZE, which needs no root): the disk fills up during extraction.

CONFIG.json holds the ``[update]`` section's fields. Exit status: the agent's (0, 10, 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys

from edge_runtime.config import UpdateConfig
from edge_runtime.ota.agent import UpdateAgent
from edge_runtime.ota.errors import OtaError


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--kill-at")
    parser.add_argument("--fsize-after-download", type=int)
    args = parser.parse_args()
    section = UpdateConfig.model_validate(json.loads(open(args.config).read()))

    def hook(stage: str) -> None:
        if stage == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if stage == "downloaded" and args.fsize_after_download:
            # Past the limit a write fails with EFBIG (instead of the default SIGXFSZ kill),
            # as it fails with ENOSPC on a full disk.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            limit = args.fsize_after_download
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    agent = UpdateAgent(section, profile=None, runtime_version="0.1.0", hook=hook)
    try:
        result = agent.check()
    except OtaError as exc:
        print(exc.reason, file=sys.stderr)
        return exc.exit_code
    print(result.detail)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
