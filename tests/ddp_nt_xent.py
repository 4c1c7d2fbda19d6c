"""torchrun entry point for the distributed crop-loss test: each process takes its share of the
same crops, and the gradients of `nt_xent` with `gather_rows`, averaged as DDP averages them, must
be those of one process computing the loss over all the crops. Exit 0 when they are."""

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dvbpr.distributed import Dist, gather_rows
from dvbpr.model import nt_xent

dist.init_process_group("gloo")
d = Dist(dist.get_rank(), dist.get_world_size())
n, dim = 3, 8  # images per process; every process holds both views of its own images
torch.manual_seed(0)  # the same crops everywhere: view 1 and view 2 of world * n images
views = F.normalize(torch.randn(2, d.world, n, dim), dim=-1)

# One process, the whole batch: rows [view 1 of all images; view 2 of all images].
whole = views.reshape(2, d.world * n, dim).reshape(-1, dim).clone().requires_grad_(True)
nt_xent(whole, 0.2).backward()
expected = whole.grad.reshape(2, d.world, n, dim)[:, d.rank].reshape(-1, dim)

# This process: rows [view 1 of its images; view 2 of its images], the others' as candidates.
mine = views[:, d.rank].reshape(-1, dim).clone().requires_grad_(True)
loss = nt_xent(mine, 0.2, gather_rows(d))
loss.backward()
got = mine.grad / d.world  # DDP averages the processes' gradients
total = loss.detach().clone()
dist.all_reduce(total)  # and the mean over processes of their losses is the whole batch's loss
whole_loss = nt_xent(whole.detach(), 0.2)
ok = torch.allclose(got, expected, atol=1e-6) and torch.allclose(total / d.world, whole_loss, atol=1e-6)
# the check is not vacuous: without gather each process sees only its own crops
alone = mine.detach().clone().requires_grad_(True)
nt_xent(alone, 0.2).backward()
differs = not torch.allclose(alone.grad, expected * d.world, atol=1e-4)
print(f"rank {d.rank}: max gradient error {(got - expected).abs().max().item():.2e}, local-only differs: {differs}")
dist.destroy_process_group()
sys.exit(0 if ok and differs else 1)
