"""Distributed data-parallel training through torchrun: the launcher, the process group, and what ranks share.

``launch`` runs torchrun (``torch.distributed.run``, in this process) over a training
command: torchrun starts the workers, forwards SIGTERM and SIGINT to them, and stops them
all when one fails. Each worker opens a ``distributed_session`` (NCCL on GPUs, Gloo on
CPU) whose ``DistributedContext`` knows its rank and carries the few collectives that let
every rank take each decision of a run (stop, divergence, early stopping) at the same batch.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.core.device import plan_device, uses_cuda
from engine.core.errors import ConfigError
from engine.training.runfolder import RunFolder

# How long a collective waits for a slow rank: rank 0 validates alone while the others
# wait, and a first run fills the feature cache before anyone trains. A rank that dies
# does not make the others wait this long: torchrun stops them all when it sees the death.
COLLECTIVE_TIMEOUT = timedelta(hours=1)

LAUNCH_FLAGS: tuple[str, ...] = (
    "--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port",
    "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--rdzv-conf",
)
"""The ``train`` options that configure torchrun rather than the run; each takes a value."""

# Set by torchrun in every worker it starts.
_WORKER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class LaunchOptions:
    """How torchrun spreads one training run over processes and machines.

    The fields are torchrun's flags of the same names; None leaves torchrun's default.
    With none of the machine settings the run stays on this machine, on a private
    rendezvous at a free port (``--standalone``), so that runs side by side never collide.

    Attributes:
        nproc: processes on this machine (one per GPU; on CPU each gets an equal share of the cores).
        nnodes: machines taking part, ``N`` or an elastic range ``MIN:MAX``.
        node_rank: this machine's rank for a static rendezvous; rank 0's machine writes the run folder.
        master_addr: address of the node-rank-0 machine (static rendezvous).
        master_port: a free port on that machine (static rendezvous).
        rdzv_backend: rendezvous backend, e.g. ``c10d`` (elastic; any machine may start first).
        rdzv_endpoint: ``HOST:PORT`` of the rendezvous.
        rdzv_id: a job id, the same on every machine of the run.
        rdzv_conf: extra rendezvous settings, ``key=value,...``.
    """

    nproc: int
    nnodes: str | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_backend: str | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    rdzv_conf: str | None = None

    def __post_init__(self) -> None:
        if self.nproc < 1:
            raise ConfigError(f"--nproc: must be >= 1 processes per machine, got {self.nproc}")

    @classmethod
    def from_namespace(cls, arguments: argparse.Namespace) -> LaunchOptions | None:
        """The options parsed by ``main.py train`` (attributes named like the fields); None without ``--nproc``.

        Raises:
            ConfigError: a machine option was given without ``--nproc``.
        """
        values = {option.name: getattr(arguments, option.name, None) for option in fields(cls)}
        nproc = values["nproc"]
        if nproc is None:
            given = [f"--{name.replace('_', '-')}" for name, value in values.items() if value is not None]
            if given:
                raise ConfigError(f"{given[0]}: configures torchrun, so it needs --nproc N (processes per machine)")
            return None
        return cls(
            nproc=nproc, nnodes=values["nnodes"], node_rank=values["node_rank"], master_addr=values["master_addr"],
            master_port=values["master_port"], rdzv_backend=values["rdzv_backend"],
            rdzv_endpoint=values["rdzv_endpoint"], rdzv_id=values["rdzv_id"], rdzv_conf=values["rdzv_conf"],
        )

    def machine_flags(self) -> list[str]:
        """torchrun's flags for the settings given, e.g. ``["--nnodes=2", "--node-rank=1"]``."""
        flags = []
        for option in fields(self):
            value = getattr(self, option.name)
            if option.name != "nproc" and value is not None:
                flags.append(f"--{option.name.replace('_', '-')}={value}")
        return flags

    def describe(self) -> str:
        """One line, e.g. ``2 processes on this machine`` or ``2 processes per machine, --nnodes=2 ...``."""
        flags = self.machine_flags()
        plural = "es" if self.nproc != 1 else ""
        if not flags:
            return f"{self.nproc} process{plural} on this machine"
        return f"{self.nproc} process{plural} per machine, {' '.join(flags)}"


