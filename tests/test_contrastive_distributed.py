"""Gathered InfoNCE over 2 gloo processes equals the 1-process loss (lightly's
pattern for distributed losses)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightly_graft.functional.contrastive import infonce


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world_size: int, port: int, queries, keys, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        n = queries.shape[0] // world_size
        q = queries[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        k = keys[rank * n : (rank + 1) * n]
        loss = infonce(q, k, temperature=0.2, gather_distributed=True)
        loss.backward()
        out[rank] = torch.cat([loss.detach().view(1), q.grad.flatten()])
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_infonce__gathered_keys_equal_one_process() -> None:
    torch.manual_seed(0)
    queries, keys = torch.randn(8, 16), torch.randn(8, 16)
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), queries, keys, out), nprocs=2, join=True)
    full_q = queries.clone().requires_grad_(True)
    expected = infonce(full_q, keys, temperature=0.2)
    expected.backward()
    losses = torch.stack([out[0][0], out[1][0]])
    torch.testing.assert_close(losses.mean(), expected.detach(), rtol=1e-5, atol=1e-6)
    # DDP averages gradients over ranks: each rank's gradient is that of its
    # local mean, i.e. world_size times its share of the global mean.
    grads = torch.cat([out[0][1:], out[1][1:]]).view(8, 16) / 2
    torch.testing.assert_close(grads, full_q.grad, rtol=1e-5, atol=1e-6)
