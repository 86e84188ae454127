"""DataLoaders and progress bars set up the one way that works with forked workers."""

from __future__ import annotations

import atexit
import contextlib
import functools
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from segmentation.data.io import limit_opencv_threads

# Set in the training process when a stop signal reached it (announce_stop); its workers,
# forked after this module was imported, read the same shared byte.
_stop_announced = multiprocessing.RawValue("b", 0)
# How long a worker that got SIGTERM waits to learn whether its process is stopping too: the
# training process's handler runs between two Python operations, after a long forward at worst.
WORKER_STOP_GRACE_SECONDS = 60.0


def announce_stop() -> None:
    """Tell this process's DataLoader workers that a SIGTERM they get too is the job's: this
    process finishes its step with their batches and saves, then ends them itself."""
    _stop_announced.value = 1


def _init_worker(worker_id: int) -> None:
    # Each worker decodes one image at a time; threads inside it would only fight each other.
    torch.set_num_threads(1)
    # A signal to the job's process group (Ctrl-C, `kill -- -PGID`, a scheduler's pre-emption
    # of the group) is the main process's to handle: it finishes the step and saves. A worker
    # that died of it first would take the step down with it. So workers leave the group; the
    # DataLoader still ends them by their own pid (SIGTERM) when it shuts down.
    with contextlib.suppress(OSError):
        os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A scheduler can also signal every process of the job by pid (SLURM's pre-emption, systemd's
    # control group): then the worker outlives the signal while its process finishes the step.
    signal.signal(signal.SIGTERM, functools.partial(_on_sigterm_in_worker, os.getppid()))


def _on_sigterm_in_worker(parent: int, signum: int, frame: object) -> None:
    """Outlive SIGTERM if the training process says it is stopping too (then it ends this
    worker once it has saved); otherwise (the DataLoader ending a stuck worker, an inference
    run stopped, the parent gone) die of it, as by default."""
    deadline = time.monotonic() + WORKER_STOP_GRACE_SECONDS
    while time.monotonic() < deadline and os.getppid() == parent:
        if _stop_announced.value:
            return
        time.sleep(0.01)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _end_workers_at_exit() -> None:
    # Workers left alive at exit (a loader never garbage-collected) are ended for good before
    # multiprocessing's own exit handler waits for them; atexit runs handlers last-registered
    # first, so this one runs before multiprocessing's.
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if not children:
        return
    # The DataLoader's SIGCHLD handler takes a worker killed by a signal for a crash and raises
    # in the middle of join (a traceback at the end of a run that went well): not these ones.
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()
        child.join(timeout=5)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    sampler: Sampler | None = None,
    collate_fn: Callable | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with `workers` decoding processes (kept alive between epochs), pinned
    memory for a GPU, and a private generator."""
    if workers:
        limit_opencv_threads()
        _register_exit_handler()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=drop_last,
        worker_init_fn=_init_worker,
        # The loader must not draw from the global torch RNG: checkpoints carry its state
        # (for dropout), and a resumed run must see the same draws.
        generator=torch.Generator(),
    )


@functools.cache
def _register_exit_handler() -> None:
    atexit.register(_end_workers_at_exit)


def progress_bar(
    total: int, desc: str, *, enabled: bool = True, initial: int = 0, unit: str = "it"
) -> tqdm:
    """A progress bar on an interactive terminal only: logs and CI output stay clean."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not (enabled and sys.stderr.isatty()),
        dynamic_ncols=True,
        leave=False,
    )
