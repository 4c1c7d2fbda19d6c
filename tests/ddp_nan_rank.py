"""torchrun entry point for the DDP divergence test: the process of rank 1 gets a NaN loss."""

import os
import sys

import dvbpr.train as train_module
from dvbpr import cli

if os.environ.get("RANK") == "1":
    train_module.bpr_loss = lambda x: (x * float("nan")).sum()
sys.exit(cli.main(sys.argv[1:]))
