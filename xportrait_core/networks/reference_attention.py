"""Reference ("appearance") attention: the bank the appearance net writes and the main UNet reads.

The appearance net runs in write mode: every spatial transformer block appends ``norm1(x)`` (B, N, C) to
the bank, in forward order (6 input-block, 1 middle, 9 output-block transformers for SD1.5 = 16 entries),
then does plain self-attention. The main UNet runs in read mode: block i attends with queries from its
own frame and keys/values from ``cat([norm1(x), bank[i]], dim=tokens)``, as the original's reference attention
does. With several references each entry is the token-wise concatenation, main reference first.

A bank entry has batch 1 when one reference latent is shared by every frame (our default: the appearance
net then runs once per denoising step) or batch N with one entry row per frame (the original's per-frame
posterior samples). When the conditional and unconditional passes run as one batch, only the conditional rows
(the first ``BankReader.rows``) read the bank: the unconditional pass never sees it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

ReferenceBank = list  # list[torch.Tensor]: entry i (B or 1, tokens_i, C_i), forward order


@dataclass
class BankWriter:
    """Collects ``norm1(x)`` of each spatial transformer block of the appearance net, in order."""

    entries: list[torch.Tensor] = field(default_factory=list)

    def write(self, normed_tokens: torch.Tensor) -> None:
        self.entries.append(normed_tokens)


@dataclass
class BankReader:
    """Hands the main UNet's spatial transformer blocks their bank entry, one per block, in order.

    ``rows``: how many leading rows of the UNet's batch read the bank (the conditional pass); the rows after them
    (the unconditional pass, batched with it) do plain self-attention. None: every row reads it.
    """

    entries: list[torch.Tensor]
    rows: int | None = None
    next_index: int = 0

    def read(self) -> torch.Tensor:
        if self.next_index >= len(self.entries):
            raise RuntimeError(
                f"the reference bank has {len(self.entries)} entries but the UNet asked for entry "
                f"{self.next_index}: the bank was written by an appearance net of another shape")
        entry = self.entries[self.next_index]
        self.next_index += 1
        return entry


def concat_reference_banks(banks: list[ReferenceBank]) -> ReferenceBank:
    """Several references: each entry is the token-wise (dim 1) concatenation, first bank first."""
    if not banks:
        raise ValueError("concat_reference_banks needs at least one bank")
    lengths = {len(bank) for bank in banks}
    if len(lengths) != 1:
        raise ValueError(f"reference banks have different numbers of entries: {sorted(lengths)}")
    if len(banks) == 1:
        return list(banks[0])
    return [torch.cat(entries, dim=1) for entries in zip(*banks)]


def select_bank_frames(bank: ReferenceBank, frame_indices: torch.Tensor) -> ReferenceBank:
    """Rows of a per-frame bank for the frames of one window; a shared (batch 1) bank is returned as is."""
    return [entry if entry.shape[0] == 1 else entry[frame_indices.to(entry.device)] for entry in bank]
