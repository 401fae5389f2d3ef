"""The OmniRetriever objectives. One class per term; each forward returns a dict of `*_loss` tensors
and the total is summed in exactly one place (`Objective.forward`).

Notation: z_X in R^{B x E} are L2-normalised embeddings of view X for a batch of B items, s = exp(tau)
the learnable logit scale (tau = log(1/0.07) at init, s clamped to <= 100), or a fixed 1/temperature.

    InfoNCE(a, b) = -1/(2B) sum_i [ log softmax_j(s a_i.b_j)_i + log softmax_j(s b_i.a_j)_i ]   (symmetric)

With torch.distributed initialised, the gallery side of each InfoNCE holds the features of every rank
(gathered with gradient, `gather_features`), and the labels are offset by rank * B.

Items without video or without audio train on what they have: `present` (modality -> bool (B,), None
when every row holds all three) masks each term. A pair's InfoNCE uses the rows holding both of its
modalities, as anchors and as negatives; L_D and L_T use the rows holding all three (their teacher and
anchor are z_TVA), and a hard negative whose swapped-in slot comes from a row without it is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from model.modalities import A, T, V
from model.train_config import OBJECTIVES

PAIRS: tuple[tuple[str, str], ...] = ((T, V), (T, A), (V, A))
HARD_NEGATIVE_CYCLE: tuple[str, ...] = (T, A, V)  # slot swapped in the hard negative at step s: CYCLE[s % 3]


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(z: torch.Tensor) -> torch.Tensor:
    """Concatenate (B, E) features of all ranks into (world * B, E), keeping the gradient path.

    The one place negatives cross ranks. Uses torch.distributed.nn.all_gather, whose backward
    sums the incoming gradients back to each rank's own slice, so every rank's encoder gets the
    gradient of the loss terms that used its features on other ranks.
    """
    rank, size = world()
    if size == 1:
        return z
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(z), dim=0)


def gather_mask(valid: torch.Tensor) -> torch.Tensor:
    """bool (B,) of every rank, concatenated as gather_features concatenates their features."""
    return gather_features(valid.float()[:, None]).detach()[:, 0] > 0.5


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
                         columns: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the `rows` whose label column is among `columns`, the other columns left out of
    the softmax; a zero that keeps the graph when no row qualifies."""
    if not bool(rows.any()):
        return logits.sum() * 0.0
    picked = logits[rows].masked_fill(~columns[None, :], -math.inf)
    return F.cross_entropy(picked, labels[rows])


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, valid: torch.Tensor | None = None,
             columns: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned (B, E) batches, negatives gathered across ranks; with `valid`
    (bool (B,)), only those rows take part, as anchors and as negatives (`columns`, bool (W*B,): every rank's
    valid rows, gathered here when not given)."""
    rank, _ = world()
    all_a, all_b = gather_features(a), gather_features(b)  # (W*B, E)
    labels = torch.arange(a.shape[0], device=a.device) + rank * a.shape[0]  # (B,)
    logits_ab = scale * a @ all_b.T  # (B, W*B)
    logits_ba = scale * b @ all_a.T  # (B, W*B)
    if valid is None:
        return 0.5 * (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels))
    columns = gather_mask(valid) if columns is None else columns
    return 0.5 * (masked_cross_entropy(logits_ab, labels, valid, columns)
                  + masked_cross_entropy(logits_ba, labels, valid, columns))


def _holding(flags: dict[str, torch.Tensor], modalities: tuple[str, ...]) -> torch.Tensor:
    out = flags[modalities[0]].clone()
    for m in modalities[1:]:
        out &= flags[m]
    return out


@dataclass(frozen=True)
class Presence:
    """Which rows hold each modality: this rank's (`local`, modality -> bool (B,)) and every rank's
    (`everywhere`, (W*B,), as gather_features orders them), gathered once a step for every term."""

    local: dict[str, torch.Tensor]
    everywhere: dict[str, torch.Tensor]

    @classmethod
    def of(cls, present: dict[str, torch.Tensor]) -> "Presence":
        return cls(present, {m: gather_mask(v) for m, v in present.items()})

    def rows(self, modalities: tuple[str, ...]) -> torch.Tensor:
        """bool (B,): this rank's rows holding every one of `modalities`."""
        return _holding(self.local, modalities)

    def columns(self, modalities: tuple[str, ...]) -> torch.Tensor:
        """bool (W*B,): every rank's rows holding every one of `modalities`."""
        return _holding(self.everywhere, modalities)


def masked_info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, presence: Presence | None,
                    modalities: tuple[str, ...]) -> torch.Tensor:
    """info_nce over the rows holding `modalities` (every row when presence is None)."""
    if presence is None:
        return info_nce(a, b, scale)
    return info_nce(a, b, scale, presence.rows(modalities), presence.columns(modalities))


class LogitScale(nn.Module):
    """s = exp(tau): learnable (init 1/0.07, clamped to 100) or fixed at 1/temperature."""

    def __init__(self, temperature: float = 0.07, learnable: bool = True, max_scale: float = 100.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.tau = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable)
        self.max_log = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        return self.tau.clamp(max=self.max_log).exp() if self.tau.requires_grad else self.tau.exp()


