"""dipreg.register: API, conventions, reproducibility, recovery of a known field, bad input."""

import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

import dipreg
from dipreg.config import RegistrationConfig, field_names
from dipreg.methods.affine import fit_affine
from dipreg.methods.dip import RegistrationError, Step, compiled_objective, make_field, objective, optimiser_images
from dipreg.presets import PRESETS, default_config, differences

TINY = dict(down=(8, 16, 16), up=(8, 16, 16), in_channels=8, iterations=3, readout_draws=2, detail_steps=0)
"""A small network; no detail stage (tests/test_detail.py has those), so the history is the network's steps."""


def blob_pair(shape=(64, 64), shift=(2.0, -1.5)):
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(float)
    img = np.exp(-(((rows - 30) / 9) ** 2 + ((cols - 34) / 12) ** 2))
    img += 0.5 * np.exp(-(((rows - 40) / 5) ** 2 + ((cols - 20) / 5) ** 2))
    u = np.zeros((2,) + shape)
    u[0], u[1] = shift
    return img, dipreg.warp(img, u), u


def test_register_returns_result_in_conventions():
    m, f, _ = blob_pair()
    res = dipreg.register(m, f, seed=0, progress=False, **TINY)
    assert res.warped.shape == (64, 64) and res.displacement.shape == (2, 64, 64)
    assert len(res.history) == 3 and res.seconds > 0
    assert isinstance(res.config, RegistrationConfig) and res.config.iterations == 3
    np.testing.assert_allclose(res.warped, dipreg.warp(m, res.displacement))
    assert set(res.metrics()) >= {"ssim_before", "ssim_after", "jac_mean", "folded_fraction", "std_log_jac"}
    assert "dip" in repr(res)


def test_same_seed_same_numbers_on_cpu():
    m, f, _ = blob_pair()
    a = dipreg.register(m, f, seed=5, progress=False, device="cpu", **TINY)
    b = dipreg.register(m, f, seed=5, progress=False, device="cpu", **TINY)
    c = dipreg.register(m, f, seed=6, progress=False, device="cpu", **TINY)
    assert a.history == b.history
    np.testing.assert_array_equal(a.displacement, b.displacement)
    assert not np.array_equal(a.displacement, c.displacement)


def test_accepts_torch_tensors_and_default_picks_preset():
    m, f, _ = blob_pair()
    res = dipreg.register(torch.from_numpy(m), torch.from_numpy(f).float(), progress=False, iterations=2,
                          down=(8, 8), up=(8, 8))
    assert res.info["preset"] == default_config(res.device).preset  # "gpu" on CUDA, "cpu" elsewhere
    assert res.info["overridden"] == {"iterations": 2, "down": (8, 8), "up": (8, 8)}


def test_recovers_known_smooth_translation():
    """A pair made with a known 2-pixel-ish shift is recovered to well under a pixel inside the blob."""
    m, f, u = blob_pair(shift=(2.0, -1.5))
    res = dipreg.register(m, f, config="cpu", seed=0, progress=False, iterations=150)
    inside = m > 0.3
    err = np.sqrt(((res.displacement - u) ** 2).sum(0))[inside].mean()
    assert err < 0.5, err
    assert res.metrics()["folded_fraction"] == 0.0


def test_callback_sees_steps_and_can_stop():
    m, f, _ = blob_pair()
    seen: list[Step] = []

    def cb(step: Step) -> bool:
        seen.append(step)
        return step.iteration == 1

    res = dipreg.register(m, f, progress=False, callback=cb, **{**TINY, "iterations": 10})
    assert [s.iteration for s in seen] == [0, 1] and res.info["stopped"] == "callback"
    assert seen[0].displacement.shape == (1, 2, 64, 64)


