"""dipreg.methods.engine: the one loop (NaN check, histories, early stopping per member, callback, Ctrl-C), the field
modules and the noise readout, on toy objectives."""

import pytest
import torch

from dipreg.methods.engine import BatchField, Noise, ParameterField, RegistrationError, Stage, Terms, run


def quadratic(target: torch.Tensor, field: ParameterField):
    """Objective of one member: the mean squared distance of the field to ``target``."""
    def terms(it):
        u = field()
        return Terms([0.5 * (u - target).pow(2).sum()], u)
    return terms


def test_run_records_history_and_stops_on_callback():
    field = ParameterField(torch.zeros(1, 2, 4, 4))
    opt = torch.optim.SGD(field.parameters(), lr=0.5)
    seen = []
    fit = run([Stage(quadratic(torch.ones(1, 2, 4, 4), field), opt, 10)], total=10,
              callback=lambda step, t, values: seen.append((step, values[0])) or step == 2)
    assert fit.stopped == "callback" and len(fit.histories[0]) == 3 == fit.steps
    assert [s for s, _ in seen] == [0, 1, 2] and fit.histories[0] == [v for _, v in seen]
    assert fit.histories[0] == [16.0, 4.0, 1.0]  # 0.5 |u - 1|^2 over 32 numbers, halved distance per step


def test_stages_run_in_order_and_an_iterator_is_read_lazily():
    fields = []

    def stages():
        for n in (2, 0, 3):
            fields.append(ParameterField(torch.zeros(1, 2, 3, 3) if not fields else fields[-1].u.detach()))
            opt = torch.optim.SGD(fields[-1].parameters(), lr=0.5)
            yield Stage(quadratic(torch.ones(1, 2, 3, 3), fields[-1]), opt, n)

    fit = run(stages(), total=5)
    assert fit.stopped == "iterations" and len(fit.histories[0]) == 5 and len(fields) == 3
    assert torch.equal(fields[-1].u, torch.full((1, 2, 3, 3), 1 - 0.5**5))  # each stage went on from the last


def test_nan_raises_with_the_history_so_far():
    field = ParameterField(torch.zeros(1, 2, 3, 3))

    def terms(it):
        u = field()
        return Terms([u.sum() * (float("nan") if it == 2 else 1.0)], u)

    with pytest.raises(RegistrationError, match="at step 2") as info:
        run([Stage(terms, torch.optim.SGD(field.parameters(), lr=0.1), 5)], total=5,
            nonfinite=lambda step, member, value: f"{value} at step {step}")
    assert len(info.value.history) == 2


def test_interrupt_keeps_the_field_reached_or_propagates():
    def go(interruptible):
        field = ParameterField(torch.zeros(1, 2, 3, 3))

        def stop(step, t, values):
            if step == 1:
                raise KeyboardInterrupt

        fit = run([Stage(quadratic(torch.ones(1, 2, 3, 3), field), torch.optim.SGD(field.parameters(), lr=0.5), 9)],
                  total=9, callback=stop, interruptible=interruptible)
        return fit, field

    fit, field = go(True)
    assert fit.stopped == "interrupted" and len(fit.histories[0]) == 2
    assert torch.allclose(field.u, torch.full_like(field.u, 0.75))  # two SGD steps of 1 - u
    with pytest.raises(KeyboardInterrupt):
        go(False)


def test_a_converged_member_is_frozen_while_the_others_go_on():
    torch.manual_seed(0)
    field = BatchField([torch.nn.Conv2d(1, 2, 3, padding=1) for _ in range(2)])
    z = torch.randn(2, 1, 1, 5, 5)

    def terms(it):
        u = field(z)
        flat = u[0].mean() - u[0].mean().detach() + 1.0  # value 1.0 at every step, a gradient all the same
        return Terms([flat, u[1].pow(2).mean()], u)

    member0 = []
    fit = run([Stage(terms, torch.optim.Adam(list(field.stacked), lr=0.05), 6)], members=2, total=6, patience=2,
              callback=lambda step, t, values: member0.append([p.detach()[0].clone() for p in field.stacked]),
              keep_best=True)
    assert fit.reason(0) == "converged" and fit.reason(1) == "iterations"
    assert len(fit.histories[0]) == 3 and len(fit.histories[1]) == 6
    assert fit.best_step == [0, 5]  # the frozen member's steps after it froze are not its own
    assert not all(torch.equal(a, b) for a, b in zip(member0[1], member0[2], strict=True))  # still moving
    for a, b in zip(member0[2], member0[5], strict=True):  # frozen after its third step, despite Adam's momentum
        assert torch.equal(a, b)


