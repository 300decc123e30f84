"""Forward+backward throughput of GBV-Net per modality and preset (samples/s), on CPU and, if present, GPU.

On a GPU it also runs bf16 autocast and reports model FLOP utilisation (MFU): achieved model FLOP/s (3x the
forward FLOPs counted by ``torch.utils.flop_counter``, for forward + backward) against the GPU's bf16 matmul
peak *measured in the same run* (a large bf16 matmul), so the ratio needs no datasheet number.

    python bench/model_throughput.py [--quick] [--write]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import machine, write_section
from gbvnet.models import create_model
from gbvnet.models.__main__ import count_flops, example_inputs


def samples_per_second(model, batch: int, device: str, bf16: bool, iters: int) -> float:
    model.train().to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    inputs = {k: v.to(device) for k, v in example_inputs(model, batch).items()}
    y = torch.randint(0, 2, (batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(**inputs)["logits"].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - start)


def matmul_peak_tflops(n: int = 8192, iters: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - start) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    lines = [f"Machine: {machine()}", "",
             "| device | preset | modality | batch | samples/s | GFLOP/sample (fwd) | MFU |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    peak = matmul_peak_tflops() if torch.cuda.is_available() else None
    if peak:
        lines.insert(1, f"Measured bf16 matmul peak: {peak:.0f} TFLOP/s")
    for device in devices:
        for preset in ("smoke", "paper"):
            for modality in ("bio", "face", "facebio"):
                model = create_model(preset, modality=modality)
                flops = count_flops(model)
                batch = 64 if device == "cuda" else (16 if preset == "smoke" else 4)
                iters = 2 if args.quick else (20 if device == "cuda" else 5)
                rate = samples_per_second(model, batch, device, bf16=device == "cuda", iters=iters)
                mfu = f"{3 * flops * rate / (peak * 1e12):.1%}" if device == "cuda" and peak else "-"
                label = "cuda (bf16)" if device == "cuda" else "cpu (fp32)"
                lines.append(f"| {label} | {preset} | {modality} | {batch} | {rate:,.1f} | {flops / 1e9:.3f} | {mfu} |")
                print(lines[-1], flush=True)
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_section("Model throughput (bench/model_throughput.py)", report)


if __name__ == "__main__":
    main()
