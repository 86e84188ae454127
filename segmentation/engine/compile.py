"""train.compile: the mode a run compiles its model in, and the fallbacks to `default` where a
mode cannot work on the device or for the step, each said in one warning.

reduce-overhead and max-autotune replay the compiled forward and backward as CUDA graphs
(inductor's CUDA graph trees). What that asks of the loop, which `loop.py` does:
- static shapes: the training loader drops its last, shorter batch; validation runs the bare
  model, not the compiled one, so its batches may have any shape;
- each step begins a new graph generation (`cudagraph_mark_step_begin` before the forward,
  `begin_step`), which frees the previous step's outputs: nothing of a step's graph outputs is
  kept past it (the loss is computed outside the graph, from the logits);
- the parameters' gradients stay allocated between steps (`clear_gradients`): a graph's output
  made into a `.grad` would be overwritten by the next replay, which breaks gradient
  accumulation (pytorch/pytorch#169545).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from segmentation.engine.run_logger import logger

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# inductor says why it leaves a graph out of CUDA graphs on this (artifact) logger.
CUDA_GRAPH_SKIP_LOGGER = "torch._inductor.cudagraph_utils.__cudagraphs"


def compile_mode_for(mode: str, device: torch.device, *, warn: bool = True) -> str:
    """The train.compile mode that can run on `device`: reduce-overhead (CUDA graphs only)
    falls back to default off CUDA, saying so once if `warn`."""
    if mode == "reduce-overhead" and device.type != "cuda":
        if warn:
            logger.warning(
                "train.compile reduce-overhead needs CUDA graphs, which the %s lacks: "
                "compiling in the default mode",
                device.type.upper(),
            )
        return "default"
    return mode


def uses_cuda_graphs(mode: str, device: torch.device) -> bool:
    return mode in CUDA_GRAPH_MODES and device.type == "cuda"


def compile_model(model: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """`model` under torch.compile in `mode` (default, reduce-overhead, max-autotune). Off
    CUDA, max-autotune keeps its kernel tuning (inductor's C++ templates on a CPU) without
    the CUDA graphs."""
    torch_mode = mode
    if mode == "max-autotune" and device.type != "cuda":
        torch_mode = "max-autotune-no-cudagraphs"
    return torch.compile(model, mode=torch_mode)


def begin_step(mode: str, device: torch.device) -> None:
    """Start a new CUDA graph generation before a step's forward: the previous step's graph
    outputs may be overwritten from here on. Without it, a forward whose backward never ran
    (a step skipped for a non-finite loss) would make the next forward record a new graph."""
    if uses_cuda_graphs(mode, device):
        torch.compiler.cudagraph_mark_step_begin()


def clear_gradients(optimizer: torch.optim.Optimizer, mode: str, device: torch.device) -> None:
    """Drop the gradients before a step. Under CUDA graphs they are zeroed in place instead,
    and allocated for parameters that have none, so that the backward adds into them rather
    than handing over its (replay-owned) output as the gradient."""
    if not uses_cuda_graphs(mode, device):
        optimizer.zero_grad(set_to_none=True)
        return
    optimizer.zero_grad(set_to_none=False)
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.requires_grad and parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)


class _FirstSkip(logging.Handler):
    """Turns inductor's notes on graphs left out of CUDA graphs into one warning (none where
    not `warn`: the other processes of a job)."""

    def __init__(self, mode: str, warn: bool) -> None:
        super().__init__(logging.WARNING)
        self.mode, self.warn = mode, warn
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        reason = record.getMessage().strip().splitlines()[0] if record.getMessage() else "?"
        self.reasons.append(reason)
        if self.warn and len(self.reasons) == 1:
            logger.warning(
                "train.compile %s: part of the step cannot run as a CUDA graph (%s): that "
                "part runs as in the default mode",
                self.mode,
                reason,
            )


@contextlib.contextmanager
def reporting_cuda_graph_skips(mode: str, device: torch.device, *, warn: bool) -> Iterator[None]:
    """While a run trains: the first graph inductor cannot capture (dynamic shapes, a CPU
    tensor, an input mutated outside the graph...) gives one warning with its reason, instead
    of inductor's own warning for every such graph; without `warn` (not the main process)
    nothing is said."""
    if not uses_cuda_graphs(mode, device):
        yield
        return
    skip_logger = logging.getLogger(CUDA_GRAPH_SKIP_LOGGER)
    handler, propagate = _FirstSkip(mode, warn), skip_logger.propagate
    skip_logger.addHandler(handler)
    skip_logger.propagate = False
    try:
        yield
    finally:
        skip_logger.removeHandler(handler)
        skip_logger.propagate = propagate
