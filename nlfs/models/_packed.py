"""K surrogate CNNs packed into one network: each member a group of channels.

The stem convolution reads the shared image with K x its filters; every later convolution is grouped
(``groups=K``), so member k only ever sees its own channels; BatchNorm, pooling and GELU act per
channel and the head is a batched matrix product, so the K members are exactly independent
networks computed by one set of kernels. All parameters live in one (K, P) tensor, member k's in row k,
in the order of its ``SurrogateNet.named_parameters()``: a per-member learning rate is a (K, 1)
column, and dropping members is indexing rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._small import SurrogateNet


class PackedSurrogate(nn.Module):
    """``PackedSurrogate(members)``: K initialised ``SurrogateNet`` of one architecture, packed (their
    weights and BatchNorm statistics copied in). ``forward(x)``: (B, C, H, W) -> (K, B, classes)
    logits, member k's in ``[k]``. ``member_state_dict(k)`` is member k as a ``SurrogateNet`` state
    dict (same keys and order); ``select(rows)`` keeps those members."""

    def __init__(self, members: list[SurrogateNet]):
        super().__init__()
        if not members or not all(isinstance(m, SurrogateNet) for m in members):
            raise TypeError("PackedSurrogate packs SurrogateNet models (one or more)")
        first = members[0]
        self.k = len(members)
        self.scale = first.scale
        self.pools = [isinstance(g.pool, nn.MaxPool2d) for g in first.groups]
        self.n_groups = len(first.groups)
        self.keys = list(first.state_dict().keys())
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.offsets: dict[str, tuple[int, int]] = {}
        rows, at = [], 0
        with torch.no_grad():
            for name, p in first.named_parameters():
                n = p.numel()
                self.shapes[name], self.offsets[name] = tuple(p.shape), (at, at + n)
                at += n
            for m in members:
                rows.append(torch.cat([p.detach().reshape(-1) for _, p in m.named_parameters()]))
            self.flat = nn.Parameter(torch.stack(rows))
            self.buffer_names = [name for name, _ in first.named_buffers()]
            for name in self.buffer_names:
                self.register_buffer(name.replace(".", "_"), torch.stack([dict(m.named_buffers())[name]
                                                                          for m in members]).clone())

    def param(self, name: str, fmt: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """Member-stacked parameter ``name`` as (K * shape[0], *shape[1:]) (a copy kept in autograd;
        convolution weights in the input's memory format, as the single model's are)."""
        a, b = self.offsets[name]
        shape = self.shapes[name]
        w = self.flat[:, a:b].reshape(self.k * shape[0], *shape[1:])
        return w.contiguous(memory_format=fmt) if w.dim() == 4 else w

    def buffer(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace(".", "_"))

    def _bn(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        mean, var = self.buffer(f"{prefix}.running_mean"), self.buffer(f"{prefix}.running_var")
        if self.training:
            self.buffer(f"{prefix}.num_batches_tracked").add_(1)
        return F.batch_norm(x, mean.view(-1), var.view(-1), self.param(f"{prefix}.weight"),
                            self.param(f"{prefix}.bias"), self.training, 0.1, 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = F.gelu(self._bn(F.conv2d(x, self.param("stem.0.weight", fmt), padding=1), "stem.1"))
        for i, pool in enumerate(self.pools):
            g = f"groups.{i}"
            x = F.conv2d(x, self.param(f"{g}.conv1.weight", fmt), padding=1, groups=k)
            if pool:
                x = F.max_pool2d(x, 2)
            x = F.gelu(self._bn(x, f"{g}.bn1"))
            x = F.gelu(self._bn(F.conv2d(x, self.param(f"{g}.conv2.weight", fmt), padding=1, groups=k),
                                f"{g}.bn2"))
        x = torch.amax(x, dim=(2, 3))  # (B, K * c)
        a, b = self.offsets["head.weight"]
        head = self.flat[:, a:b].view(k, *self.shapes["head.weight"])  # (K, classes, c)
        x = x.view(x.shape[0], k, -1).transpose(0, 1)  # (K, B, c)
        return torch.bmm(x, head.transpose(1, 2)) * self.scale

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.keys:
            if name in self.offsets:
                a, b = self.offsets[name]
                out[name] = self.flat[k, a:b].detach().view(self.shapes[name]).clone()
            else:
                out[name] = self.buffer(name)[k].clone()
        return out

    @torch.no_grad()
    def retire(self, rows: list[int]) -> None:
        """Zero members ``rows`` in place (weights 0, BatchNorm statistics reset), keeping K: what a
        compiled pack does with a failed member instead of ``select`` (no new shapes, no recompile)."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.flat.device)
        self.flat[idx] = 0.0
        for name in self.buffer_names:
            buf = self.buffer(name)
            buf[idx] = 1 if name.endswith("running_var") else 0

    @torch.no_grad()
    def select(self, rows: list[int]) -> None:
        """Keep only the members ``rows`` (in that order)."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.flat.device)
        self.flat = nn.Parameter(self.flat.detach()[idx].clone())
        for name in self.buffer_names:
            setattr(self, name.replace(".", "_"), self.buffer(name)[idx].clone())
        self.k = len(rows)
