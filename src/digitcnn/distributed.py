"""Processes and devices: one process by default, DistributedDataParallel when started by torchrun."""

import contextlib
import os
import sys

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup() -> None:
    """Joins the process group when torchrun started us (it sets WORLD_SIZE); does nothing otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def select_device(preference: str | None = None) -> torch.device:
    """The one place a device is chosen: `preference` if given ("cpu", "cuda", "cuda:1", "mps"), else CUDA
    (this process's local GPU under torchrun), then Apple's MPS, then the CPU."""
    if preference:
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def uneven_shards(network: nn.Module):
    """DDP's join: a process that runs out of batches first keeps answering the others' all-reduces."""
    if isinstance(network, nn.parallel.DistributedDataParallel):
        return network.join()
    return contextlib.nullcontext()


def wrap(model: nn.Module) -> nn.Module:
    """The module to call in training: DDP averages gradients across processes after each backward."""
    if world_size() == 1:
        return model
    return nn.parallel.DistributedDataParallel(model)


def share_buffers(model: nn.Module) -> None:
    """Rank 0's BatchNorm statistics to every process: DDP shares gradients, but each process's running
    statistics saw only its own last batches, and the ranks must end with identical models."""
    if world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def sum_tensor(value: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value


def progress_bar(total: int, description: str, verbose: bool):
    """A tqdm bar on an interactive terminal (main process only); None in logs, which get one line an epoch."""
    if not (verbose and is_main() and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="batch", leave=False, dynamic_ncols=True)
