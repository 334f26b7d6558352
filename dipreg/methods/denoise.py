"""Deep-image-prior denoising: the experiment that started it all (Ulyanov et al., CVPR 2018).

Book: chapter "The deep image prior" (``book/05_deep_image_prior.ipynb``).

A randomly initialised :class:`~dipreg.generator.SkipGenerator` maps one *fixed* noise tensor ``z``
to an image, and its weights are fitted to a noisy image by gradient descent on the squared error.
The network reproduces the image's structure long before it reproduces the noise, so the PSNR
against the *clean* image first rises and then falls: stopping early is the regulariser.
:func:`dip_denoise` runs that experiment (through :func:`dipreg.methods.engine.run`, the loop of the registration
methods) and records the whole PSNR curve and a few snapshots.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dipreg.generator import SkipGenerator, init_normal_
from dipreg.methods.dip import resolve_device
from dipreg.methods.engine import Stage, Terms, run
from dipreg.validate import ArrayLike, as_image, same_shape


def psnr(estimate: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB; ``inf`` for identical images.

    ``estimate``, ``reference``: (H, W) images in the same intensity units; ``data_range``: the peak
    intensity range, in those units (1.0 for images in [0, 1]), > 0.
    """
    x = as_image(estimate, "estimate", allow_constant=True)
    y = as_image(reference, "reference", allow_constant=True)
    same_shape(x, y, "estimate", "reference")
    if data_range <= 0:
        raise ValueError(f"data_range: expected a positive number, got {data_range}")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def add_noise(image: ArrayLike, sigma: float, *, seed: int = 0, clip: bool = False) -> np.ndarray:
    """``image`` plus i.i.d. Gaussian noise of standard deviation ``sigma`` (intensity units), seeded.

    ``image`` is (H, W); ``seed`` seeds the noise. With ``clip`` the result is clipped to [0, 1] (intensity
    units); by default it is not, so the noise stays zero-mean.
    """
    img = as_image(image, "image", allow_constant=True)
    if sigma < 0:
        raise ValueError(f"sigma: expected a number >= 0, got {sigma}")
    noisy = img + sigma * np.random.default_rng(seed).standard_normal(img.shape)
    return np.clip(noisy, 0.0, 1.0) if clip else noisy


@dataclass
class DenoiseResult:
    """What :func:`dip_denoise` returns.

    Iteration ``k`` (1-based) is the k-th forward pass, made with the weights after ``k - 1`` Adam steps;
    its output is the one the k-th loss was computed on.

    Attributes:
        psnr: PSNR (dB) of the network output against the clean image at every iteration, (iterations,).
        loss: the training loss (MSE to the *noisy* image) at every iteration, (iterations,).
        psnr_noisy: PSNR of the noisy input against the clean image (the "do nothing" baseline).
        snapshots: network output (H, W) at the requested iterations.
        best_iteration: the iteration with the highest PSNR; ``best``: the output there.
        final: the output at the last iteration.
        seconds: wall time; ``device``: where it ran; ``parameters``: the generator's parameter count.
    """

    psnr: np.ndarray
    loss: np.ndarray
    psnr_noisy: float
    snapshots: dict[int, np.ndarray]
    best_iteration: int
    best: np.ndarray
    final: np.ndarray
    seconds: float
    device: str
    parameters: int
    info: dict[str, object] = field(default_factory=dict)

    @property
    def best_psnr(self) -> float:
        """The highest PSNR on the curve."""
        return float(self.psnr[self.best_iteration - 1])


