"""Milliseconds per optimisation step of dipreg's DIP registration, per preset and image size.

One step = one noise draw, the generator forward, the warp, the loss (and fold barrier), backward and the
optimiser step: exactly the body of ``dipreg.register``'s loop (``dipreg.methods.dip.objective``, compiled
with ``--compile`` as ``register(compile=True)`` does; the compilation happens in the warm-up steps).
The achieved FLOP rate counts the generator's and the loss's FLOPs with
``torch.utils.flop_counter.FlopCounterMode`` on one forward pass, times 3 for forward + backward, and is
printed beside the device's measured peak (a large matmul and a large 3 x 3 conv2d, timed the same way).

    python benchmarks/bench_step.py                 # presets paper, cpu, gpu at 128 and 256
    python benchmarks/bench_step.py --threads 1 --repeats 5 --budget 20
    python benchmarks/bench_step.py --device cuda
    python benchmarks/bench_step.py --presets cpu --compile
    python benchmarks/bench_step.py --presets cpu gpu --compare-compile   # eager vs compiled, interleaved
    python benchmarks/bench_step.py --device cuda --amp bf16 --cudnn-benchmark
    python benchmarks/bench_step.py --quick         # a few seconds, tiny sizes (smoke test)
"""

from __future__ import annotations

import platform
import statistics
import time

import torch
from _common import parser, setup
from torch.utils.flop_counter import FlopCounterMode

from dipreg.data import sample_pair
from dipreg.losses import get_loss
from dipreg.methods.dip import DIPField, compiled_objective, make_optimizer, objective
from dipreg.presets import get_preset


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _median_time(fn, dev: torch.device, repeats: int, warmup: int, budget: float) -> tuple[float, int]:
    """Median seconds of ``fn`` over up to ``repeats`` runs after ``warmup``; stops early past ``budget`` s."""
    for _ in range(warmup):
        fn()
    _sync(dev)
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (len(times) < 1 or spent < budget):
        t = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t)
        spent += times[-1]
    return statistics.median(times), len(times)


def peak_flops(dev: torch.device, quick: bool = False) -> dict[str, float]:
    """Measured FLOP/s of a large float32 matmul and a large 3 x 3 conv2d on ``dev``."""
    n = 256 if quick else 2048
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    t_mm, _ = _median_time(lambda: a @ b, dev, 3 if quick else 5, 1, 30.0)
    c, s = (32, 32) if quick else (128, 128)
    x = torch.randn(4, c, s, s, device=dev)
    w = torch.randn(c, c, 3, 3, device=dev)
    t_conv, _ = _median_time(lambda: torch.nn.functional.conv2d(x, w, padding=1), dev, 3 if quick else 5, 1, 30.0)
    return {"matmul": 2 * n**3 / t_mm, "conv2d": 2 * 4 * c * c * 9 * s * s / t_conv}


def make_step(preset: str, size: int, dev: torch.device, compile: bool = False,
              amp: str | None = None, **overrides):
    """The config, a closure running one optimisation step, and the forward FLOPs of that step.

    ``amp``: ``"bf16"`` or ``"fp16"`` runs the objective under ``torch.autocast`` (timing only: ``register``
    itself runs in float32; whether mixed precision keeps the result is a separate check).
    """
    cfg = get_preset(preset).replace(**overrides) if overrides else get_preset(preset)
    pair = sample_pair(size=size)
    m_t = torch.as_tensor(pair.moving, dtype=torch.float32, device=dev)[None, None]
    f_t = torch.as_tensor(pair.fixed, dtype=torch.float32, device=dev)[None, None]
    model = DIPField(cfg, (size, size), torch.Generator().manual_seed(0)).to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    opt = make_optimizer(model.parameters(), cfg, dev)
    loss_fn = get_loss(cfg.loss)

    step_fn = compiled_objective() if compile else objective
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")

    def step():
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss, _, _ = step_fn(model, model.noise(gen, dev), m_t, f_t, loss_fn, cfg.fold_penalty)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())  # as register does: one sync per step

    with FlopCounterMode(display=False) as counter:  # eager: the counter sees every operator
        objective(model, model.noise(gen, dev), m_t, f_t, loss_fn, cfg.fold_penalty)
    return cfg, step, counter.get_total_flops()


