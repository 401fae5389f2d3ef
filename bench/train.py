"""Training step time and samples/s for the pairwise, distill and full objectives, side by side.

    python bench/train.py [--data data] [--config tiny] [--batch-size N] [--steps 10] [--rounds 3] [--token-keep K]

The objectives take turns (round-robin, `--rounds` times `--steps` timed steps each, after 2 warm-up
steps) in one process on the same clips, so machine noise hits all of them alike. Each objective is
timed with every token and with `--token-keep` of the video and audio tokens (by default the
training default). The figure is the full/pairwise step-time ratio. Also reported: how many trunk
tokens each needs per sample.
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
from common import report  # noqa: E402

from model.config import load_config  # noqa: E402
from model.data import load_bank  # noqa: E402
from model.defaults import BATCH_SIZE, TOKEN_KEEP  # noqa: E402
from model.losses import OBJECTIVES, Objective  # noqa: E402
from model.text import TextTokenizer  # noqa: E402
from model.train import TrainConfig, build, kept_count, train_step  # noqa: E402


def tokens_per_row(objective: str, cfg, keep: float = 1.0) -> int:
    """Trunk tokens per sample per step (text counted at max length): a proxy for forward cost.
    Singles T, V, A together cost one tuple's tokens; each fused view (TVA, TVA_aug, TVA_hard) one more."""
    fused = sum(v.startswith("TVA") for v in Objective(objective).views(0))
    kept = kept_count(cfg.video_tokens, keep) + kept_count(cfg.audio_tokens, keep)
    return (1 + fused) * (cfg.max_text_len + kept)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--token-keep", type=float, default=TOKEN_KEEP)
    args = ap.parse_args(argv)
    if not (args.data / "manifests").is_dir():
        from dataset.config import SynthConfig
        from dataset.synth import synthesize

        args.data = Path(tempfile.mkdtemp(prefix="bench-data-")) / "data"
        synthesize(args.data, SynthConfig(train=4 * args.batch_size, val=0, test=0))
    enc_cfg = load_config(args.config)
    bank = load_bank(args.data, "train", enc_cfg.decode, limit=8 * args.batch_size)
    tokenizer = TextTokenizer.train(bank.all_texts(), enc_cfg.vocab_size, enc_cfg.max_text_len)
    enc_cfg = replace(enc_cfg, vocab_size=tokenizer.vocab_size)
    variants = [(o, k) for o in OBJECTIVES for k in dict.fromkeys((1.0, args.token_keep))]
    states = {}
    for objective, keep in variants:
        cfg = TrainConfig(data=args.data, out=Path("unused"), objective=objective, batch_size=args.batch_size,
                          steps=10_000, warmup_steps=10, token_keep=keep)
        torch.manual_seed(0)
        states[objective, keep] = (cfg, *build(cfg, enc_cfg))
    times: dict[tuple[str, float], list[float]] = {v: [] for v in variants}
    step = {v: 0 for v in variants}
    for rnd in range(args.rounds + 1):
        for variant, (cfg, encoder, obj, opt) in states.items():
            n = 2 if rnd == 0 else args.steps  # round 0 warms up
            for _ in range(n):
                start = time.perf_counter()
                train_step(step[variant], cfg, encoder, obj, opt, bank, tokenizer)
                if rnd:
                    times[variant].append(time.perf_counter() - start)
                step[variant] += 1
    base = statistics.median(times["pairwise", 1.0])
    rows = []
    for objective, keep in variants:
        med = statistics.median(times[objective, keep])
        rows.append({"objective": objective, "token keep": keep, "median step s": med,
                     "p90 step s": statistics.quantiles(times[objective, keep], n=10)[-1],
                     "samples/s": args.batch_size / med, "x pairwise": med / base,
                     "tokens/sample": tokens_per_row(objective, enc_cfg, keep)})
    report("train", f"Training steps: config {args.config}, batch {args.batch_size}, {args.rounds}x{args.steps} steps each, "
           f"{torch.get_num_threads()} threads", rows, {"config": enc_cfg.to_dict(), "batch_size": args.batch_size})


if __name__ == "__main__":
    main()
