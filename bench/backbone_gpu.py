"""Training a Qwen2.5-Omni-3B- and 7B-sized backbone on one GPU: step time, samples/s, peak memory and MFU.

    python bench/backbone_gpu.py --sizes 3b 7b            # on a GPU: the prepared run, under 5 minutes on an H200
    python bench/backbone_gpu.py --dry-run                # the smoke path: the tiny thinker on the CPU, < 1 minute

Each size is a RANDOMLY initialised thinker (model.omni.random_checkpoint: the released checkpoints'
architecture, no weights exist here), built on the GPU in bfloat16 without touching the disk, with the
training config model/configs/qwen2_5_omni.json: LoRA r16 on the LLM's q/k/v, the MLP head over the last
token of every layer, the paper's inputs (8 frames of 224 x 224: 256 video tokens; 8 s of 16 kHz audio:
200 audio tokens). Steps are model.train.train_step itself, on an in-memory bank of random clips and
captions, so a step includes what training does on the host: the batch's Whisper features, the L_T
positive's augmentations. The objectives (`--objectives`, default pairwise and full) take turns
(`--rounds` x `--steps` timed steps each after `--warmup` steps), sharing one thinker per size.

Reported per size and objective: the median step time, samples/s, the peak of
torch.cuda.max_memory_allocated over its steps, the tower share (time in encoder.tokenize, the frozen
vision and audio towers, synchronised), the host share (time building batches on the CPU), and the
model FLOPs utilisation

    MFU = F / (step seconds x peak),  peak = --peak-tflops (989: H200 dense bfloat16, no sparsity)
    F   = 2 N_towers x tower tokens            frozen towers, forward only (no gradient is taken)
        + 6 N_llm x LLM tokens                 the LLM, on the trained path: forward 2N + backward 4N
        + 6 N_lora x LLM tokens                LoRA's own weights

where N_llm counts the LLM's weights without its embedding table (a lookup, no matmul) and LoRA;
N_towers the vision tower's weights, counted once per patch (4 temporal x 16 x 16 = 1024 a clip), and the
audio tower's, once per frame after its stride-2 conv (400 a clip for 8 s); LLM tokens are the valid
(unpadded) positions of every LLM forward in the step (each view, the positive + hard-negative pass);
attention's score and value products and the head are left out (about 2% of F at these lengths).
The LLM's frozen weights get no weight gradient, so the arithmetic the GPU does is nearer 4 N_llm per
token: `MFU 4N` reports that count too. `MFU w/o host` divides F by the mean step time less the host's
(an upper bound: part of the host's work overlaps queued GPU work). A size and objective that runs out of memory is retried with
gradient checkpointing on the LLM (`--grad-ckpt auto`, the default; `on` / `off` to force), and the
row says which ran. Writes bench/results/backbone_gpu.json (the --dry-run smoke path writes
backbone_gpu_dry_run.json).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, Stopwatch, report  # noqa: E402

import model.train as training  # noqa: E402
from model.config import load_config  # noqa: E402
from model.data import ClipBank  # noqa: E402
from model.distributed import World  # noqa: E402
from model.losses import OBJECTIVES  # noqa: E402
from model.omni.preprocess import HOP, PATCH, SAMPLE_RATE, TEMPORAL  # noqa: E402
from model.train import TrainConfig, build, train_step  # noqa: E402

H200_BF16_TFLOPS = 989.0  # dense, from NVIDIA's H200 datasheet (1979 is with 2:4 sparsity)


def random_bank(n: int, cfg, seed: int = 0) -> ClipBank:
    """n random clips at the config's decode (uint8 frames, 16 kHz waveforms) with captions of 8-20 words."""
    g = torch.Generator().manual_seed(seed)
    d = cfg.decode
    frames = torch.randint(0, 256, (n, d.num_frames, d.frame_size, d.frame_size, 3), dtype=torch.uint8, generator=g)
    waves = 0.1 * torch.randn(n, int(d.audio_seconds * d.sample_rate), generator=g)
    words = torch.randint(1, 200, (n, 20), generator=g).tolist()
    lengths = torch.randint(8, 21, (n,), generator=g).tolist()
    texts = [" ".join(f"w{w}" for w in row[:k]) for row, k in zip(words, lengths)]
    return ClipBank([f"clip{i}" for i in range(n)], texts, frames, waves, torch.ones(n, dtype=torch.bool),
                    audio_input="waveform")