def test_the_field_returned_is_the_evaluated_one_with_the_lowest_loss():
    """Fixed noise and ``readout="best"`` (the cpu preset): the field of the step with the lowest loss (fold barrier
    and volume term included), as the callback saw it, not the weights after the last Adam step, which no loss has
    evaluated (``readout="last"``). Fresh noise (the paper) keeps its mean over draws."""
    m, f, _ = blob_pair()
    kw = dict(config="cpu", seed=0, progress=False, **{**TINY, "lr": 0.03})
    res = dipreg.register(m, f, **{**kw, "iterations": 12})
    seen: list[Step] = []  # one step more: its step 12 evaluates the weights that the 12-step run ended with
    dipreg.register(m, f, callback=seen.append, **{**kw, "iterations": 13})
    best = res.info["readout_step"]
    assert best == int(np.argmin(res.history)) and len(res.history) == 12
    np.testing.assert_array_equal(res.displacement, seen[best].displacement[0].double().numpy())
    assert not np.array_equal(res.displacement, seen[12].displacement[0].double().numpy())
    last = dipreg.register(m, f, **{**kw, "iterations": 12, "readout": "last"})  # the paper's choice
    np.testing.assert_array_equal(last.displacement, seen[12].displacement[0].double().numpy())
    assert last.info["readout_step"] is None
    paper = dipreg.register(m, f, config="paper", seed=0, progress=False, **TINY)
    assert paper.info["readout_step"] is None


def test_a_callback_that_is_not_callable_is_refused_before_the_run(monkeypatch):
    m, f, _ = blob_pair()
    monkeypatch.setattr(sys.modules["dipreg.methods.dip"], "make_field", lambda *a, **k: pytest.fail("the run started"))
    with pytest.raises(TypeError, match="callback: expected a function"):
        dipreg.register(m, f, progress=False, callback=5, **TINY)


def test_early_stopping():
    m, f, _ = blob_pair()
    res = dipreg.register(m, f, progress=False, patience=2, min_delta=10.0, **{**TINY, "iterations": 50})
    assert res.info["stopped"] == "converged" and len(res.history) == 3


def test_nan_loss_stops_with_message(monkeypatch):
    m, f, _ = blob_pair()
    monkeypatch.setitem(dipreg.losses.LOSSES, "mae", lambda a, b: (a - b).abs().mean() * float("nan"))
    with pytest.raises(RegistrationError, match="NaN|nan") as info:
        dipreg.register(m, f, progress=False, **TINY)
    assert info.value.history == []


