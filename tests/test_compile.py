"""torch.compile(dynamic=True): one graph serves many input sizes (at most one recompilation after the first call)."""

import pytest
import torch
from torch._dynamo.utils import counters

from pspnet_lib import build_pspnet
from pspnet_lib.models.heads import PSPHead

from .hub_utils import SMALL


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _graphs_over_sizes(module, sizes, channels, backend):
    compiled = torch.compile(module, dynamic=True, backend=backend)
    for h, w in sizes:
        x = torch.randn(1, channels, h, w)
        with torch.no_grad():
            got, expected = compiled(x), module(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    return counters["stats"]["unique_graphs"]


@pytest.mark.slow
def test_whole_model_one_recompilation_across_sizes(fresh_dynamo):
    torch.manual_seed(0)
    model = build_pspnet("resnet18", 4, **SMALL).eval()
    ops = []

    def record(gm, example_inputs):  # a backend that keeps the captured graph and runs it as is
        ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    # The first size is square: dynamic=True then ties H and W ("duck sizing") and the first
    # non-square input recompiles once; after that no size does. All sizes are above the
    # CPU convolution backend's size threshold (3 * H * W > 20480: one more graph below it).
    sizes = [(96, 96), (120, 104), (97, 133), (160, 128), (113, 89)]
    assert _graphs_over_sizes(model, sizes, 3, record) <= 2
    # adaptive pooling, which inductor lowers with windows that guard on the feature size, is
    # not in the compiled graph: the pyramid pools with size-generic averaging matrices
    assert ops and not [op for op in ops if "adaptive_avg_pool" in op]


@pytest.mark.slow
def test_inductor_pyramid_head_one_recompilation(fresh_dynamo):
    # Inductor's own code generation on the part that used to recompile per size
    # (guards like (H - 1) // 8 == 12 from its adaptive-pooling lowering); the head keeps the
    # compile time of this test to a few graphs of a handful of kernels.
    torch.manual_seed(0)
    head = PSPHead(64, 4, channels=16, branch_channels=8).eval()
    sizes = [(16, 16), (20, 18), (23, 29), (31, 26)]
    assert _graphs_over_sizes(head, sizes, 64, "inductor") <= 2