def torchrun_arguments(options: LaunchOptions, script: str | Path, script_args: Sequence[str]) -> list[str]:
    """torchrun's command line (after ``python -m torch.distributed.run``) that runs ``script`` under ``options``."""
    flags = options.machine_flags()
    standalone = [] if flags else ["--standalone"]
    return [f"--nproc-per-node={options.nproc}", *standalone, *flags, str(script), *map(str, script_args)]


def torchrun_command(options: LaunchOptions, script: str | Path, script_args: Sequence[str]) -> list[str]:
    """The whole command, ``python -m torch.distributed.run ...``: what ``launch`` runs, for logs and docs."""
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_arguments(options, script, script_args)]


def worker_arguments(argv: Sequence[str], *, run_dir: str | Path | None) -> list[str]:
    """The command line every worker runs: ``argv`` without the launch options, with ``--run-dir`` fixed.

    Args:
        argv: the launching command's arguments (``train DATA ... --nproc 2``), without the program.
        run_dir: the run folder the launcher chose, appended as ``--run-dir``; None adds nothing
            (``--resume`` names its folder itself).
    """
    # Parsed rather than matched as text: ``--nproc=2``, ``--nproc 2`` and abbreviations all go.
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    for flag in LAUNCH_FLAGS:
        parser.add_argument(flag)
    _, rest = parser.parse_known_args(list(argv))
    return [*rest, "--run-dir", str(run_dir)] if run_dir is not None else rest


def launch(options: LaunchOptions, script: str | Path, script_args: Sequence[str]) -> int:
    """Run ``script`` under torchrun with ``options``, in this process, and return an exit code.

    torchrun's own entry point (``torch.distributed.run.main``) does all the process work: it
    starts the workers, forwards SIGTERM and SIGINT to them (a Transfer Studio worker stops
    cleanly on either, saving its checkpoint), and when one worker fails it stops the others
    and prints which failed and why. Unless ``OMP_NUM_THREADS`` is set, each worker gets an
    equal share of this machine's cores (torchrun alone would give each one thread).

    Returns:
        0 when every worker finished; 1 when one failed; 128 + N when this process received
        signal N (after the workers were asked to stop).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, _available_cores() // options.nproc))
    try:
        torchrun(torchrun_arguments(options, script, script_args))
    except ChildFailedError:
        return 1
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    return 0


def launch_training(
    options: LaunchOptions,
    script: str | Path,
    argv: Sequence[str],
    *,
    run_dir: str | Path | None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Run a ``train`` command line again in every process torchrun starts, all writing one run folder.

    Args:
        options: processes and machines.
        script: ``main.py``.
        argv: the command's arguments (``train DATA ... --nproc 2``); the launch options are
            dropped from what the workers get.
        run_dir: the run folder the launcher chose (rank 0 writes it), or None when ``argv``
            names it (``--run-dir``, ``--resume``) or rank 0 may choose.
        log: receives one line saying what starts, e.g. ``print``.

    Returns:
        The exit code (see ``launch``).

    Raises:
        CheckpointError: ``run_dir`` already holds a run.
    """
    if run_dir is not None:
        RunFolder.check_free(run_dir)
    if log is not None:
        log(f"torchrun: {options.describe()}" + (f"; run folder: {run_dir}" if run_dir is not None else ""))
    return launch(options, script, worker_arguments(argv, run_dir=run_dir))


def launched_by_torchrun() -> bool:
    """True in a worker that torchrun started (its rank variables are set)."""
    return all(name in os.environ for name in _WORKER_VARIABLES)


