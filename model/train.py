"""Training: AdamW, warmup + cosine, gradient clipping, atomic checkpoints, exact resume.

Determinism: every source of randomness in step s is seeded from (seed, s): the batch (a per-epoch
permutation), the augmentations and dropout. So a run killed at any point and resumed from its last
checkpoint ends with the same weights as an uninterrupted run (on the same machine and thread count).

Trackers subscribe through the `Callback` protocol; model/ never imports one. Whatever ends a run
early (bad input, divergence, a crash, Ctrl-C), from setup to the final model, reaches every
callback's `on_train_abort` once, in `Trainer.fit`.

Non-finite numbers stop training: a step whose loss terms or gradient norm are not finite raises
`TrainingDiverged` (naming the step, the term and the last checkpoint) before the optimizer steps,
so no bad weights are stepped or saved; the checkpoints written before it stay, and no final model
or train_summary.json is written.

Every option is checked before anything is decoded: TrainConfig's values when it is built, then
the architecture config, the training manifest, and the batch size against its number of records.

Under torchrun (one process per GPU) each rank trains on its own slice of a global batch of
batch_size x world clips, gradients are averaged across ranks and only rank 0 writes files and calls
trackers (see model/distributed.py); a non-finite loss on any rank stops every rank at that step. A
world of one is exactly the single-process run.

A pretrained backbone trains on CUDA under bfloat16 autocast when its config says autocast "bf16" (the
default; `forward_autocast`): the forward only, with the head, the embeddings and the loss in float32.
On the CPU there is no autocast, so a float32 run stays float32 exactly; the tiny encoder never uses it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from model.augment import augment_audio, augment_text, augment_video, augment_waveform
from model.config import AnyConfig, EncoderConfig, load_config
from model.data import ClipBank, concat_tokens, load_bank, make_batch, swap_slot
from model.distributed import World, process_group, surfacing_lost_ranks
from model.encoder import OmniEncoder
from model.errors import TrainingDiverged
from model.losses import Objective, gather_features, hard_negative_partner, hard_negative_slot
from model.manifest import existing_split, read_manifest
from model.modalities import A, T, V
from model.store import checkpoint_step, latest_checkpoint, load_checkpoint, save_checkpoint, save_model
from model.text import TextTokenizer
from model.train_config import AugmentConfig, TrainConfig


class Callback(Protocol):
    """What a tracker implements to follow training; every method is optional in practice.

    on_train_start(params)     once, after setup (split decoded, tokenizer ready), before the first step
    on_step(step, metrics)     after each finished step (1-based): its loss terms, logit_scale, lr, grad_norm,
                               gathered_batch (the rows an anchor is scored against: world x batch)
    on_checkpoint(step, path)  after each checkpoint is written
    on_train_end(summary)      once, after the final model and train_summary.json are written
    on_train_abort(exc)        once, when training ends in an error or Ctrl-C (`exc`, re-raised after the
                               hooks) anywhere: in setup (so on_train_start may not have run), in a step
                               (TrainingDiverged included), in another callback, or at the end. A hook
                               that raises is noted on `exc`, never raised in its place.
    """

    def on_train_start(self, params: dict) -> None: ...
    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, step: int, path: Path) -> None: ...
    def on_train_end(self, summary: dict) -> None: ...
    def on_train_abort(self, exc: BaseException) -> None: ...


class JsonlLog:
    """Appends one JSON line per step to RUN/train_log.jsonl (trimmed on resume)."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [ln for ln in lines if json.loads(ln)["step"] <= start_step]
        path.write_text("".join(ln + "\n" for ln in kept))

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")


def _call(callbacks: Sequence[object], name: str, *args) -> None:
    for cb in callbacks:
        fn = getattr(cb, name, None)
        if fn is not None:
            fn(*args)


