"""`compile` settings: what each compiles, that the compiled network computes what the eager one does, and
that identical HighResolutionModules share one graph. Dynamo's tracing runs in full; the "aot_eager"
backend stands in for inductor's code generation, which takes minutes on a CPU."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters

from hrnet_lib.model.hrnet import HighResolutionModule, HRNet, HRNetConfig, StageConfig, build_model
from hrnet_lib.train.datasets import build_datasets, validation_batches
from hrnet_lib.train.loop import compile_model
from hrnet_lib.train.presets import ConfigError, TrainConfig, apply_overrides, get_preset
from hrnet_lib.train.validate import validate

# Stage 3's two modules are alike in every shape: the ones that can share a compiled graph.
TINY = HRNetConfig(
    stage1=StageConfig(1, "bottleneck", (1,), (8,)),
    stage2=StageConfig(1, "basic", (1, 1), (4, 8)),
    stage3=StageConfig(2, "basic", (1, 1, 1), (4, 8, 16)),
    stage4=StageConfig(1, "basic", (1, 1, 1, 1), (4, 8, 16, 32)),
    stem_width=8,
)


def _loss_and_grads(net: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor):
    out = net(x)
    out.square().mean().backward()
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_modules_compiled_in_place_compute_what_the_eager_network_does() -> None:
    torch.manual_seed(0)
    eager = HRNet(TINY, num_keypoints=5).train()
    model = copy.deepcopy(eager)
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch._dynamo.reset()
    counters.clear()
    net = compile_model(model, "modules", backend="aot_eager")
    out, grads = _loss_and_grads(net, model, x)
    want_out, want_grads = _loss_and_grads(eager, eager, x)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    for name, grad in want_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # Compiled in place: the same object, its weights under the same names (checkpoints unchanged).
    assert net is model and list(model.state_dict()) == keys
    assert len([m for m in model.modules() if isinstance(m, HighResolutionModule)]) == 4
    assert counters["stats"]["unique_graphs"] == 3  # stage 3's two modules share one graph


def test_model_wraps_the_whole_network_once() -> None:
    model = HRNet(TINY, num_keypoints=5)
    net = compile_model(model, "model", backend="aot_eager")
    assert isinstance(net, OptimizedModule) and net._orig_mod is model
    assert not any(isinstance(m, OptimizedModule) for m in model.modules())  # nothing compiled inside


def test_off_leaves_the_network_as_it_is() -> None:
    model = HRNet(TINY, num_keypoints=5)
    torch._dynamo.reset()
    counters.clear()
    assert compile_model(model, "off") is model
    model(torch.randn(1, 3, 64, 64))
    assert counters["stats"]["unique_graphs"] == 0


def test_compile_names_a_scope_and_reads_older_booleans() -> None:
    smoke = get_preset("smoke")
    assert smoke.compile == "off"
    for written, meant in [("true", "model"), ("false", "off"), ("modules", "modules"), ("model", "model")]:
        assert apply_overrides(smoke, [f"compile={written}"]).compile == meant
    # config.json of a run from before the setting had scopes
    assert TrainConfig.from_dict({**smoke.to_dict(), "compile": True}).compile == "model"
    assert TrainConfig.from_dict({**smoke.to_dict(), "compile": False}).compile == "off"
    with pytest.raises(ConfigError, match="off, model or modules"):
        apply_overrides(smoke, ["compile=fast"])


def test_validation_runs_compiled_modules_eagerly(data, tmp_path) -> None:
    cfg = get_preset("smoke")
    _, val_set = build_datasets(cfg, data, tmp_path, True)
    batches = validation_batches(val_set, cfg)
    torch.manual_seed(0)
    eager = build_model(cfg.model, cfg.num_keypoints, cfg.upsample).train()
    model = compile_model(copy.deepcopy(eager), "modules", backend="eager")  # capture only: fast
    torch._dynamo.reset()
    counters.clear()
    nme = validate(model, batches, cfg, torch.device("cpu"))
    assert counters["stats"]["unique_graphs"] == 0  # no compiling for evaluation mode
    assert nme == pytest.approx(validate(eager, batches, cfg, torch.device("cpu")), rel=1e-6)
    model.train()(torch.randn(2, 3, cfg.input_size, cfg.input_size))
    assert counters["stats"]["unique_graphs"] > 0  # training compiles as before: the stance was let go
