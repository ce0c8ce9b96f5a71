"""Where a batched training step's time goes: the same step's kernels, recorded and timed alone.

`roofline_fraction` divides the batched run's FLOP/s by a large GEMM's. measure_products_alone times one
batched MLP training step (forward, loss, backward, optimizer step) and then the matrix products that
step made (every mm, addmm, bmm and baddbmm call, with the very tensors the step passed them), replayed
back to back with nothing in between. The products carry nearly all of the step's FLOPs, so the fraction
they reach alone bounds what the step could reach if everything else it does were free.
measure_step_shares does the same for the GRU and CNN entries, for the kernels their seeds must keep to
stay bit for bit (LOCKED_KERNELS): what is left is all that a faster transcription could save.

    breakdown = measure_products_alone(torch, MODES["full"], device, threads=2, gemm_flops_per_s=9.4e10,
                                       interleaved=interleaved)
    shares = measure_step_shares(torch, "mnist1d_gru", threads=1, repeats=9, interleaved=interleaved)
"""
from __future__ import annotations

import statistics

# the products whose FLOPs the step's count is made of: 2·m·n·k per matrix (FlopCounterMode counts the same)
PRODUCT_OPS = ("mm", "addmm", "bmm", "baddbmm")


def product_flops(name: str, args) -> int:
    """FLOPs of one recorded product: 2·m·n·k, times the batch for bmm and baddbmm."""
    left, right = (args[0], args[1]) if name in ("mm", "bmm") else (args[1], args[2])
    batch = left.shape[0] if left.dim() == 3 else 1
    return 2 * batch * left.shape[-2] * left.shape[-1] * right.shape[-1]


def record_products(torch, run, names=PRODUCT_OPS) -> list[tuple]:
    """Run `run()` once and return its calls of the aten ops `names` (by default the matrix products) as
    (name, op, args, kwargs), in call order, forward and backward (a dispatch mode sees the calls autograd
    makes below it, and vmap's batched calls as the plain ops they become)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []
    packets = {getattr(torch.ops.aten, name): name for name in names}

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = packets.get(func.overloadpacket)
            if name is not None:
                calls.append((name, func, args, kwargs or {}))
            return func(*args, **(kwargs or {}))

    with Record():
        run()
    return calls


def batched_step(torch, paper: str, n_seeds: int, device):
    """One training step of a catalog entry's seeds batched, as train_seeds takes it (Σ over seeds of each
    seed's mean cross-entropy, backward, the entry's optimizer over a row per seed), on batches drawn
    once; each call takes the next batch. Returns (step, cfg)."""
    from replicate.bench_seeds import setup
    from replicate.optim import build_optimizer
    from replicate.seed_stack import SeedStack

    cfg, data, plan = setup(torch, [f"paper={paper}"], 10, device)
    stack = SeedStack(cfg.model, list(range(n_seeds)), dtype=torch.float32, device=device)
    # no entry measured here decays its weights: one group, one buffer
    optimizer = build_optimizer([{"params": stack.flatten([list(stack.leaves)])[0], "weight_decay": 0.0}],
                                plan.update.optimizer)
    generator = torch.Generator(device="cpu").manual_seed(0)
    batches = [torch.randint(len(data.y_train), (n_seeds, cfg.train.batch_size), generator=generator).to(device)
               for _ in range(16)]
    position = [0]

    def step():
        indices = batches[position[0] % len(batches)]
        position[0] += 1
        logits = stack(data.x_train[indices])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), data.y_train[indices].flatten(), reduction="sum")
        (loss / indices.shape[1]).backward()
        optimizer.step()
        stack.zero_grad()

    return step, cfg


def replayer(calls):
    """A function that makes the recorded calls again, in order, with the same tensors."""
    def replay():
        for _, op, args, kwargs in calls:
            op(*args, **kwargs)
    return replay


def measure_products_alone(torch, settings: dict, device, threads: int, gemm_flops_per_s: float, *,
                           interleaved) -> dict:
    """The 8-seed batched MLP step of seeds_speedup, and its matrix products replayed alone, interleaved.
    gemm_flops_per_s: the ceiling roofline_fraction uses, at the same thread count."""
    torch.set_num_threads(threads)
    step, _ = batched_step(torch, "mnist1d_mlp", 8, device)
    products = record_products(torch, step)
    flops = sum(product_flops(name, args) for name, _, args, _ in products)
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    repeat = 20  # steps per sample: a sample of a few milliseconds, well above the timer's resolution
    replay = replayer(products)
    samples = interleaved({"step": lambda: [step() for _ in range(repeat)],
                           "products_alone": lambda: [replay() for _ in range(repeat)]},
                          settings["seed_repeats"], synchronize)
    step_s, products_s = (statistics.median(samples[name]) / repeat for name in ("step", "products_alone"))
    per_shape = {}
    for name, _, args, _ in products:
        shapes = " × ".join("x".join(map(str, tensor.shape)) for tensor in args if hasattr(tensor, "shape"))
        per_shape[f"{name} {shapes}"] = per_shape.get(f"{name} {shapes}", 0) + 1
    return {"step_s": step_s, "products_alone_s": products_s, "product_flops_per_step": flops,
            "products": len(products), "threads": threads,
            "step_fraction": flops / step_s / gemm_flops_per_s,
            "products_alone_fraction": flops / products_s / gemm_flops_per_s,
            "products_share_of_step_time": products_s / step_s, "calls_per_shape": per_shape,
            "note": "one 8-seed training step of the MLP entry (forward, loss, backward, fused optimizer step, no "
                    "evaluation) vs the matrix products it made, replayed alone with the same tensors; FLOPs: "
                    "2·m·n·k of those products; fractions of the same GEMM ceiling as roofline_fraction"}


# the kernels a batched step of the slow catalog entries must keep to stay bit for bit its seeds alone
LOCKED_KERNELS = {
    "mnist1d_gru": {"matrix products (the BLAS's, per seed)": PRODUCT_OPS, "sigmoid (scalar rows)": ("sigmoid_",)},
    "mnist1d_cnn": {"convolutions (oneDNN's, grouped over seeds by vmap)": ("convolution", "convolution_backward"),
                    "matrix products": PRODUCT_OPS},
}


def measure_step_shares(torch, paper: str, threads: int, repeats: int, *, interleaved, device=None) -> dict:
    """The share of a 5-seed batched step of `paper` (a key of LOCKED_KERNELS) spent in each group of its
    kernels: the step and each group's recorded calls replayed alone, interleaved, medians.

        shares = measure_step_shares(torch, "mnist1d_gru", threads=1, repeats=9, interleaved=interleaved)"""
    device = device or torch.device("cpu")
    torch.set_num_threads(threads)
    step, _ = batched_step(torch, paper, 5, device)
    calls = {group: record_products(torch, step, names) for group, names in LOCKED_KERNELS[paper].items()}
    samples = interleaved({"step": step, **{group: replayer(recorded) for group, recorded in calls.items()}}, repeats)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {"paper": paper, "threads": threads, "step_s": medians["step"],
            "groups": {group: {"calls": len(calls[group]), "alone_s": medians[group], "share": medians[group] / medians["step"]}
                       for group in calls}}