def _abort(callbacks: Sequence[object], exc: BaseException) -> None:
    """Tell every callback that training ended in `exc`. A hook that fails is noted on `exc` and the
    others are still told: the error that ended training is the one the caller sees."""
    for cb in callbacks:
        fn = getattr(cb, "on_train_abort", None)
        if fn is None:
            continue
        try:
            fn(exc)
        except Exception as err:  # noqa: BLE001 - must not take the place of the original error
            exc.add_note(f"{type(cb).__name__}.on_train_abort failed as well: {type(err).__name__}: {err}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to 0 at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of step `step` on rank `rank` (rank 0's equals the single-process seed)."""
    entropy = [seed, step] + ([rank] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Rows of step `step`: consecutive slices of a per-epoch permutation (last partial batch dropped)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch, 7]).permutation(n)
    return torch.from_numpy(perm[pos * batch_size: (pos + 1) * batch_size].copy())


def param_groups(modules: Sequence[torch.nn.Module], weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, embeddings of position/type, and the temperature."""
    decay, no_decay = [], []
    for mod in modules:
        for name, p in mod.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.endswith(".pos") or "type_embed" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _to(batch: dict[str, torch.Tensor], device: torch.device | None) -> dict[str, torch.Tensor]:
    return batch if device is None else {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def augmented_batch(bank: ClipBank, idx: torch.Tensor, tokenizer: TextTokenizer, aug: AugmentConfig,
                    gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The L_T positive: frames, audio and a caption of each clip, augmented. The caption is drawn
    afresh, so with several captions per clip the positive is often a different description."""
    texts = [augment_text(t, aug, gen) for t in bank.sample_texts(idx, gen)]
    if bank.audio_input == "waveform":  # augment the waveforms, then compute their features
        video = augment_video(bank.frames[idx], aug, gen)
        batch = make_batch(bank, idx, tokenizer, texts, waves=augment_waveform(bank.mel[idx], aug, gen))
        batch["video"] = video
        return batch
    batch = make_batch(bank, idx, tokenizer, texts)
    batch["video"] = augment_video(batch["video"], aug, gen)
    batch["audio"] = augment_audio(batch["audio"], aug, gen)
    return batch


def kept_count(length: int, keep: float) -> int:
    """How many of `length` tokens a view keeps at token keep `keep` (at least one)."""
    return max(1, round(length * keep))


def keep_indices(lengths: Mapping[str, int], batch: int, keep: float, gen: torch.Generator
                 ) -> dict[str, torch.Tensor]:
    """Which video and audio tokens each row of a view keeps: modality -> (B, k) indices, a random
    `keep` of them per row, in their original order. Empty at keep >= 1 (every token, nothing drawn).
    The encoder computes only these tokens: cheaper, and a regulariser (FLIP)."""
    out = {}
    for m in (V, A):
        if m not in lengths or keep >= 1.0:
            continue
        L = lengths[m]
        k = kept_count(L, keep)
        out[m] = torch.rand(batch, L, generator=gen).argsort(1)[:, :k].sort(1).values  # (B, k)
    return out


def tokens_kept(encoder: OmniEncoder, batch: dict[str, torch.Tensor], mods: tuple[str, ...], keep: float,
                gen: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The batch's tokens with each row's random subset of video and audio tokens (see keep_indices)."""
    if keep >= 1.0:  # every token, nothing drawn (what keep_indices gives)
        return encoder.tokenize(batch, mods, {})
    cfg = encoder.cfg
    lengths = {m: n for m, n in ((V, cfg.video_tokens), (A, cfg.audio_tokens)) if m in mods}
    return encoder.tokenize(batch, mods, keep_indices(lengths, len(batch["text_ids"]), keep, gen))


def embed_step(encoder: OmniEncoder, bank: ClipBank, idx: torch.Tensor, tokenizer: TextTokenizer,
               views: tuple[str, ...], step: int, aug: AugmentConfig, gen: torch.Generator,
               device: torch.device | None = None, token_keep: float = 1.0) -> dict[str, torch.Tensor]:
    """Each embedding the objective needs, computed once. The batch is tokenised once and every view
    (T, V, A, TVA, and the hard negatives, which only permute a slot's tokens) is fused from those
    tokens; only the augmented positive needs a second tokenisation. Positive and hard negatives share
    one trunk forward of 2B rows. Batches are built (and augmented) on the CPU, then moved to `device`."""
    batch = _to(make_batch(bank, idx, tokenizer, bank.sample_texts(idx, gen)), device)
    mods = tuple(m for m in (T, V, A) if m in views or "TVA" in views)
    tokens = tokens_kept(encoder, batch, mods, token_keep, gen)
    z = {m: encoder.fuse(tokens, (m,)) for m in (T, V, A) if m in views}
    if "TVA" in views:
        z["TVA"] = encoder.fuse(tokens, (T, V, A))
    if "TVA_aug" in views:
        augmented = _to(augmented_batch(bank, idx, tokenizer, aug, gen), device)
        hard = swap_slot(tokens, hard_negative_slot(step), hard_negative_partner(len(idx)))
        positive = tokens_kept(encoder, augmented, (T, V, A), token_keep, gen)
        both = encoder.fuse(concat_tokens(positive, hard), (T, V, A))  # (2B, E)
        z["TVA_aug"], z["TVA_hard"] = both[: len(idx)], both[len(idx):]
    return z


def forward_autocast(enc_cfg: AnyConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The precision of a training step's forward: bfloat16 autocast on CUDA for a pretrained backbone whose config
    says autocast "bf16" (its head, hence the embeddings, and the loss stay float32); on the CPU, and for the tiny
    encoder everywhere, no autocast at all (float32 stays float32 exactly)."""
    if device.type == "cuda" and getattr(enc_cfg, "autocast", "none") == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build(cfg: TrainConfig, enc_cfg: AnyConfig, encoder: torch.nn.Module | None = None
          ) -> tuple[OmniEncoder, Objective, torch.optim.AdamW]:
    """A freshly initialised encoder (a pretrained backbone: its base from cfg.checkpoint, frozen, with fresh
    LoRA and head), the objective (holding the temperature) and their optimizer over what trains. Given an
    `encoder` (one built elsewhere, e.g. over a random thinker), only the objective and optimizer are new."""
    if encoder is None and isinstance(enc_cfg, EncoderConfig):
        encoder = OmniEncoder(enc_cfg)
    elif encoder is None:
        from model.omni.backbone import QwenOmniEncoder

        encoder = QwenOmniEncoder.from_checkpoint(cfg.checkpoint, enc_cfg)
    objective = Objective(cfg.objective, cfg.temperature, not cfg.fixed_temperature, cfg.rotate_pairs)
    optimizer = torch.optim.AdamW(param_groups([encoder, objective], cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
    return encoder, objective, optimizer


class Trainer:
    def __init__(self, cfg: TrainConfig, callbacks: Sequence[object] = (), progress: bool = True, world: World = World()):
        self.cfg = cfg
        self.world = world
        self.callbacks = list(callbacks) if world.is_main else []  # trackers follow rank 0 only
        self.progress = progress and world.is_main
        self.run = Path(cfg.out)

    def _setup(self, resume: bool) -> tuple[AnyConfig, ClipBank, TextTokenizer | None, int | None]:
        """(encoder config, bank, tokenizer, checkpoint to resume from); a pretrained backbone's tokenizer is
        its checkpoint's (None here: the encoder brings it)."""
        cfg = self.cfg
        checkpoint = latest_checkpoint(self.run) if resume else None
        if not resume and (self.run / "checkpoints").exists():
            raise FileExistsError(f"{self.run} already holds a training run: pass --resume to continue it, or choose a new --out")
        enc_cfg = load_config(cfg.config)  # an unknown name or a bad JSON file fails here, before decoding
        self._check_backbone(enc_cfg)
        self._check_train_split()
        bank = self._load_train_split(enc_cfg)
        if not isinstance(enc_cfg, EncoderConfig):
            if self.world.is_main:
                self.run.mkdir(parents=True, exist_ok=True)
            return enc_cfg, bank, None, checkpoint
        tok_path = self.run / "tokenizer.json"
        tokenizer = None
        if self.world.is_main and checkpoint is not None and tok_path.exists():
            tokenizer = TextTokenizer.load(tok_path, enc_cfg.max_text_len)
        elif self.world.is_main:
            tokenizer = TextTokenizer.train(bank.all_texts(), enc_cfg.vocab_size, enc_cfg.max_text_len)
            self.run.mkdir(parents=True, exist_ok=True)
            tokenizer.save(tok_path)
        # the other ranks take rank 0's tokenizer by broadcast: ranks on other nodes may not see its disk
        shared = self.world.broadcast(tokenizer.to_json() if tokenizer is not None else None)
        if tokenizer is None:
            tokenizer = TextTokenizer.from_json(shared, enc_cfg.max_text_len)
        return replace(enc_cfg, vocab_size=tokenizer.vocab_size), bank, tokenizer, checkpoint

    def _check_backbone(self, enc_cfg: AnyConfig) -> None:
        """--checkpoint goes with a pretrained backbone and only with it; that backbone trains on every token."""
        cfg = self.cfg
        if isinstance(enc_cfg, EncoderConfig):
            if cfg.checkpoint is not None:
                raise ValueError(f"--checkpoint={cfg.checkpoint} is for a pretrained backbone, but --config={cfg.config} "
                                 f"is the tiny encoder, trained from scratch")
            return
        from model.omni.checkpoint import find_checkpoint

        if cfg.checkpoint is None:
            raise ValueError(f"--config={cfg.config} is the {enc_cfg.backbone} backbone: give its base checkpoint "
                             f"directory with --checkpoint DIR")
        if cfg.token_keep != 1.0:
            raise ValueError(f"--token-keep={cfg.token_keep} is not supported by the {enc_cfg.backbone} backbone "
                             f"(its positions follow the full video grid and audio length): pass --token-keep 1")
        find_checkpoint(cfg.checkpoint)  # a bad directory fails here, before decoding

    def _check_train_split(self) -> None:
        """The data directory, its training manifest and a batch that fits in it, checked by reading the
        manifest (cheap; decoding is not). Too large a batch is refused naming the largest that fits."""
        cfg = self.cfg
        manifest = existing_split(cfg.data, "train")
        records = len(read_manifest(manifest))
        if records < cfg.batch_size * self.world.size:
            fits = records // self.world.size
            hint = (f"the largest batch that fits is --batch-size={fits}" if fits >= 2 else
                    "the split is too small to train on: a step needs at least 2 clips per process")
            raise ValueError(f"--batch-size={cfg.batch_size} x {self.world.size} process(es) is larger than the "
                             f"training split ({records} clips in {manifest}); {hint}")

    def _load_train_split(self, enc_cfg: AnyConfig) -> ClipBank:
        """Rank 0 decodes into the feature cache first; the other ranks then read the cache."""
        cfg = self.cfg
        if not self.world.is_main:
            self.world.barrier()
        bank = load_bank(cfg.data, "train", enc_cfg, cache_dir=cfg.cache_dir, workers=cfg.workers, progress=self.progress)
        if not cfg.alt_texts:
            bank.captions = None
        if self.world.is_main:
            self.world.barrier()
        return bank

    def _check_same_start(self, start: int) -> None:
        """Every rank resumes from rank 0's step: a rank that found another checkpoint (a node that does not
        see the run directory rank 0 writes) would train different weights, so it stops here, saying so."""
        main_start = self.world.broadcast(start)
        if start != main_start:
            raise RuntimeError(f"rank {self.world.rank} of {self.world.size} would resume from step {start} but rank 0 "
                               f"resumes from step {main_start}: every node must mount the run directory {self.run} "
                               f"(the same volume) to resume")

    def _finished(self, resume: bool) -> dict | None:
        """The summary of a run that already reached cfg.steps (checked before any decoding), else None."""
        checkpoint = latest_checkpoint(self.run) if resume else None
        done = self.run / "train_summary.json"
        if checkpoint is None or not done.exists() or not (self.run / "model" / "config.json").exists():
            return None
        step = checkpoint_step(checkpoint)
        return {**json.loads(done.read_text()), "resumed_from": step} if step >= self.cfg.steps else None

    def fit(self, resume: bool = False) -> dict:
        """Train (or resume) the run; rank 0's summary. Whatever ends it early, from setup to the final
        model, reaches each callback's on_train_abort once, then propagates unchanged."""
        try:
            return self._fit(resume)
        except BaseException as exc:
            _abort(self.callbacks, exc)
            raise

    def _fit(self, resume: bool) -> dict:
        cfg = self.cfg
        finished = self._finished(resume)
        if finished is not None:
            return finished
        torch.manual_seed(cfg.seed)
        enc_cfg, bank, tokenizer, checkpoint = self._setup(resume)
        encoder, objective, optimizer = build(cfg, enc_cfg)
        tokenizer = tokenizer or encoder.tokenizer
        encoder.to(self.world.device)
        objective.to(self.world.device)
        modules = {"encoder": encoder, "objective": objective}
        base = getattr(encoder, "checkpoint", None)  # a pretrained backbone's base checkpoint
        meta = {"train_config": cfg.to_dict()} | ({"base": base.identity()} if base is not None else {})
        if checkpoint and base is not None:
            base.check_identity(json.loads((checkpoint / "state.json").read_text()).get("base", {}), checkpoint)
        start = load_checkpoint(checkpoint, modules, optimizer) if checkpoint else 0
        self._check_same_start(start)
        log = JsonlLog(self.run / "train_log.jsonl", start) if self.world.is_main else None
        params = {**cfg.to_dict(), "encoder": enc_cfg.to_dict(), "train_clips": len(bank), "resumed_from": start,
                  "world_size": self.world.size}
        _call(self.callbacks, "on_train_start", params)
        encoder.train()
        t0, last = time.perf_counter(), {}
        with tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {cfg.objective}",
                  disable=not self.progress, dynamic_ncols=True) as bar:
            for step in bar:
                try:
                    last = train_step(step, cfg, encoder, objective, optimizer, bank, tokenizer, self.world)
                except TrainingDiverged as exc:  # say where the run can be picked up again
                    raise TrainingDiverged(exc.step, exc.reason, latest_checkpoint(self.run)) from None
                if log is not None:
                    log.on_step(step + 1, last)
                _call(self.callbacks, "on_step", step + 1, last)
                bar.set_postfix({k.replace("_loss", ""): f"{v:.3f}" for k, v in last.items() if k.endswith("loss")})
                if self.world.is_main and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
                    path = save_checkpoint(self.run, step + 1, modules, optimizer, meta)
                    _call(self.callbacks, "on_checkpoint", step + 1, path)
        elapsed = time.perf_counter() - t0
        self.world.check_in_sync([encoder, objective])
        if not self.world.is_main:
            return {"steps": cfg.steps, "resumed_from": start, "seconds": elapsed, "final": last, "rank": self.world.rank}
        save_model(self.run / "model", encoder, tokenizer, {"logit_scale.tau": objective.logit_scale.tau})
        summary = {"steps": cfg.steps, "resumed_from": start, "seconds": elapsed, "final": last,
                   "samples_per_s": (cfg.steps - start) * cfg.batch_size * self.world.size / max(elapsed, 1e-9),
                   "world_size": self.world.size,
                   "model": str(self.run / "model")}
        (self.run / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _call(self.callbacks, "on_train_end", summary)
        return summary


def train_step(step: int, cfg: TrainConfig, encoder: OmniEncoder, objective: Objective, optimizer: torch.optim.Optimizer,
               bank: ClipBank, tokenizer: TextTokenizer, world: World = World()) -> dict[str, float]:
    """One optimizer step; all of its randomness is seeded from (cfg.seed, step, rank). Each rank takes
    its slice of the step's global batch; gradients are averaged over ranks before clipping.

    Before the optimizer steps, the loss terms and the gradient norm are read to the host (the step's
    one device sync) and checked: if any is not finite on any rank, every rank raises TrainingDiverged
    here, with its parameters and optimizer state as the previous step left them."""
    seed = step_seed(cfg.seed, step, world.rank)
    torch.manual_seed(seed)  # dropout
    gen = torch.Generator().manual_seed(seed)  # augmentations
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    idx = batch_indices(len(bank), cfg.batch_size * world.size, step, cfg.seed)
    idx = idx[world.rank * cfg.batch_size: (world.rank + 1) * cfg.batch_size]
    device = None if world.device.type == "cpu" else world.device
    with forward_autocast(encoder.cfg, world.device):
        z = embed_step(encoder, bank, idx, tokenizer, objective.views(step), step, cfg.augment, gen, device,
                       cfg.token_keep if step < cfg.steps * (1 - cfg.unmasked_steps) else 1.0)
    present = None if bank.complete else {m: bank.has((m,))[idx].to(world.device) for m in (T, V, A)}
    out = objective(z, step, present)  # in float32, outside autocast; partial items train on what they hold
    # the batch an anchor is scored against: every rank's rows, brought together by the losses' own gather
    gathered = len(gather_features(torch.ones(len(idx), 1, device=world.device)))  # world x batch
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    params = list(encoder.parameters()) + list(objective.parameters())
    world.average_gradients(params)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    values = host_values({**out, "grad_norm": grad_norm})
    stop_if_diverged(step, values, world)
    optimizer.step()
    metrics = world.mean_values({k: v for k, v in values.items() if k != "grad_norm"})  # over the global batch
    metrics.update(lr=optimizer.param_groups[0]["lr"], grad_norm=values["grad_norm"], gathered_batch=gathered)
    return metrics


def host_values(tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Scalar tensors as Python floats, copied from the device in one transfer."""
    stacked = torch.stack([t.detach().float().reshape(()) for t in tensors.values()])
    return dict(zip(tensors, stacked.tolist()))


def nonfinite_reason(values: Mapping[str, float]) -> str | None:
    """What is not finite among a step's numbers, or None: the first such loss term (the terms before
    their total), else the gradient norm, with every other value beside it."""
    # stable sort: the terms, then the total and the rest, the gradient norm last
    order = sorted(values, key=lambda k: (not k.endswith("_loss"), k == "grad_norm"))
    bad = next((k for k in order if not math.isfinite(values[k])), None)
    if bad is None:
        return None
    what = f"the gradient norm is {values[bad]}" if bad == "grad_norm" else f"{bad} is {values[bad]}"
    others = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k != bad)
    return f"{what} ({others})"


def stop_if_diverged(step: int, values: Mapping[str, float], world: World = World()) -> None:
    """Raise TrainingDiverged (1-based step) on every rank when any rank's values are not finite; every
    rank must call it each step (one all-reduce of one number when there are several ranks)."""
    reason = nonfinite_reason(values)
    flagged = world.flagged_rank(reason is not None)
    if flagged is None:
        return
    if reason is None:  # finite here: another rank diverged, and this one stops with it
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        reason = f"rank {flagged} of {world.size} has a non-finite loss or gradient norm (rank {world.rank}: {shown})"
    elif world.size > 1:
        reason = f"on rank {world.rank} of {world.size}, {reason}"
    raise TrainingDiverged(step + 1, reason)


def train(cfg: TrainConfig, *, resume: bool = False, callbacks: Sequence[object] = (), progress: bool = True) -> dict:
    """Train (or resume) a run. Under torchrun this process is one rank of a distributed run; rank 0's
    summary is the run's, the other ranks return theirs without writing anything."""
    with process_group() as world:
        with surfacing_lost_ranks(world):
            return Trainer(cfg, callbacks, progress, world).fit(resume)