class PairwiseLoss(nn.Module):
    """L_A = (1/|P|) sum_{(m,n) in P} InfoNCE(z_m, z_n), P = {(T,V), (T,A), (V,A)}.

    rotate=True is the reference-code variant: one pair per step, P = {PAIRS[step % 3]}.
    Inputs: z dict with (B, E) tensors under "T", "V", "A"; returns {"pairwise_loss": scalar}.
    """

    def __init__(self, rotate: bool = False):
        super().__init__()
        self.rotate = rotate

    def pairs(self, step: int) -> tuple[tuple[str, str], ...]:
        return (PAIRS[step % len(PAIRS)],) if self.rotate else PAIRS

    def forward(self, z: dict[str, torch.Tensor], scale: torch.Tensor, step: int,
                presence: Presence | None = None) -> dict[str, torch.Tensor]:
        pairs = self.pairs(step)
        return {"pairwise_loss": sum(masked_info_nce(z[m], z[n], scale, presence, (m, n)) for m, n in pairs) / len(pairs)}


class DistillLoss(nn.Module):
    """L_D = (1/3) sum_{m in T,V,A} InfoNCE(z_m, sg(z_TVA)): the fused embedding teaches each modality.

    sg = stop-gradient (detach): no gradient reaches z_TVA or its inputs through this term.
    Inputs: z dict with (B, E) "T", "V", "A", "TVA"; returns {"distill_loss": scalar}.
    """

    def forward(self, z: dict[str, torch.Tensor], scale: torch.Tensor, step: int,
                presence: Presence | None = None) -> dict[str, torch.Tensor]:
        teacher = z["TVA"].detach()
        return {"distill_loss": sum(masked_info_nce(z[m], teacher, scale, presence, (T, V, A)) for m in (T, V, A)) / 3}


def hard_negative_slot(step: int) -> str:
    """The modality swapped in the hard negatives at `step`: T, A, V, T, A, V, ..."""
    return HARD_NEGATIVE_CYCLE[step % len(HARD_NEGATIVE_CYCLE)]


def hard_negative_partner(batch_size: int) -> torch.Tensor:
    """Index of the sample whose slot sample i receives: i + 1 mod B (never i itself when B > 1)."""
    return torch.roll(torch.arange(batch_size), shifts=-1)


class TupleLoss(nn.Module):
    """L_T, Tuple-InfoNCE on the fused embedding.

        anchor   a_i = z_TVA(T_i, V_i, A_i)
        positive p_i = z_TVA(T'_i, V'_i, A'_i)         augmented view of the same tuple
        hard     h_i = z_TVA of tuple i with slot m_s replaced by sample pi(i)'s,  m_s = (T, A, V)[s % 3]
        L_T = -1/B sum_i log [ exp(s a_i.p_i) / ( sum_j exp(s a_i.p_j) + exp(s a_i.h_i) ) ]

    Negatives: every other in-batch (all-rank) positive p_j plus the sample's own hard negative.
    Inputs: z dict with (B, E) "TVA", "TVA_aug", "TVA_hard"; returns {"tuple_loss": scalar}.
    """

    def forward(self, z: dict[str, torch.Tensor], scale: torch.Tensor, step: int,
                presence: Presence | None = None) -> dict[str, torch.Tensor]:
        anchor, pos, hard = z["TVA"], z["TVA_aug"], z["TVA_hard"]
        rank, _ = world()
        all_pos = gather_features(pos)  # (W*B, E)
        logits = scale * torch.cat([anchor @ all_pos.T, (anchor * hard).sum(-1, keepdim=True)], dim=1)  # (B, W*B + 1)
        labels = torch.arange(anchor.shape[0], device=anchor.device) + rank * anchor.shape[0]
        if presence is None:
            return {"tuple_loss": F.cross_entropy(logits, labels)}
        complete = presence.rows((T, V, A))
        # the hard negative of row i holds partner(i)'s slot: dropped when that row has none
        slot_from = presence.local[hard_negative_slot(step)][hard_negative_partner(len(anchor)).to(anchor.device)]
        keep_hard = torch.cat([presence.columns((T, V, A)), torch.ones(1, dtype=torch.bool, device=anchor.device)])
        logits = torch.cat([logits[:, :-1], logits[:, -1:].masked_fill(~slot_from[:, None], -math.inf)], dim=1)
        return {"tuple_loss": masked_cross_entropy(logits, labels, complete, keep_hard)}


class Objective(nn.Module):
    """pairwise: L_A;  distill: L_A + L_D;  full: L_A + L_D + L_T (uniform weights).

    `views(objective)` says which embeddings a step must compute, each exactly once.
    forward returns every term plus "loss", the one place the total is summed.
    """

    def __init__(self, objective: str = "full", temperature: float = 0.07, learnable_temperature: bool = True,
                 rotate_pairs: bool = False):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        self.objective = objective
        self.logit_scale = LogitScale(temperature, learnable_temperature)
        terms: list[nn.Module] = [PairwiseLoss(rotate_pairs)]
        if objective in ("distill", "full"):
            terms.append(DistillLoss())
        if objective == "full":
            terms.append(TupleLoss())
        self.terms = nn.ModuleList(terms)

    def views(self, step: int) -> tuple[str, ...]:
        """The embeddings step `step` needs; with rotating pairs, only that step's pair for L_A alone."""
        if self.objective == "pairwise":
            return tuple(m for m in (T, V, A) if any(m in pair for pair in self.terms[0].pairs(step)))
        return {"distill": (T, V, A, "TVA"), "full": (T, V, A, "TVA", "TVA_aug", "TVA_hard")}[self.objective]

    def forward(self, z: dict[str, torch.Tensor], step: int,
                present: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """`present`: which rows hold each modality (module docstring); None when every row holds all three.
        Its masks are gathered across ranks once, here, for every term."""
        scale = self.logit_scale()
        presence = None if present is None else Presence.of(present)
        out: dict[str, torch.Tensor] = {}
        for term in self.terms:
            out.update(term(z, scale, step, presence))
        out["loss"] = sum(v for k, v in out.items() if k.endswith("_loss"))
        out["logit_scale"] = scale.detach()
        return out
