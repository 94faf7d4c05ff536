"""Data-parallel training under ``torchrun`` (SPEC §11).

``torchrun --nproc_per_node N -m spinerank train ...`` starts N processes; each
reads RANK, WORLD_SIZE and LOCAL_RANK from its environment. :func:`session`
joins them into one process group (gloo for ``--device cpu``, NCCL for
``--device cuda`` with process LOCAL_RANK on GPU LOCAL_RANK) and always leaves
it again; :class:`Context` is what the trainer asks of it:

* each rank trains on its own shard of every epoch's shuffled order
  (``DistributedSampler``; batch_size is per process), with its own
  augmentation and dropout streams;
* the model is wrapped in DistributedDataParallel (optionally with
  SyncBatchNorm); the ranking loss gathers scores from every rank
  (``global_pairs``);
* rank 0 alone validates, prints and writes files; the validation result is
  broadcast, so every rank takes the same early-stopping decisions, and a
  barrier after each checkpoint lets the others read what rank 0 wrote (the
  run folder must be visible to every rank: one machine or a shared disk).

Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op and
training is exactly the single-process run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Context:
    """This process's place in the run: rank 0 of 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The training device: with several processes, "cuda" means GPU LOCAL_RANK."""
        if name == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return torch.device(name)

    def local_config(self, config):
        """The config this rank runs with: progress bars and prints on rank 0 only."""
        return config if self.is_main else dataclasses.replace(config, progress=False)

    def seed_parts(self) -> tuple[int, ...]:
        """Extra seed parts for per-sample random streams (augmentation, dropout):
        without them every rank would draw the same numbers for its own samples."""
        return (self.rank,) if self.enabled else ()

    def sampler(self, dataset, seed: int):
        """One epoch's training order, a permutation seeded by ``seed``.

        Single process: a RandomSampler. Several: DistributedSampler draws the
        same permutation (``seed + epoch`` with epoch 0, ``torch.randperm``),
        pads it to a multiple of world_size by repeating its start, and gives
        rank r the positions r, r + W, ...: step k of the W ranks together sees
        the batch a single process with W times the batch size would see."""
        if not self.enabled:
            return torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        return torch.utils.data.DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                                   shuffle=True, seed=seed)

    def wrap_model(self, model: torch.nn.Module, config, device: torch.device) -> torch.nn.Module:
        """The module the training step calls: ``model`` itself, or a DDP wrapper
        sharing its parameters (checkpoints keep using ``model``'s state_dict)."""
        if not self.enabled:
            return model
        if config.sync_batchnorm:
            if device.type != "cuda":
                raise ValueError("config: sync_batchnorm needs --device cuda (torch's SyncBatchNorm has no "
                                 "CPU implementation); set sync_batchnorm false for CPU runs")
            # Replaces the BatchNorm children in place; parameters, buffers and state_dict keys stay.
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # Phase 1 leaves the ranking heads out of the loss (and a method may leave
        # other heads out), so DDP must not wait for their gradients.
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (every rank gets it)."""
        if not self.enabled:
            return value
        total = torch.tensor(float(value), dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(total)
        return total.item() / self.world_size

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def on_main(self, fn, *args):
        """``fn(*args)`` run on rank 0 only, its result sent to every rank. If it
        raises, every rank raises (the others a RuntimeError quoting it), so no
        rank waits for a result that will never come."""
        if not self.enabled:
            return fn(*args)
        box: list = [None]
        error = None
        if self.is_main:
            try:
                box[0] = (True, fn(*args))
            except Exception as exc:  # re-raised below, after the others are told
                error = exc
                box[0] = (False, f"{type(exc).__name__}: {exc}")
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        ok, value = box[0]
        if error is not None:
            raise error
        if not ok:
            raise RuntimeError(f"rank 0 failed: {value}")
        return value


def context() -> Context:
    """The context of the initialised default process group, else single-process."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Context()


@contextlib.contextmanager
def session(device: str, timeout_s: float):
    """Joins the torchrun process group for the duration of the block, then
    destroys it, also on errors. ``timeout_s`` bounds every collective: a rank
    that stops answering makes the others fail instead of hanging.

    A no-op (single process) without torchrun's WORLD_SIZE > 1, or when the
    caller has already initialised a process group (it stays the caller's)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not dist.is_available() or dist.is_initialized():
        yield context()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank}, but this machine has {torch.cuda.device_count()} CUDA "
                             "device(s): start at most that many processes per node (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield context()
    finally:
        # DDP's reducer keeps the process group alive from inside reference
        # cycles; a gloo group destroyed only at interpreter exit aborts the
        # process ("terminate called without an active exception", measured in
        # about 1 run in 5). Collect them while the group can still shut down.
        gc.collect()
        dist.destroy_process_group()
