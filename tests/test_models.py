"""The published architectures against their sources: feature sizes, parameter counts, pooling."""
import pytest
import torch
from omegaconf import OmegaConf

from replicate.config import ConfigError, ModelConfig
from replicate.models import build_model


def pooling_cnn(stride, pool):
    return build_model(OmegaConf.structured(ModelConfig(name="cnn1d_pool", input_size=40, output_size=10,
                                                        stride=stride, pool=pool)))


# greydanus/mnist1d notebooks/benchmark-pooling.ipynb cell 7, get_models: conv1 1·20·3 + 20 = 80 and conv2
# 20·20·3 + 20 = 1220 parameters, then Linear(linear_in, 10): linear_in 800 (no_pool: 20 channels × 40
# positions) or the default 200 (20 × 10, halving twice by stride or pooling)
@pytest.mark.parametrize("stride, pool, parameters", [(1, "none", 80 + 1220 + 8010), (2, "none", 80 + 1220 + 2010),
                                                      (1, "max", 3310), (1, "avg", 3310), (1, "l2", 3310)])
def test_pooling_cnn_has_the_notebooks_feature_sizes(stride, pool, parameters):
    model = pooling_cnn(stride, pool)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert model(torch.randn(7, 40)).shape == (7, 10)


def test_pooling_cnn_pools_each_pair_of_positions():
    # F.max_pool1d(x, 2), F.avg_pool1d(x, 2), F.lp_pool1d(x, norm_type=2, kernel_size=2) on ReLU outputs (≥ 0)
    h = torch.tensor([[[3.0, 4.0, 0.0, 5.0]]])
    expected = {"none": [3.0, 4.0, 0.0, 5.0], "max": [4.0, 5.0], "avg": [3.5, 2.5], "l2": [5.0, 5.0]}
    for pool, values in expected.items():
        assert pooling_cnn(1, pool)._pool(h).flatten().tolist() == pytest.approx(values, rel=1e-6), pool


def test_an_unknown_pooling_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"model.pool 'min'; allowed: none, max, avg, l2"):
        pooling_cnn(1, "min")


def test_two_hidden_layer_mlp_is_the_residual_mlp_without_its_residual():
    # deep-double-descent.ipynb cell 5: Linear(40, n) → ReLU → Linear(n, n) → ReLU → Linear(n, 10); n = 300
    # gives 40·300 + 300 + 300·300 + 300 + 300·10 + 10 = 105,610 parameters
    def build(name):
        torch.manual_seed(0)
        return build_model(OmegaConf.structured(ModelConfig(name=name, input_size=40, output_size=10, hidden_size=300)))

    plain, residual = build("mlp2"), build("residual_mlp")
    assert sum(p.numel() for p in plain.parameters()) == 105_610
    x = torch.randn(5, 40)
    h = residual.linear1(x).relu()
    assert torch.equal(plain(x), residual.linear3(residual.linear2(h).relu()))  # same layers, same init
    assert not torch.equal(plain(x), residual(x))
    with pytest.raises(ConfigError, match="model mlp2 needs model.hidden_size"):
        build_model(OmegaConf.structured(ModelConfig(name="mlp2", input_size=40, output_size=10)))