def test_compiled_objective_gives_the_eager_loss_and_gradients():
    """One evaluation of the default's objective (affine stage, control grid, velocity, fold barrier and volume
    regulariser) through ``torch.compile`` against eager mode, same weights and noise: loss and every weight's
    gradient agree to float rounding. Only the optimisation, step by step, amplifies that rounding."""
    m, f, _ = blob_pair()
    cfg = dipreg.get_preset("cpu").replace(**TINY)
    dev = torch.device("cpu")
    m_t, f_t = (t[None, None] for t in optimiser_images(m, f, cfg, dev))
    loss_fn = dipreg.losses.get_loss(cfg.loss)
    results = []
    for fn in (objective, compiled_objective()):
        model = make_field(cfg, m.shape, 1, dev)
        model.set_prealign(fit_affine(m_t, f_t, loss_fn))
        z = model.noise(torch.Generator().manual_seed(1), dev)
        loss, u, _ = fn(model, z, m_t, f_t, loss_fn, 100.0, cfg.volume_penalty)  # a fold barrier that acts
        loss.backward()
        results.append((loss.detach(), u.detach(), [p.grad.clone() for p in model.parameters()]))
    (le, ue, ge), (lc, uc, gc) = results
    torch.testing.assert_close(lc, le, rtol=1e-5, atol=0)
    torch.testing.assert_close(uc, ue, rtol=1e-4, atol=1e-6)
    assert float(ue.abs().max()) > 0.05  # not two near-zero fields
    scale = max(float(g.abs().max()) for g in ge)  # some weights' gradients are ~0: compare on one scale
    for a, b in zip(gc, ge, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_compiled_registration_agrees_with_eager_mode():
    """compile=True end to end: the loss before the first step agrees to float rounding; 4 steps later the
    rounding, amplified by the optimisation (the log det J term most), still leaves the losses within 1 % and
    the fields within 0.01 px."""
    m, f, _ = blob_pair()
    cfg = {**TINY, "iterations": 4}
    eager = dipreg.register(m, f, seed=1, progress=False, device="cpu", **cfg)
    compiled = dipreg.register(m, f, seed=1, progress=False, device="cpu", compile=True, **cfg)
    assert compiled.history[0] == pytest.approx(eager.history[0], rel=1e-5)
    np.testing.assert_allclose(compiled.history, eager.history, rtol=1e-2)
    np.testing.assert_allclose(compiled.displacement, eager.displacement, atol=1e-2)
    assert np.abs(eager.displacement).max() > 0.5  # the comparison is not between two near-zero fields


def test_compile_failure_says_how_to_go_on(monkeypatch):
    register_module = sys.modules["dipreg.methods.dip"]

    def broken(*args, **kwargs):
        raise RuntimeError("InductorError: no working C++ compiler found")

    monkeypatch.setattr(register_module, "compiled_objective", lambda: broken)
    m, f, _ = blob_pair()
    with pytest.raises(RegistrationError, match=r"torch.compile failed.*C\+\+ compiler.*compile=False") as info:
        dipreg.register(m, f, progress=False, compile=True, **TINY)
    assert info.value.history == []


@pytest.mark.parametrize("callback", [None, lambda step: None])
def test_nan_mid_run_names_the_iteration_and_keeps_the_finite_losses(monkeypatch, callback):
    """The loss is checked before the step that would spread NaN into the weights (a later grid_sample on
    NaN coordinates can crash the process on a CPU), with or without a callback."""
    calls = {"n": 0}

    def nan_from_the_sixth_call(a, b):
        calls["n"] += 1
        return (a - b).abs().mean() * (float("nan") if calls["n"] > 5 else 1.0)

    monkeypatch.setitem(dipreg.losses.LOSSES, "mae", nan_from_the_sixth_call)
    m, f, _ = blob_pair()
    with pytest.raises(RegistrationError, match="at iteration 5;") as info:
        # no affine pre-alignment, whose fit would make the first calls of the loss
        dipreg.register(m, f, progress=False, callback=callback, **{**TINY, "iterations": 20, "prealign": "none"})
    assert len(info.value.history) == 5 and all(np.isfinite(info.value.history))


@pytest.mark.parametrize(
    ("moving", "fixed", "exc", "match"),
    [
        (np.zeros((3, 32, 32)), np.zeros((32, 32)), ValueError, "moving: expected a 2D image"),
        (np.random.rand(32, 32), np.random.rand(32, 33), ValueError, "must match"),
        (np.random.rand(32, 32), np.ones((32, 32)), ValueError, "fixed: the image is constant"),
        (np.full((32, 32), np.nan), np.random.rand(32, 32), ValueError, "NaN"),
        (np.random.rand(32, 32, 3), np.random.rand(32, 32, 3), ValueError, "RGB"),
        (np.zeros((0, 0)), np.zeros((0, 0)), ValueError, "at least 2 x 2"),
        ("not an image", np.random.rand(8, 8), TypeError, "moving"),
    ],
)
def test_bad_images(moving, fixed, exc, match):
    with pytest.raises(exc, match=match):
        dipreg.register(moving, fixed, progress=False, **TINY)


def test_unknown_override_and_bad_values():
    m, f, _ = blob_pair()
    with pytest.raises(TypeError, match="unknown config field"):
        dipreg.register(m, f, progress=False, iteratons=3)
    with pytest.raises(ValueError, match="config.loss"):
        dipreg.register(m, f, progress=False, loss="l3")
    with pytest.raises(ValueError, match="unknown preset"):
        dipreg.register(m, f, progress=False, config="fast")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        if not torch.cuda.is_available():
            dipreg.register(m, f, progress=False, device="cuda")
        else:
            raise ValueError("no CUDA GPU (skipped on GPU machines)")


def test_too_small_image_for_generator():
    with pytest.raises(ValueError, match="too small"):
        dipreg.register(np.random.rand(16, 16), np.random.rand(16, 16), progress=False, config="paper")


def test_presets_are_valid_and_documented():
    assert {"paper", "cpu", "gpu"} <= set(PRESETS)
    for name, cfg in PRESETS.items():
        assert cfg.preset == name and cfg.notes, name
        assert set(cfg.notes) <= set(field_names())
    assert PRESETS["paper"].noise == "fresh" and PRESETS["paper"].init_std == 0.01
    assert PRESETS["paper"].loss == "mae" and PRESETS["paper"].optimizer == "adam"
    assert PRESETS["paper"].integrate == 0 and PRESETS["paper"].fold_penalty == 0


def test_fine_preset_is_the_cpu_method_on_a_finer_grid():
    """`fine` must stay the `cpu` method with a control grid twice as fine: any other difference is a drift."""
    assert differences("fine", "cpu").keys() == {"grid_scale", "output_scale"}
    fine, cpu = PRESETS["fine"], PRESETS["cpu"]
    assert fine.grid_scale * 2 == cpu.grid_scale and fine.output_scale * 2 == cpu.output_scale
    grids = [make_field(c, (256, 256), 0, torch.device("cpu")).grid for c in (fine, cpu)]
    assert grids == [(128, 128), (64, 64)]


def test_field_runs_its_last_squarings_on_a_grid_twice_as_fine():
    """integrate_refine=k: the field is integrate_velocity with the last k squarings on twice the generator's grid
    (capped at the image), then resized to the image; integrate=0 ignores it."""
    from dipreg.transform import integrate_velocity, resize_displacement

    cpu, dev = PRESETS["cpu"], torch.device("cpu")
    assert cpu.integrate_refine == 2 and RegistrationConfig().integrate_refine == 0
    for shape, fine_grid in (((256, 256), (128, 128)), ((64, 96), (32, 48)), ((20, 24), (20, 24))):
        model = make_field(cpu, shape, 0, dev)
        assert model.refine_grid == fine_grid
    model = make_field(cpu, (128, 160), 0, dev)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.normal_(0.0, 0.3, generator=gen)
        z = model.noise(torch.Generator().manual_seed(2), dev)
        v = model.net(z) * model.factor
        want = resize_displacement(integrate_velocity(v, 7, refine=2, refine_shape=(64, 80)), (128, 160))
        torch.testing.assert_close(model(z), want, rtol=0, atol=0)
        coarse = make_field(cpu.replace(integrate_refine=0), (128, 160), 0, dev)
        coarse.load_state_dict(model.state_dict())
        assert (coarse(z) - model(z)).abs().max() > 1e-2
        one = make_field(cpu.replace(integrate=1, integrate_refine=1), (128, 160), 0, dev)
        one.load_state_dict(model.state_dict())
        want = resize_displacement(integrate_velocity(v, 1, refine=1, refine_shape=(64, 80)), (128, 160))
        torch.testing.assert_close(one(z), want, rtol=0, atol=0)
        flat = [make_field(cpu.replace(integrate=0, integrate_refine=k), (128, 160), 0, dev) for k in (0, 2)]
        for f in flat:
            f.load_state_dict(model.state_dict())
        torch.testing.assert_close(flat[1](z), flat[0](z), rtol=0, atol=0)
        torch.testing.assert_close(flat[0](z), torch.nn.functional.interpolate(
            model.net(z) * flat[0].factor, size=(128, 160), mode="bilinear", align_corners=True), rtol=0, atol=0)
    assert make_field(PRESETS["fine"], (256, 256), 0, dev).refine_grid == (256, 256)
    with pytest.raises(ValueError, match="config.integrate_refine: expected at most integrate=1"):
        cpu.replace(integrate=1)


def test_config_replace_and_dict():
    cfg = RegistrationConfig().replace(down=[4, 8], up=[4, 8], lr=0.1)
    assert cfg.down == (4, 8) and cfg.to_dict()["lr"] == 0.1 and "notes" not in cfg.to_dict()


def test_smooth_sample_registration_is_regular():
    """The CPU preset on a real brain pair (embedded sample, 128 px): SSIM improves and nothing folds."""
    pair = dipreg.data.sample_pair(size=128)
    res = dipreg.register(pair.moving, pair.fixed, config="cpu", seed=0, progress=False, iterations=80)
    m = res.metrics()
    assert m["ssim_after"] > m["ssim_before"] + 0.02
    assert m["folded_fraction"] < 1e-3
    # the affine pre-alignment scales this brain onto the template (det 0.835); the field on top keeps the volume
    affine_det = np.linalg.det(np.array(res.info["affine"])[:, :2])
    assert abs(m["jac_mean"] - affine_det) < 0.05
    assert np.all(np.isfinite(ndimage.sobel(res.displacement[0])))


# --- config validation: each field's type and range, as the API and ``--set key=value`` deliver them -----------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("iterations", 2.5, TypeError), ("readout_draws", 1.5, TypeError), ("integrate", 1.5, TypeError),
        ("in_channels", 2.5, TypeError), ("iterations", True, TypeError), ("iterations", 0, ValueError),
        ("patience", -1, ValueError), ("skip", True, TypeError), ("skip", -1, ValueError),
        ("down", 16, TypeError), ("up", "16", TypeError), ("down", [16, 2.5], TypeError), ("down", [], TypeError),
        ("grid_scale", 0.5, TypeError), ("grid_scale", 0, ValueError),
        ("lr", "abc", TypeError), ("lr", "nan", TypeError), ("lr", NAN, ValueError), ("lr", INF, ValueError),
        ("lr", 0, ValueError), ("lr", True, TypeError), ("min_delta", "abc", TypeError),
        ("min_delta", NAN, ValueError), ("min_delta", -1e-3, ValueError), ("fold_penalty", NAN, ValueError),
        ("noise_std", NAN, ValueError), ("noise_std", -0.1, ValueError), ("output_scale", INF, ValueError),
        ("output_scale", 0, ValueError), ("init_std", 0.0, ValueError), ("init_std", NAN, ValueError),
        ("init_std", "none", TypeError), ("normalize", "no", TypeError), ("normalize", 1, TypeError),
        ("upsample", 5, ValueError), ("loss", ["mae"], ValueError), ("readout", "mean", ValueError),
        ("prealign_finest", 3, ValueError), ("prealign_finest", 2.0, TypeError),
        ("integrate_refine", -1, ValueError), ("integrate_refine", 1.5, TypeError),
    ],
)
def test_config_refuses_bad_field_values(field, value, exc):
    """Each bad value fails in the config with the field's name, both via replace() and the constructor."""
    with pytest.raises(exc, match=f"config.{field}: expected"):
        PRESETS["cpu"].replace(**{field: value})
    with pytest.raises(exc, match=f"config.{field}: expected"):
        RegistrationConfig(**{field: value})