def is_main_process() -> bool:
    """True outside torchrun, and in its rank-0 worker: the process that writes and prints."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a run, and the collectives its ranks share.

    The default is a single process (``enabled`` false): ``wrap`` returns the model as it
    is, and nothing calls the collectives.

    Attributes:
        rank: this process among all of them; rank 0 writes the run folder.
        world_size: processes in the run, on every machine.
        local_rank: this process among those of its machine (its GPU, on CUDA).
        local_world_size: processes on this machine.
        backend: ``nccl`` or ``gloo``; None for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True in a distributed run (even of one process), where ranks must agree."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one process that writes the run folder and validates."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where collective tensors live: this process's GPU for NCCL, the CPU for Gloo."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the loop runs: ``model`` in DistributedDataParallel, which averages gradients across ranks."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # Buffers are synced once, at the start, not before every forward pass: rank 0 alone
        # validates and saves, with its own BatchNorm statistics either way (syncing would only
        # copy them to the others), and passes free of collectives let it validate alone.
        return DistributedDataParallel(
            model, device_ids=[self.local_rank] if self.backend == "nccl" else None, forward_sync_buffers=False,
        )

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``values`` over all ranks (a new tensor, on ``values``' device)."""
        import torch.distributed as dist

        reduced = values.detach().to(self.device, copy=True)
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced.to(values.device)

    def all_reduce_max(self, value: int) -> int:
        """The largest ``value`` any rank passed."""
        import torch.distributed as dist

        reduced = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
        return int(reduced.item())

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text``, on every rank (the others' ``text`` is ignored)."""
        import torch.distributed as dist

        data = text.encode("utf-8")
        length = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(length, src=0)
        if not length.item():
            return ""
        buffer = torch.zeros(int(length.item()), dtype=torch.uint8, device=self.device)
        if self.is_main:
            buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buffer, src=0)
        return bytes(buffer.cpu().tolist()).decode("utf-8")

    def describe(self) -> dict[str, Any]:
        """Rank, world size and backend, for events."""
        return {"rank": self.rank, "world_size": self.world_size, "backend": self.backend}


SINGLE_PROCESS = DistributedContext()
"""The context of an ordinary, single-process run."""


@contextlib.contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistributedContext]:
    """Join the process group of the torchrun worker this is, for the block; outside torchrun, ``SINGLE_PROCESS``.

    NCCL when the run uses CUDA (each process on GPU ``LOCAL_RANK``), Gloo on CPU. The group
    is left when the block ends cleanly; after an error the process is about to exit, and
    leaving could wait on ranks that are gone. A group the caller set up is used and kept.

    Args:
        device: the config's ``device`` (``auto``, ``cpu`` or ``cuda``).

    Raises:
        ConfigError: CUDA is used and this machine has fewer GPUs than processes, or the device is Apple MPS.
    """
    if not launched_by_torchrun():
        yield SINGLE_PROCESS
        return
    import torch.distributed as dist

    local_rank, local_world_size = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    if plan_device(device).device.type == "mps":
        raise ConfigError("--nproc: Apple MPS trains in one process (PyTorch has no process group for it); "
                          "drop --nproc, or use device: cpu")
    cuda = uses_cuda(device)
    if cuda:
        visible = torch.cuda.device_count()
        if local_world_size > visible:
            raise ConfigError(
                f"--nproc: {local_world_size} processes on this machine need a GPU each, but {visible} are visible; "
                f"use --nproc {visible}, or device: cpu")
        torch.cuda.set_device(local_rank)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    yield DistributedContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
        local_world_size=local_world_size, backend=str(dist.get_backend()),
    )
    if owned:
        # A DDP wrapper alive when the group is destroyed, or left in a reference cycle that
        # is collected after it, hung Gloo's shutdown or aborted the process at exit in about
        # 1 run in 4 here ("terminate called without an active exception"); collected
        # first, none did in 50.
        gc.collect()
        dist.destroy_process_group()


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform (macOS)
        return os.cpu_count() or 1
