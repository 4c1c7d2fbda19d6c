"""torchrun entry point for the DDP divergence test: the process of rank 1 gets a NaN loss."""

import os
import sys

from dvbpr import cli
from dvbpr.model import DVBPR

if os.environ.get("RANK") == "1":
    forward = DVBPR.forward
    DVBPR.forward = lambda *a, **k: forward(*a, **k) * float("nan")
sys.exit(cli.main(sys.argv[1:]))