@pytest.mark.parametrize(
    ("text", "field", "exc"),
    [("iterations=2.5", "iterations", TypeError), ("down=16", "down", TypeError), ("skip=true", "skip", TypeError),
     ("lr=abc", "lr", TypeError), ("lr=nan", "lr", TypeError), ("lr=NaN", "lr", ValueError),
     ("lr=Infinity", "lr", ValueError), ("min_delta=abc", "min_delta", TypeError),
     ("grid_scale=0.5", "grid_scale", TypeError), ("normalize=no", "normalize", TypeError),
     ("init_std=0", "init_std", ValueError)],
)
def test_config_refuses_bad_command_line_values(text, field, exc):
    from dipreg.cli import _key_value

    key, value = _key_value(text)
    with pytest.raises(exc, match=f"config.{field}: expected"):
        dipreg.register(np.random.rand(32, 32), np.random.rand(32, 32), progress=False, **{key: value})


def test_config_accepts_good_values_and_normalises_them():
    from dipreg.cli import _key_value

    cfg = RegistrationConfig(down=[16], up=[16], lr=np.float32(0.5), iterations=np.int64(3), init_std=None,
                             normalize=np.bool_(False))
    assert cfg.down == (16,) and isinstance(cfg.down, tuple) and hash(cfg)
    assert type(cfg.lr) is float and type(cfg.iterations) is int and cfg.normalize is False
    assert RegistrationConfig(down=np.array([8, 16]), up=(8, 16)).down == (8, 16)
    cfg = PRESETS["cpu"].replace(**dict(_key_value(t) for t in ("down=8,16", "up=8,16", "lr=1", "init_std=none")))
    assert cfg.down == (8, 16) and cfg.lr == 1.0 and cfg.init_std is None


