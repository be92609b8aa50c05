"""Data parallelism on one node: the processes ``torchrun`` starts (one per GPU) and what they share.

A rule whose stage asks for ``gpus`` > 1 (``finetune.gpus``, ``classify.gpus``) launches its
command through ``python -m torch.distributed.run --standalone --nproc_per_node N`` (``launcher``);
each process calls :func:`init`, which joins the process group (NCCL on GPUs, gloo on CPUs) and
returns its :class:`World`. One process (no torchrun) is a World of size 1 and touches no
process group, so a single-GPU run is exactly the code path it always was.

How a global batch of B rows is split: rank r takes rows ``World.part(B)`` (contiguous, equal when
N divides B). Every random draw that is per row (noise, timesteps, flips, crops) is drawn for the
whole global batch from the shared seeded generator and sliced, so each rank's generator stays in
step with the others and N processes see the rows, noise and timesteps one process would.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .errors import DeviceError

log = logging.getLogger(__name__)


def granted_gpus(env=None) -> list[str]:
    """The GPUs the scheduler granted this job (``CUDA_VISIBLE_DEVICES``, which Slurm sets for
    ``--gpus``); empty when none were asked for."""
    visible = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES", "").strip()
    if not visible or visible == "-1" or visible.lower() == "nodevfiles":
        return []
    return [d for d in visible.split(",") if d.strip()]


def check_gpus(env=None, torch_cuda=None) -> None:
    """A job granted GPUs that torch cannot use stops at once, instead of training on the CPU for
    weeks: the node, the grant and torch's CUDA state are named (a driver older than the pinned
    CUDA build is the usual cause)."""
    granted = granted_gpus(env)
    if not granted:
        return
    import socket

    import torch

    cuda = torch_cuda or torch.cuda
    available = cuda.is_available()
    count = cuda.device_count() if available else 0
    if count < len(granted):
        raise DeviceError(
            f"this job was granted {len(granted)} GPU(s) (CUDA_VISIBLE_DEVICES={','.join(granted)}) on node "
            f"{socket.gethostname()}, but torch sees {count} (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda}, torch.cuda.is_available() = {available}): check the node's NVIDIA driver "
            "against that CUDA version (docs/cluster.md); stopping rather than running on the CPU")


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes of one job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs progress and writes checkpoints and artifacts."""
        return self.rank == 0

    def device(self):
        import torch

        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def part(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` rows (contiguous; sizes differ by at most 1)."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def average(self, tensors) -> None:
        """Average tensors (e.g. gradients) of one dtype over the processes, in place, in one flat
        all-reduce."""
        if self.size == 1:
            return
        import torch
        import torch.distributed as dist

        tensors = list(tensors)
        flat = torch.cat([t.reshape(-1).to(self.device()) for t in tensors])  # NCCL reduces GPU tensors only
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def broadcast(self, tensors) -> None:
        """Rank 0's values of ``tensors`` on every process (in place)."""
        if self.size == 1:
            return
        import torch.distributed as dist

        for t in tensors:
            dist.broadcast(t, 0)

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()


def init(gpus: int, key: str) -> World:
    """Join the job's processes. ``gpus`` is what the config asks for (``key`` names it); the
    process count torchrun started (WORLD_SIZE) must match, or the global batch would be wrong."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size != gpus:
        raise ValueError(f"config key {key} is {gpus} but this job runs {size} process(es): launch it through the "
                         f"workflow's rule (python -m torch.distributed.run --nproc_per_node {gpus} ...)")
    if size == 1:
        return World()
    import torch
    import torch.distributed as dist

    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    if torch.cuda.is_available():
        if torch.cuda.device_count() < size:
            raise ValueError(f"config key {key} is {gpus} but this node shows {torch.cuda.device_count()} GPU(s)")
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if not world.main:  # one progress log per job: the other ranks report warnings and errors only
        logging.getLogger().setLevel(logging.WARNING)
    log.info("data-parallel: %d processes (%s)", size, dist.get_backend())
    return world


def shutdown(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def launcher(gpus: int, module: str) -> str:
    """How a rule starts a stage's module: ``python -m <module>``, or torchrun (through its module,
    so the env's own Python runs it) with one process per GPU on this node. The ``--`` ends
    torchrun's options: without it torchrun would read the stage's own flags as abbreviations of its
    own (``--log`` is ambiguous with ``--log-dir``; a flag that abbreviated just one would be taken)."""
    if gpus <= 1:
        return f"python -m {module}"
    return f"python -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node {int(gpus)} -m {module} --"
