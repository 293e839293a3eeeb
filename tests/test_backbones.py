"""Backbones produce logits of the right shape; parameter counts match the papers."""

import numpy as np
import pytest

from aradals_tf import backbones


@pytest.mark.parametrize(
    "name, shape",
    [("small_cnn", (28, 28, 1)), ("mlp", (8, 8, 1)), ("resnet20", (32, 32, 3))],
)
def test_logits_shape(name, shape):
    model = backbones.build_backbone(name, shape, 7)
    out = model(np.random.default_rng(0).uniform(size=(3, *shape)).astype("float32"))
    assert tuple(out.shape) == (3, 7)
    # Logits, not probabilities: rows need not sum to one.
    assert not np.allclose(np.sum(out, axis=1), 1.0)


def test_published_parameter_counts():
    # He et al. 2016: ResNet-20 has 0.27 M parameters; Zagoruyko & Komodakis
    # 2016: WRN-28-10 has 36.5 M.
    assert backbones.resnet20().count_params() == pytest.approx(0.27e6, rel=0.03)
    assert backbones.wide_resnet(depth=28, width=10).count_params() == pytest.approx(
        36.5e6, rel=0.01
    )


def test_small_wide_resnet_runs_and_bad_depths_fail():
    model = backbones.wide_resnet((16, 16, 3), 5, depth=10, width=1)
    assert tuple(model(np.zeros((2, 16, 16, 3), "float32")).shape) == (2, 5)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        backbones.wide_resnet(depth=27)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        backbones.resnet20(depth=21)
    with pytest.raises(ValueError, match="valid names"):
        backbones.build_backbone("vgg", (32, 32, 3), 10)
