"""Benchmark one full contrastive training step: pairs/s, peak memory and MFU.

A step is forward (both towers, projections) + symmetric InfoNCE + backward + AdamW update,
exactly what the training engine runs per batch, on synthetic inputs (uniform pixels, report
token ids filling ``--text-length`` tokens with no padding, the worst case).

Model FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one eager forward
pass at a small batch, scaled to the benchmark batch (tower FLOPs are linear in the batch)
plus the loss's two ``B x B x D`` similarity products, and multiplied by 3 for forward +
backward (the usual convention: recomputation from gradient checkpointing is *not* counted,
so checkpointing shows up as lower MFU, as it should). MFU = model FLOPs per second / the
device's dense bf16 peak (``--peak-tflops`` to override; on CPU an estimate from cores x clock
x SIMD FMA width).

Usage::

    python bench/train_step.py                      # tiny on CPU (+ ViT-B/16+BERT-base if CUDA)
    python bench/train_step.py --device cuda --batch 256 512 1024 --compile \
        --grad-checkpointing all --checkpoint-policy selective

Prints a table and a JSON summary, and writes one JSON file per run under ``runs/bench/``.
A batch that does not fit in GPU memory is reported and skipped.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medvl.models import ContrastiveLoss, MedVLAligner, create_aligner  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, matched on the device name.
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("RTX 4090", 165.2),
)
CHECKPOINT_CHOICES = ("none", "image", "text", "all")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_peak_tflops(threads: int) -> float | None:
    """Rough fp32 peak: threads x clock x FMA lanes x 2 FLOPs x 2 FMA units."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "").split()
    if not mhz:
        return None
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags and "fma" in flags else 4
    return threads * (max(mhz) * 1e6) * lanes * 2 * 2 / 1e12


def device_info(device: torch.device) -> tuple[str, float | None]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((p for key, p in GPU_PEAK_TFLOPS if key in name), None)
        return name, peak
    threads = torch.get_num_threads()
    return f"{cpu_name()} ({threads} threads)", cpu_peak_tflops(threads)


def build_model(args: argparse.Namespace) -> MedVLAligner:
    overrides: dict[str, Any] = {}
    for tower in ("image", "text"):
        if args.grad_checkpointing in (tower, "all"):
            overrides[f"{tower}__gradient_checkpointing"] = True
            overrides[f"{tower}__checkpoint_every_n_layers"] = args.checkpoint_every
            overrides[f"{tower}__checkpoint_policy"] = args.checkpoint_policy
    overrides["text__max_length"] = args.text_length
    return create_aligner(args.preset, **overrides)


def synthetic_batch(model: MedVLAligner, batch: int, length: int, device: torch.device):
    size = model.config.image.image_size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(batch, 1, size, size, generator=generator)
    vocab = model.text_tower.model.config.vocab_size
    ids = torch.randint(1000, vocab, (batch, length), generator=generator)
    ids[:, 0] = model.tokenizer.cls_token_id or 101
    ids[:, -1] = model.tokenizer.sep_token_id or 102
    mask = torch.ones_like(ids)
    return pixels.to(device), ids.to(device), mask.to(device)