def test_config_override_cannot_relabel_the_preset():
    cpu = PRESETS["cpu"]
    for key, value in (("preset", "paper"), ("preset", "cpu"), ("preset", "mine")):
        with pytest.raises(ValueError, match="config.preset: cannot be overridden.*config='paper'.*--preset paper"):
            cpu.replace(**{key: value})
    with pytest.raises(ValueError, match="config.preset: cannot be overridden"):
        dipreg.register(np.random.rand(32, 32), np.random.rand(32, 32), progress=False, preset="paper")
    with pytest.raises(ValueError, match="config.notes: cannot be overridden"):
        cpu.replace(notes={})
    with pytest.raises(ValueError, match="'paper' is an existing preset"):
        cpu.replace(preset="paper", notes={})
    # a new named preset (name and notes together), as the gpu preset is defined
    assert cpu.replace(preset="mine", notes={"lr": "why"}, lr=0.1).preset == "mine"


def test_config_override_keeps_the_label_and_says_what_changed():
    cpu = PRESETS["cpu"]
    assert cpu.overridden() == {} and PRESETS["gpu"].overridden() == {} and RegistrationConfig().overridden() == {}
    cfg = cpu.replace(lr=0.01, iterations=5)
    assert cfg.preset == "cpu" and cfg.overridden() == {"lr": 0.01, "iterations": 5}
    assert cfg.notes["lr"].startswith("overridden: 0.01 (the cpu preset has 0.003)")
    back = cfg.replace(lr=cpu.lr)
    assert back.overridden() == {"iterations": 5} and back.notes["lr"] == cpu.notes["lr"]
    assert cpu.notes["lr"].startswith("3e-3")  # the preset itself is untouched