def test_noise_fixed_or_mean_over_draws():
    g = torch.Generator().manual_seed(0)
    draws = iter(torch.arange(10.0))
    noise = Noise(lambda: next(draws).reshape(1), fixed=False, draws=3)
    assert float(noise()) == 0.0
    assert float(noise.readout(lambda z: z * 2)) == 2 * (1 + 2 + 3) / 3
    fixed = Noise(lambda: torch.randn(1, generator=g), fixed=True, draws=3)
    assert torch.equal(fixed(), fixed()) and torch.equal(fixed.readout(lambda z: z), fixed.fixed)


def test_keep_best_keeps_the_evaluated_output_at_the_lowest_loss_of_the_last_stage():
    """SGD with lr 2.5 on 0.5 |u - 1|^2 overshoots (u = 0, 2.5, -1.25, ...): the first stage's loss only rises.
    The second stage (lr 0.5) converges and counts afresh: its best is its last evaluated step, whose output is
    copied before the optimiser moves the parameter it aliases."""
    fields, evaluated = [], []

    def stages():
        for n, lr in ((4, 2.5), (3, 0.5)):
            fields.append(ParameterField(torch.zeros(1, 2, 2, 2) if not fields else fields[-1].u.detach()))
            target = quadratic(torch.ones(1, 2, 2, 2), fields[-1])

            def terms(it, target=target):
                t = target(it)
                evaluated.append(t.output.detach().clone())
                return t

            yield Stage(terms, torch.optim.SGD(fields[-1].parameters(), lr=lr), n)

    fit = run(stages(), total=7, keep_best=True)
    h = fit.histories[0]
    assert len(h) == 7 and h[0] < h[1] < h[2] < h[3] and h[4] > h[5] > h[6]
    assert fit.best_step == [6] and torch.equal(fit.best[0], evaluated[6])
    assert not torch.equal(fit.best[0], fields[-1].u.detach())  # not the parameters after the last step
    never = run([Stage(quadratic(torch.ones(1, 2, 2, 2), ParameterField(torch.zeros(1, 2, 2, 2))),
                       torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 2)], total=2)
    assert never.best == [None] and never.best_step == [None]  # not asked for


def test_keep_best_drops_a_step_cut_short_by_ctrl_c():
    """Ctrl-C during step 2's backward pass: that step is in no history, so its output is not the one kept."""
    field = ParameterField(torch.zeros(1, 2, 2, 2))

    def ctrl_c(grad):
        raise KeyboardInterrupt

    def terms(it):
        u = field()
        loss = 0.5 * (u - 1).pow(2).sum()
        if it == 2:
            loss.register_hook(ctrl_c)
        return Terms([loss], u)

    fit = run([Stage(terms, torch.optim.SGD(field.parameters(), lr=0.5), 5)], total=5, keep_best=True,
              interruptible=True)
    assert fit.stopped == "interrupted" and fit.histories[0] == [4.0, 1.0]
    assert fit.best_step == [1] and torch.equal(fit.best[0], torch.full((1, 2, 2, 2), 0.5))


def test_fixed_noise_reads_out_the_kept_output():
    noise = Noise(lambda: torch.ones(1), fixed=True, draws=1)
    kept = torch.full((1, 2, 2, 2), 7.0)
    assert torch.equal(noise.readout(lambda z: z * 0, kept), kept)  # the evaluated field, not the module now
    assert torch.equal(noise.readout(lambda z: z * 0), torch.zeros(1))  # no step ran: the module at the draw
    fresh = Noise(lambda: torch.ones(1), fixed=False, draws=2)
    assert torch.equal(fresh.readout(lambda z: z * 3, kept), torch.full((1,), 3.0))  # fresh draws: their mean