def flop_counts(encoder) -> dict[str, int]:
    """Weights by what the FLOP count charges them for (see the module docstring)."""
    thinker = encoder.thinker
    lora = sum(p.numel() for n, p in thinker.language_model.named_parameters() if "lora_" in n)
    llm = sum(p.numel() for n, p in thinker.language_model.named_parameters() if "lora_" not in n and "embed_tokens" not in n)
    return {"llm": llm, "lora": lora, "vision": sum(p.numel() for p in thinker.visual.parameters()),
            "audio": sum(p.numel() for p in thinker.audio_tower.parameters())}


def tower_tokens(cfg) -> tuple[int, int]:
    """(vision patches, audio frames after the stride-2 conv) of one clip: what each tower weight sees."""
    d = cfg.decode
    side = d.frame_size // PATCH
    frames = int(d.audio_seconds * SAMPLE_RATE) // HOP
    return -(-d.num_frames // TEMPORAL) * side * side, (frames - 1) // 2 + 1


def instrument(encoder, sync) -> dict:
    """Wrap the encoder's tokenize (timed: the towers) and sequences (counted: LLM tokens, tower calls)."""
    probe = {"towers": Stopwatch(sync), "llm_tokens": 0, "tower_clips": 0}
    tokenize, sequences = encoder.tokenize, encoder.sequences

    def counted_tokenize(batch, modalities, keep=None):
        probe["tower_clips"] += len(batch["text_ids"])
        return tokenize(batch, modalities, keep)

    def counted_sequences(*args, **kwargs):
        seq = sequences(*args, **kwargs)
        probe["llm_tokens"] += int(seq.mask.sum())
        return seq

    encoder.tokenize = probe["towers"].wrap(counted_tokenize)
    encoder.sequences = counted_sequences
    return probe


def bench_size(size: str, args, device: torch.device, enc_cfg, workdir: Path, host: Stopwatch) -> list[dict]:
    from model.omni.random_checkpoint import random_encoder

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    t0 = time.perf_counter()
    torch.manual_seed(0)
    encoder = random_encoder(size, enc_cfg, workdir / size, device, attn_implementation=args.attn)
    built_s = time.perf_counter() - t0
    counts = flop_counts(encoder)
    patches, frames = tower_tokens(enc_cfg)
    probe = instrument(encoder, sync)
    bank, world = random_bank(2 * args.batch_size, enc_cfg), World(device=device)
    runs = {}
    for objective in args.objectives:
        cfg = TrainConfig(data=Path("unused"), out=Path("unused"), objective=objective, batch_size=args.batch_size,
                          steps=10_000, warmup_steps=1, token_keep=1.0, workers=1)
        _, obj, opt = build(cfg, enc_cfg, encoder)
        runs[objective] = {"cfg": cfg, "obj": obj.to(device), "opt": opt, "ckpt": args.grad_ckpt == "on", "times": [],
                           "towers": 0.0, "host": 0.0, "llm_tokens": 0, "tower_clips": 0, "peak": 0, "failed": None}

    def measures() -> dict[str, float]:
        return {"towers": probe["towers"].seconds, "host": host.seconds, "llm_tokens": probe["llm_tokens"],
                "tower_clips": probe["tower_clips"]}

    step = 0
    encoder.train()
    for rnd in range(args.rounds + 1):
        for objective, run in runs.items():
            while run["failed"] is None:  # once, or again with gradient checkpointing after running out of memory
                set_checkpointing(encoder, run["ckpt"])
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                try:
                    for _ in range(args.warmup if rnd == 0 else args.steps):
                        before, start = measures(), time.perf_counter()
                        train_step(step, run["cfg"], encoder, run["obj"], run["opt"], bank, encoder.tokenizer, world)
                        if sync:
                            sync()
                        step += 1
                        if rnd:
                            run["times"].append(time.perf_counter() - start)
                            for key, value in measures().items():
                                run[key] += value - before[key]
                except torch.cuda.OutOfMemoryError as exc:
                    oom = str(exc).splitlines()[0][:120]
                else:
                    oom = None
                if oom is not None:  # out of the except clause: the error's frames, holding activations, are gone
                    encoder.zero_grad(set_to_none=True)
                    run["obj"].zero_grad(set_to_none=True)
                    gc.collect()
                    torch.cuda.empty_cache()
                    if args.grad_ckpt == "auto" and not run["ckpt"]:
                        print(f"{size} {objective}: out of memory without gradient checkpointing, retrying with it")
                        run.update(ckpt=True, times=[], towers=0.0, host=0.0, llm_tokens=0, tower_clips=0, peak=0)
                        continue
                    run["failed"] = f"out of memory: {oom}"
                if cuda:
                    run["peak"] = max(run["peak"], torch.cuda.max_memory_allocated())
                break
    rows = []
    for objective, run in runs.items():
        if run["failed"] or not run["times"]:
            rows.append({"size": size, "objective": objective, "status": run["failed"] or "no steps"})
            continue
        n, total, med = len(run["times"]), sum(run["times"]), statistics.median(run["times"])
        llm_tokens, tower_clips = run["llm_tokens"] / n, run["tower_clips"] / n
        towers = 2 * (counts["vision"] * patches + counts["audio"] * frames) * tower_clips
        flops = towers + 6 * (counts["llm"] + counts["lora"]) * llm_tokens
        flops_4n = towers + (4 * counts["llm"] + 6 * counts["lora"]) * llm_tokens
        peak_flops = args.peak_tflops * 1e12
        rows.append({"size": size, "objective": objective, "status": "ok", "batch": args.batch_size,
                     "grad ckpt": run["ckpt"], "attn": args.attn, "median step s": med,
                     "samples/s": args.batch_size / med, "peak mem GiB": run["peak"] / 2**30 if cuda else None,
                     "tower share": run["towers"] / total, "host share": run["host"] / total,
                     "LLM tokens/step": int(llm_tokens), "TFLOP/step": flops / 1e12,
                     "MFU": flops / (med * peak_flops) if cuda else None,
                     "MFU 4N": flops_4n / (med * peak_flops) if cuda else None,
                     "MFU w/o host": flops / ((total - run["host"]) / n * peak_flops) if cuda else None,
                     "build s": built_s, "params B": sum(counts.values()) / 1e9})
    del encoder, runs
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return rows


def set_checkpointing(encoder, on: bool) -> None:
    """Activation checkpointing of the LLM's decoder layers (the towers run without gradients anyway)."""
    llm = encoder.thinker.language_model
    if on and not llm.is_activation_checkpointing:
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif not on and llm.is_activation_checkpointing:
        llm.activation_checkpointing_disable()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["3b", "7b"], choices=["tiny", "3b", "7b"])
    ap.add_argument("--objectives", nargs="+", default=["pairwise", "full"], choices=list(OBJECTIVES))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per objective per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per objective first")
    ap.add_argument("--grad-ckpt", choices=["auto", "on", "off"], default="auto",
                    help="gradient checkpointing on the LLM (auto: only after running out of memory)")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS, help="the device's dense bf16 peak")
    ap.add_argument("--dry-run", action="store_true",
                    help="the CPU smoke path: --sizes tiny --device cpu, float32, 4 frames of 56, 2 s, batch 4, 2 steps")
    args = ap.parse_args(argv)
    enc_cfg = load_config("qwen2_5_omni")
    if args.dry_run:
        args.sizes, args.device, args.batch_size, args.steps, args.rounds, args.warmup = ["tiny"], "cpu", 4, 2, 1, 2
        enc_cfg = replace(enc_cfg, dtype="float32", decode=replace(enc_cfg.decode, num_frames=4, frame_size=56,
                                                                     audio_seconds=2.0))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("no CUDA device here: run it on a GPU, or pass --dry-run for the CPU smoke path")
    host = Stopwatch()  # the host's share: batches, their Whisper features, the positive's augmentations
    training.make_batch, training.augmented_batch = host.wrap(training.make_batch), host.wrap(training.augmented_batch)
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-backbone-") as tmp:
        for size in args.sizes:
            rows += bench_size(size, args, device, enc_cfg, Path(tmp), host)
    name = "backbone_gpu_dry_run" if args.dry_run else "backbone_gpu"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report(name, f"Qwen2.5-Omni backbone training steps on {gpu}: batch {args.batch_size}, "
           f"{args.rounds}x{args.steps} steps each", rows,
           {"device": gpu, "peak_tflops": args.peak_tflops, "config": enc_cfg.to_dict(), "seconds": time.perf_counter() - t0,
            "args": {k: v for k, v in vars(args).items()}}, out=RESULTS / f"{name}.json")


if __name__ == "__main__":
    main()