def compare_compile(preset: str, size: int, dev: torch.device, rounds: int, block: int,
                    **overrides) -> tuple[float, float]:
    """Median seconds per step of eager and compiled steps, timed in alternating blocks of ``block`` steps for
    ``rounds`` rounds, so that a drift in the machine's speed hits both alike."""
    steps = {"eager": make_step(preset, size, dev, **overrides)[1],
             "compiled": make_step(preset, size, dev, compile=True, **overrides)[1]}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():  # warm-up; compiles (and may recompile once)
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for key, fn in steps.items():
            for _ in range(block):
                t = time.perf_counter()
                fn()
                _sync(dev)
                times[key].append(time.perf_counter() - t)
    return statistics.median(times["eager"]), statistics.median(times["compiled"])


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser(__doc__)
    ap.add_argument("--presets", nargs="+", default=["paper", "cpu", "gpu"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per row (at most)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--budget", type=float, default=30.0, help="stop timing a row after this many seconds")
    ap.add_argument("--compile", action="store_true", help="time register(compile=True)'s step")
    ap.add_argument("--amp", choices=["bf16", "fp16"], help="time the step under torch.autocast (not used by register)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True (CUDA)")
    ap.add_argument("--compare-compile", action="store_true",
                    help="only compare eager and compiled steps, alternating blocks of --repeats steps, 5 rounds")
    args = ap.parse_args(argv)
    dev = setup(args)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    overrides: dict = {}
    rounds = 5
    if args.quick:
        args.sizes, args.repeats, args.warmup, args.budget, rounds = [64], 2, 1, 2.0, 2
        overrides = {"down": (8, 8, 8), "up": (8, 8, 8)}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    print(f"device {dev} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}"
          f"{', torch.compile' if args.compile else ''}{', autocast ' + args.amp if args.amp else ''}"
          f"{', cudnn.benchmark' if args.cudnn_benchmark else ''}")
    if args.compare_compile:
        print(f"\neager and compiled steps alternating, {rounds} rounds of {args.repeats} steps each\n")
        print("| preset | size | eager ms / step | compiled ms / step | speed-up |\n|---|---|---|---|---|")
        rows = []
        for preset in args.presets:
            for size in args.sizes:
                eager, compiled = compare_compile(preset, size, dev, rounds, args.repeats, **overrides)
                rows.append({"preset": preset, "size": size, "eager_ms": eager * 1e3, "compiled_ms": compiled * 1e3})
                print(f"| {preset} | {size} | {eager * 1e3:.1f} | {compiled * 1e3:.1f} | {eager / compiled:.2f}x |",
                      flush=True)
        return rows
    peak = peak_flops(dev, args.quick)
    print(f"measured peak: matmul {peak['matmul'] / 1e9:.1f} GFLOP/s, conv2d {peak['conv2d'] / 1e9:.1f} GFLOP/s\n")
    rows = []
    print("| preset | size | generator grid | ms / step | steps timed | GFLOP / step (fwd+bwd) | GFLOP/s | "
          "% of conv peak |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for size in args.sizes:
            cfg, step, flops = make_step(preset, size, dev, compile=args.compile, amp=args.amp, **overrides)
            # the paper preset at 256 takes seconds per step on a CPU: fewer warm-ups
            warm = 1 if flops > 5e10 and dev.type == "cpu" else args.warmup
            if args.compile:
                warm = max(warm, 3)  # the first calls compile (and may recompile once)
            sec, n = _median_time(step, dev, args.repeats, warm, args.budget)
            total = 3 * flops
            rate = total / sec
            grid = "x".join(str(g) for g in DIPField(cfg, (size, size), torch.Generator()).grid)
            rows.append({"preset": preset, "size": size, "ms": sec * 1e3, "n": n, "gflop": total / 1e9,
                         "gflops": rate / 1e9, "grid": grid})
            print(f"| {preset} | {size} | {grid} | {sec * 1e3:.1f} | {n} | {total / 1e9:.2f} | {rate / 1e9:.1f} | "
                  f"{100 * rate / peak['conv2d']:.0f} % |", flush=True)
    return rows


if __name__ == "__main__":
    main()
