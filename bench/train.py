"""Training step time and samples/s for the pairwise, distill and full objectives, side by side.

    python bench/train.py [--data data] [--config tiny] [--batch-size N] [--steps 10] [--rounds 3] [--token-keep K]
    python bench/train.py --config qwen2_5_omni [--checkpoint DIR] [--batch-size 8]

The objectives take turns (round-robin, `--rounds` times `--steps` timed steps each, after 2 warm-up
steps) in one process on the same clips, so machine noise hits all of them alike. Each objective is
timed with every token and with `--token-keep` of the video and audio tokens (by default the
training default). The figure is the full/pairwise step-time ratio. Also reported: how many trunk
tokens each needs per sample, and the tower share: the fraction of the step spent in the encoder's
`tokenize` (the tiny encoder's stems; the Qwen2.5-Omni backbone's frozen vision and audio towers).

A Qwen2.5-Omni config trains on every token (`--token-keep` 1 only). Without `--checkpoint` it runs on
the tiny RANDOM thinker (model.omni.random_checkpoint), written to a temporary directory, with a
CPU-sized decode (4 frames of 56 x 56, 2 s of audio) in float32; with one, the config is used as it is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stopwatch, media_tokens, report  # noqa: E402

from model.config import EncoderConfig, load_config  # noqa: E402
from model.data import load_bank  # noqa: E402
from model.defaults import BATCH_SIZE, TOKEN_KEEP  # noqa: E402
from model.losses import OBJECTIVES, Objective  # noqa: E402
from model.text import TextTokenizer  # noqa: E402
from model.train import TrainConfig, build, kept_count, train_step  # noqa: E402

OMNI_BATCH_SIZE = 8


def tokens_per_row(objective: str, cfg, keep: float = 1.0) -> int:
    """Trunk tokens per sample per step (text counted at max length): a proxy for forward cost.
    Singles T, V, A together cost one tuple's tokens; each fused view (TVA, TVA_aug, TVA_hard) one more."""
    fused = sum(v.startswith("TVA") for v in Objective(objective).views(0))
    video, audio = media_tokens(cfg)
    return (1 + fused) * (cfg.max_text_len + kept_count(video, keep) + kept_count(audio, keep))


def cpu_sized(cfg):
    """A Qwen2.5-Omni config shrunk for the tiny random thinker on a CPU: float32, 4 frames of 56, 2 s."""
    return replace(cfg, dtype="float32", decode=replace(cfg.decode, num_frames=4, frame_size=56, audio_seconds=2.0))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--checkpoint", type=Path, help="a Qwen2.5-Omni config's base (default: the tiny random thinker)")
    ap.add_argument("--batch-size", type=int, help=f"default {BATCH_SIZE}, {OMNI_BATCH_SIZE} for a Qwen2.5-Omni config")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--token-keep", type=float, help=f"default {TOKEN_KEEP}; 1 for a Qwen2.5-Omni config")
    args = ap.parse_args(argv)
    enc_cfg = load_config(args.config)
    tiny = isinstance(enc_cfg, EncoderConfig)
    if not tiny and args.token_keep not in (None, 1.0):
        ap.error(f"--token-keep={args.token_keep}: the {enc_cfg.backbone} backbone trains on every token (pass 1)")
    token_keep = args.token_keep or (TOKEN_KEEP if tiny else 1.0)
    batch_size = args.batch_size or (BATCH_SIZE if tiny else OMNI_BATCH_SIZE)
    if not tiny and args.checkpoint is None:
        from model.omni.random_checkpoint import write_random_thinker

        args.checkpoint = write_random_thinker(Path(tempfile.mkdtemp(prefix="bench-thinker-")), "tiny")
        enc_cfg = cpu_sized(enc_cfg)
    if not (args.data / "manifests").is_dir():
        from dataset.config import SynthConfig
        from dataset.synth import synthesize

        args.data = Path(tempfile.mkdtemp(prefix="bench-data-")) / "data"
        synthesize(args.data, SynthConfig(train=4 * batch_size, val=0, test=0))
    bank = load_bank(args.data, "train", enc_cfg, limit=8 * batch_size)
    tokenizer = None
    if tiny:
        tokenizer = TextTokenizer.train(bank.all_texts(), enc_cfg.vocab_size, enc_cfg.max_text_len)
        enc_cfg = replace(enc_cfg, vocab_size=tokenizer.vocab_size)
    variants = [(o, k) for o in OBJECTIVES for k in dict.fromkeys((1.0, token_keep))]
    states, towers = {}, {}
    for objective, keep in variants:
        cfg = TrainConfig(data=args.data, out=Path("unused"), objective=objective, batch_size=batch_size,
                          checkpoint=None if tiny else args.checkpoint, steps=10_000, warmup_steps=10, token_keep=keep)
        torch.manual_seed(0)
        states[objective, keep] = (cfg, *build(cfg, enc_cfg))
        encoder = states[objective, keep][1]
        towers[objective, keep] = watch = Stopwatch()
        encoder.tokenize = watch.wrap(encoder.tokenize)  # the stems / the towers
    tokenizer = tokenizer or states[variants[0]][1].tokenizer
    times: dict[tuple[str, float], list[float]] = {v: [] for v in variants}
    tower_s = {v: 0.0 for v in variants}
    step = {v: 0 for v in variants}
    for rnd in range(args.rounds + 1):
        for variant, (cfg, encoder, obj, opt) in states.items():
            n = 2 if rnd == 0 else args.steps  # round 0 warms up
            for _ in range(n):
                before, start = towers[variant].seconds, time.perf_counter()
                train_step(step[variant], cfg, encoder, obj, opt, bank, tokenizer)
                if rnd:
                    times[variant].append(time.perf_counter() - start)
                    tower_s[variant] += towers[variant].seconds - before
                step[variant] += 1
    base = statistics.median(times["pairwise", 1.0])
    rows = []
    for objective, keep in variants:
        med = statistics.median(times[objective, keep])
        rows.append({"objective": objective, "token keep": keep, "median step s": med,
                     "p90 step s": statistics.quantiles(times[objective, keep], n=10)[-1],
                     "samples/s": batch_size / med, "x pairwise": med / base,
                     "tokens/sample": tokens_per_row(objective, enc_cfg, keep),
                     "tower share": tower_s[objective, keep] / sum(times[objective, keep])})
    checkpoint = {} if tiny else {"checkpoint": str(args.checkpoint)}
    report("train", f"Training steps: config {enc_cfg.name}, batch {batch_size}, {args.rounds}x{args.steps} steps each, "
           f"{torch.get_num_threads()} threads", rows,
           {"config": enc_cfg.to_dict(), "batch_size": batch_size, **checkpoint},
           out=None if tiny else Path(__file__).resolve().parent / "results" / f"train_{enc_cfg.backbone}.json")


if __name__ == "__main__":
    main()
