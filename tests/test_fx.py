"""torch.fx: symbolic_trace, get_graph_node_names and create_feature_extractor on every layout."""

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from pspnet_lib import build_pspnet, get_model

from .hub_utils import SMALL

pytestmark = pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing")


@pytest.mark.parametrize("name", ["pspnet_r18_d8", "pspnet_r50b_d32", "pspnet_semseg50"])
def test_symbolic_trace_equals_eager(name):
    torch.manual_seed(0)
    model = get_model(name, num_classes=4, **SMALL).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 41, 35)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
        main, aux = traced(x, True)  # return_aux stays an argument of the traced graph
        eager_main, eager_aux = model(x, return_aux=True)
    assert torch.equal(main, eager_main) and torch.equal(aux, eager_aux)
    # the eager input checks are kept
    with pytest.raises(ValueError, match=r"4-D input"):
        model(x[0])


def test_traced_model_without_aux_refuses_return_aux():
    traced = torch.fx.symbolic_trace(build_pspnet("resnet18", 3, aux=False, **SMALL).eval())
    with pytest.raises(ValueError, match=r"built with aux=False"):
        traced(torch.randn(1, 3, 16, 16), True)


@pytest.mark.parametrize(
    "backbone, channels",
    [("resnet18", [64, 128, 256, 512]), ("resnet50", [256, 512, 1024, 2048])],
)
def test_feature_extractor_returns_ppm_and_stages(backbone, channels):
    model = build_pspnet(backbone, 5).eval()
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert {"backbone.layer1.0.conv1", "decode_head.ppm.cat", "decode_head.classifier"} <= set(eval_nodes)
    nodes = {f"backbone.layer{i}": f"layer{i}" for i in range(1, 5)}
    nodes["decode_head.ppm"] = "ppm"
    extractor = create_feature_extractor(model, return_nodes=nodes)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        out = extractor(x)
        eager = model.forward_features(x)
        ppm = model.decode_head.ppm(eager[3])
    strides = [4, 8, 8, 8]
    for i, (c, s) in enumerate(zip(channels, strides)):
        assert out[f"layer{i + 1}"].shape == (2, c, 64 // s, 80 // s)
        assert torch.equal(out[f"layer{i + 1}"], eager[i])
    assert out["ppm"].shape == (2, channels[3] * 2, 8, 10) and torch.equal(out["ppm"], ppm)
    # training mode traces too (BatchNorm's batch-size check is eager-only)
    extractor.train()
    assert extractor(x)["ppm"].shape == (2, channels[3] * 2, 8, 10)