def count_model_flops(model: MedVLAligner, args: argparse.Namespace, device) -> float:
    """Model FLOPs (forward + backward) of one step at ``args.batch`` (see module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash(query_shape, key_shape, value_shape, *rest, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {}
    cpu_op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_op is not None:
        mapping[cpu_op] = cpu_flash
    small = min(args.batch, args.count_batch)
    pixels, ids, mask = synthetic_batch(model, small, args.text_length, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter, autocast, torch.no_grad():
        model(pixels, ids, mask)
    per_pair = counter.get_total_flops() / small
    dim = model.config.embed_dim
    loss_forward = 2 * (2 * args.batch * args.batch * dim)
    return 3.0 * (per_pair * args.batch + loss_forward)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(args).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    flops = count_model_flops(model, args, device)
    loss_fn = ContrastiveLoss()
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, **fused)
    forward = torch.compile(model) if args.compile else model
    pixels, ids, mask = synthetic_batch(model, args.batch, args.text_length, device)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            out = forward(pixels, ids, mask)
            loss = loss_fn(out["image_embeds"], out["text_embeds"], out["logit_scale"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.clamp_logit_scale_()
        return loss.detach()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    if device.type == "cuda":
        peak_bytes = torch.cuda.max_memory_allocated(device)
        memory_kind = "max allocated (CUDA)"
    else:
        peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        memory_kind = "peak RSS of the process"
    name, peak_tflops = device_info(device)
    peak_tflops = args.peak_tflops or peak_tflops
    achieved = flops / step_s / 1e12
    return {
        "preset": args.preset,
        "device": name,
        "device_type": device.type,
        "batch": args.batch,
        "text_length": args.text_length,
        "image_size": model.config.image.image_size,
        "amp_bf16": args.amp,
        "compile": args.compile,
        "grad_checkpointing": args.grad_checkpointing,
        "checkpoint_policy": args.checkpoint_policy,
        "checkpoint_every": args.checkpoint_every,
        "parameters": n_params,
        "step_seconds_median": step_s,
        "step_seconds_all": times,
        "pairs_per_second": args.batch / step_s,
        "model_flops_per_step": flops,
        "achieved_tflops": achieved,
        "peak_tflops": peak_tflops,
        "peak_tflops_source": "--peak-tflops"
        if args.peak_tflops
        else ("bf16 dense datasheet" if device.type == "cuda" else "estimated fp32 CPU peak"),
        "mfu": achieved / peak_tflops if peak_tflops else None,
        "peak_memory_bytes": peak_bytes,
        "peak_memory_kind": memory_kind,
        "warmup_seconds": warmup_s,
        "final_loss": float(loss),
        "torch": torch.__version__,
        "host_load_average_1min": os.getloadavg()[0],
        "attention": model.text_tower.model.config._attn_implementation,
    }


def _checkpointing(result: dict[str, Any]) -> str:
    if result["grad_checkpointing"] == "none":
        return "none"
    every = result["checkpoint_every"]
    return f"{result['grad_checkpointing']} ({result['checkpoint_policy']}, every {every})"


def print_table(results: list[dict[str, Any]]) -> None:
    header = f"{'preset':<20}{'device':<44}{'batch':>6}{'pairs/s':>11}{'step ms':>10}"
    header += f"{'TFLOP/s':>10}{'MFU':>8}{'peak mem':>12}"
    print(header)
    print("-" * len(header))
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(
            f"{r['preset']:<20}{r['device'][:43]:<44}{r['batch']:>6}"
            f"{r['pairs_per_second']:>11.1f}{1000 * r['step_seconds_median']:>10.1f}"
            f"{r['achieved_tflops']:>10.3f}{mfu:>8}{r['peak_memory_bytes'] / 2**30:>10.2f}Gi"
        )
    for r in results:
        print(
            f"  {r['preset']}: {r['parameters'] / 1e6:.1f} M params, bf16={r['amp_bf16']}, "
            f"compile={r['compile']}, checkpointing={_checkpointing(r)}, "
            f"text {r['text_length']} tokens, image {r['image_size']} px, "
            f"peak {r['peak_tflops'] and round(r['peak_tflops'], 1)} TFLOP/s "
            f"({r['peak_tflops_source']}); memory = {r['peak_memory_kind']}"
        )


def parse_args(argv: list[str] | None = None) -> list[argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset", help="aligner preset (default: tiny on CPU, vit_b16-bert_base on CUDA)"
    )
    parser.add_argument("--device", help="cpu or cuda (default: tiny on CPU, plus CUDA if found)")
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        help="pairs per step; several values sweep (default 32 on CPU, 256 on CUDA)",
    )
    parser.add_argument("--text-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--grad-checkpointing", choices=CHECKPOINT_CHOICES, default="none")
    parser.add_argument(
        "--checkpoint-every", type=int, default=1, help="checkpoint every n-th transformer layer"
    )
    parser.add_argument(
        "--checkpoint-policy",
        choices=("full", "selective"),
        default="selective",
        help="full: recompute whole layers; selective: keep matmul/attention outputs, "
        "recompute only elementwise ops",
    )
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on for CUDA, off for CPU)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--peak-tflops", type=float, help="override the device's peak TFLOP/s")
    parser.add_argument(
        "--count-batch", type=int, default=4, help="batch at which FLOPs are counted (then scaled)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    args = parser.parse_args(argv)
    runs = []
    devices = (
        [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    for device in devices:
        on_cpu = device == "cpu"
        for batch in args.batch or [32 if on_cpu else 256]:
            one = argparse.Namespace(**vars(args))
            one.device, one.batch = device, batch
            one.preset = args.preset or ("tiny" if on_cpu else "vit_b16-bert_base")
            one.amp = (not on_cpu) if args.amp is None else args.amp
            runs.append(one)
    return runs


def main(argv: list[str] | None = None) -> int:
    results = []
    for args in parse_args(argv):
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            print("CUDA requested but not available", file=sys.stderr)
            return 2
        try:
            result = run(args)
        except torch.cuda.OutOfMemoryError:
            result = None
        if result is None:  # outside the handler, so the failed step's tensors are freed
            gc.collect()
            torch.cuda.empty_cache()
            print(f"batch {args.batch}: out of memory on {args.device}", file=sys.stderr)
            continue
        results.append(result)
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"train_step-{result['preset']}-{result['device_type']}-b{args.batch}"
        name += f"-ckpt_{args.grad_checkpointing}"
        if args.grad_checkpointing != "none":
            name += f"_{args.checkpoint_policy}_{args.checkpoint_every}"
        name += "-compile" if args.compile else ""
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    if not results:
        return 1
    print_table(results)
    summary = [{k: v for k, v in r.items() if k != "step_seconds_all"} for r in results]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