def dip_denoise(clean: ArrayLike, noisy: ArrayLike, iterations: int = 1000, *, snapshots: Sequence[int] = (),
                down: Sequence[int] = (32, 32, 32, 32), up: Sequence[int] | None = None, skip: int = 4,
                in_channels: int = 32, lr: float = 0.01, input_jitter: float = 0.0, init_std: float | None = None,
                upsample: str = "bilinear", seed: int = 0, device: str | torch.device | None = None,
                progress: bool = False) -> DenoiseResult:
    """Denoise ``noisy`` with a deep image prior and record the PSNR against ``clean`` at every step.

    The generator ``f_theta`` (a :class:`~dipreg.generator.SkipGenerator` with a sigmoid on its one output
    channel) maps a fixed input ``z ~ U(0, 0.1)`` to an image; Adam minimises ``mean((f_theta(z) - noisy)**2)``.
    ``clean`` is used only for measuring: the optimisation never sees it.

    Args:
        clean, noisy: (H, W) images in [0, 1] (``noisy`` may leave that range slightly), same shape.
        iterations: number of Adam steps.
        snapshots: iterations (1..iterations) whose output to keep.
        down, up, skip, upsample: the generator's widths (``up`` defaults to ``down``), see SkipGenerator.
        in_channels: channels of ``z``.
        lr: Adam's learning rate.
        input_jitter: standard deviation of Gaussian noise added to ``z`` at each step (Ulyanov et al. use
            about 1/30 for denoising; 0 = a perfectly fixed input, which overfits sooner).
        init_std: ``None`` keeps PyTorch's default initialisation (as DIP denoising); a number draws every
            convolution weight from N(0, init_std**2) as the registration paper does.
        seed: seeds the weights, ``z`` and the jitter.
        device: ``"cpu"``, ``"cuda"``, or ``None`` for CUDA when available.
        progress: show a progress bar.

    Returns:
        A :class:`DenoiseResult` with the PSNR curve, the loss curve and the snapshots.

    Raises:
        dipreg.methods.engine.RegistrationError: the loss became NaN or inf (the loop is
            :func:`dipreg.methods.engine.run`).
    """
    x_clean = as_image(clean, "clean", allow_constant=True)
    x_noisy = as_image(noisy, "noisy", allow_constant=True)
    same_shape(x_clean, x_noisy, "clean", "noisy")
    if iterations < 1:
        raise ValueError(f"iterations: expected a positive number, got {iterations}")
    bad = [s for s in snapshots if not 1 <= s <= iterations]
    if bad:
        raise ValueError(f"snapshots: iterations must lie in 1..{iterations}, got {bad}")
    if input_jitter < 0:
        raise ValueError(f"input_jitter: expected a number >= 0, got {input_jitter}")
    dev = resolve_device(device)
    start = time.perf_counter()

    torch.manual_seed(seed)  # PyTorch's default initialisation draws from the global generator
    net = SkipGenerator(in_channels, 1, down, down if up is None else up, skip, upsample=upsample)
    if init_std is not None:
        init_normal_(net, init_std, torch.Generator().manual_seed(seed))
    net = net.to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    shape = (1, in_channels, *x_noisy.shape)
    z = torch.rand(shape, generator=gen, device=dev) * 0.1
    target = torch.as_tensor(x_noisy, dtype=torch.float32, device=dev)[None, None]
    reference = torch.as_tensor(x_clean, dtype=torch.float32, device=dev)[None, None]
    keep = set(snapshots)
    psnrs: list[float] = []
    shots: dict[int, np.ndarray] = {}
    best_value, best_it, best_out, out = -np.inf, 1, None, None

    def terms(it: int) -> Terms:
        inp = z if input_jitter == 0 else z + input_jitter * torch.randn(shape, generator=gen, device=dev)
        image = torch.sigmoid(net(inp))
        return Terms([(image - target).pow(2).mean()], image)

    def record(step: int, t: Terms, values: list[float]) -> None:
        """Measure iteration ``step + 1``'s output against the clean image; keep the best and the snapshots."""
        nonlocal best_value, best_it, best_out, out
        it, out = step + 1, t.output.detach()
        with torch.no_grad():
            mse = float((t.output - reference).pow(2).mean())
        psnrs.append(10.0 * np.log10(1.0 / max(mse, 1e-12)))
        if psnrs[-1] > best_value:
            best_value, best_it, best_out = psnrs[-1], it, out
        if it in keep:
            shots[it] = out[0, 0].double().cpu().numpy()

    fit = run([Stage(terms, torch.optim.Adam(net.parameters(), lr=lr), iterations)], total=iterations,
              callback=record, progress=progress, desc="DIP denoising", postfix=None,
              nonfinite=lambda step, _, value: (f"the loss became {value} at iteration {step + 1}; lower the "
                                                f"learning rate (now {lr})"))
    losses = np.asarray(fit.histories[0], dtype=float)
    return DenoiseResult(
        psnr=np.asarray(psnrs, dtype=float), loss=losses, psnr_noisy=psnr(x_noisy, x_clean), snapshots=shots,
        best_iteration=best_it,
        best=best_out[0, 0].double().cpu().numpy(), final=out[0, 0].double().cpu().numpy(),
        seconds=time.perf_counter() - start, device=str(dev),
        parameters=sum(p.numel() for p in net.parameters()),
        info={"seed": seed, "lr": lr, "input_jitter": input_jitter, "init_std": init_std, "down": tuple(down)},
    )
