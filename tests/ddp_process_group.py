"""torchrun entry point for the process-group test: `process_group` joins the group torchrun
describes and leaves it at the end of its block (a process that exits with the group alive can
abort). Exit 0 when it does."""

import sys

import torch.distributed as dist

from dvbpr.distributed import process_group

with process_group("cpu") as d:
    joined = d.world == 2 and dist.is_initialized()
    dist.barrier()
left = not dist.is_initialized()
print(f"rank {d.rank}: joined {joined}, left {left}")
sys.exit(0 if joined and left else 1)