@pytest.mark.parametrize("device", ["meta", "cuda:7" if not torch.cuda.is_available() else "cuda:99", "xla", 3.5])
def test_unusable_devices_are_refused_up_front(device):
    m, f, _ = blob_pair()
    with pytest.raises(ValueError, match="device"):
        dipreg.register(m, f, device=device, progress=False, iterations=1, down=(8, 8), up=(8, 8))


@pytest.mark.parametrize("seed", [1.7, True, "x", -1, 2**70])
def test_bad_seeds_are_refused(seed):
    m, f, _ = blob_pair()
    with pytest.raises(ValueError, match="seed"):
        dipreg.register(m, f, seed=seed, device="cpu", progress=False, iterations=1, down=(8, 8), up=(8, 8))


def test_the_seed_alone_sets_the_weights_and_the_callers_rng_is_untouched():
    """With PyTorch's default initialisation (init_std=None) too, and without advancing torch's global RNG."""
    m, f, _ = blob_pair()
    kw = dict(seed=3, device="cpu", progress=False, iterations=3, down=(8, 8), up=(8, 8), init_std=None)
    fields = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        fields.append(dipreg.register(m, f, **kw).displacement)
        after = torch.rand(1)
        torch.manual_seed(global_seed)
        assert torch.equal(after, torch.rand(1))  # register drew nothing from the global generator
    np.testing.assert_array_equal(fields[0], fields[1])


def test_an_interrupt_keeps_the_losses_and_the_field_reached():
    m, f, _ = blob_pair()

    def ctrl_c(step):
        if step.iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:  # still an interrupt for whoever called register
        dipreg.register(m, f, seed=0, device="cpu", progress=False, iterations=20, down=(8, 8), up=(8, 8),
                        callback=ctrl_c)
    exc = caught.value
    assert isinstance(exc, dipreg.RegistrationInterrupted) and len(exc.history) == 4
    assert exc.result.info["stopped"] == "interrupted" and exc.result.info["iterations"] == 4
    assert exc.result.displacement.shape == (2, 64, 64) and np.isfinite(exc.result.displacement).all()
