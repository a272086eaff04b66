"""``nlfs.plot_loss_shapes``: the PNG is written, every panel has one curve per loss (CE included), and
the curves are the loss's term and its derivative in p (checked on cross-entropy and a scaled loss)."""

import numpy as np

import nlfs
from nlfs.plots import PANELS, plot_loss_shapes, shape


def test_plot_is_written_with_one_curve_per_loss_per_panel(tmp_path):
    path = tmp_path / "shapes.png"
    losses = {"NGL": "NGL", "found": "-max(sqrt(max(2.413, 1) + y - sin(0.8425 * p)), cos(2.496))"}
    fig = plot_loss_shapes(losses, path, points=50)
    assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == list(PANELS)
    assert [len(ax.get_lines()) for ax in axes] == [3, 3, 3, 3]
    labels = fig.legends[0].get_texts()
    assert [t.get_text() for t in labels][2] == "found: -sqrt(2.413 + y - sin(0.8425 * p))"  # simplified


def test_shapes_are_the_loss_and_its_derivative():
    p = np.linspace(0.01, 0.99, 9)
    value, grad = shape("CE", p, 1.0)
    np.testing.assert_allclose(value, -np.log(p), rtol=1e-12)
    np.testing.assert_allclose(grad, -1.0 / p, rtol=1e-12)
    value, grad = shape("CE", p, 0.0)
    assert not value.any() and not grad.any()
    # an element_mean loss's term counts 1/C; the scale multiplies it
    spec = nlfs.losses.LossSpec("half", nlfs.parse("p * y + p"), "element_mean", scale=0.5)
    value, grad = shape(spec, p, 1.0, num_classes=4)
    np.testing.assert_allclose(value, 0.5 * 2 * p / 4, rtol=1e-12)
    np.testing.assert_allclose(grad, np.full_like(p, 0.25), rtol=1e-12)
