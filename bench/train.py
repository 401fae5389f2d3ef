"""Training step time and samples/s for the pairwise, distill and full objectives, side by side.

    python bench/train.py [--data data] [--config tiny] [--batch-size 64] [--steps 10] [--rounds 3]

The objectives take turns (round-robin, `--rounds` times `--steps` timed steps each, after 2 warm-up
steps) in one process on the same clips, so machine noise hits all three alike. The figure is the
full/pairwise step-time ratio. Also reported: how many encoder forwards (in token-rows) each needs.
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
from model.losses import OBJECTIVES, Objective  # noqa: E402
from model.text import TextTokenizer  # noqa: E402
from model.train import TrainConfig, build, train_step  # noqa: E402


def tokens_per_row(objective: str, cfg) -> int:
    """Trunk tokens per sample per step (text counted at max length): a proxy for forward cost.
    Singles T, V, A together cost one tuple's tokens; each fused view (TVA, TVA_aug, TVA_hard) one more."""
    fused = sum(v.startswith("TVA") for v in Objective(objective).views(0))
    return (1 + fused) * (cfg.max_text_len + cfg.video_tokens + cfg.audio_tokens)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if not (args.data / "manifests").is_dir():
        from model.synth import SynthConfig, synthesize

        args.data = Path(tempfile.mkdtemp(prefix="bench-data-")) / "data"
        synthesize(args.data, SynthConfig(train=4 * args.batch_size, val=0, test=0))
    enc_cfg = load_config(args.config)
    bank = load_bank(args.data, "train", enc_cfg.decode, limit=8 * args.batch_size)
    tokenizer = TextTokenizer.train(bank.texts, enc_cfg.vocab_size, enc_cfg.max_text_len)
    enc_cfg = replace(enc_cfg, vocab_size=tokenizer.vocab_size)
    states = {}
    for objective in OBJECTIVES:
        cfg = TrainConfig(data=args.data, out=Path("unused"), objective=objective, batch_size=args.batch_size,
                          steps=10_000, warmup_steps=10)
        torch.manual_seed(0)
        states[objective] = (cfg, *build(cfg, enc_cfg))
    times: dict[str, list[float]] = {o: [] for o in OBJECTIVES}
    step = {o: 0 for o in OBJECTIVES}
    for rnd in range(args.rounds + 1):
        for objective, (cfg, encoder, obj, opt) in states.items():
            n = 2 if rnd == 0 else args.steps  # round 0 warms up
            for _ in range(n):
                start = time.perf_counter()
                train_step(step[objective], cfg, encoder, obj, opt, bank, tokenizer)
                if rnd:
                    times[objective].append(time.perf_counter() - start)
                step[objective] += 1
    base = statistics.median(times["pairwise"])
    rows = []
    for objective in OBJECTIVES:
        med = statistics.median(times[objective])
        rows.append({"objective": objective, "median step s": med, "p90 step s": statistics.quantiles(times[objective], n=10)[-1],
                     "samples/s": args.batch_size / med, "x pairwise": med / base,
                     "tokens/sample": tokens_per_row(objective, enc_cfg)})
    report("train", f"Training steps: config {args.config}, batch {args.batch_size}, {args.rounds}x{args.steps} steps each, "
           f"{torch.get_num_threads()} threads", rows, {"config": enc_cfg.to_dict(), "batch_size": args.batch_size})


if __name__ == "__main__":
    main()
