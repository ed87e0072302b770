"""Loading is safe by default: weights from safetensors only, no pickle from user paths, no code
shipped with a model run unless ``trust_remote_code`` is set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, tiny_llama


def test_the_package_never_unpickles() -> None:
    offenders = []
    for path in (ROOT / "ragtune").rglob("*.py"):
        text = path.read_text()
        for pattern in (
            r"\bimport pickle\b",
            r"\btorch\.load\(",
            r"allow_pickle=True",
            r"trust_remote_code=True",
        ):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert not offenders


def test_training_state_round_trips_without_pickle(tmp_path: Path) -> None:
    from ragtune.training import linear_schedule, load_state, save_state

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = linear_schedule(opt, 10, 2)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state()}
    save_state(state, tmp_path / "s.safetensors")
    back = load_state(tmp_path / "s.safetensors")
    assert back["scheduler"] == sched.state_dict()
    assert torch.equal(back["rng"], state["rng"])
    assert set(back["optimizer"]["state"]) == {0, 1}  # int keys survive
    fresh = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters(), lr=0.1)
    fresh.load_state_dict(back["optimizer"])
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(fresh.state_dict()["state"][0][k], v)
    # A safetensors file of someone else's (no structure) is refused with a message.
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a ragtune training state"):
        load_state(tmp_path / "other.safetensors")
    with pytest.raises(TypeError, match="cannot store"):
        save_state({"f": object()}, tmp_path / "bad.safetensors")


def test_pickled_weights_are_refused(tmp_path: Path, tiny_encoder: Path) -> None:
    # An encoder folder whose transformer weights are a pickled pytorch_model.bin.
    import shutil

    from safetensors.torch import load_file

    from ragtune.generator.config import ModelConfig
    from ragtune.generator.model import load_trained
    from ragtune.retriever.model import load_encoder

    shutil.copytree(tiny_encoder, tmp_path / "pickled")
    for weights in (tmp_path / "pickled").rglob("model.safetensors"):
        torch.save(load_file(weights), weights.with_name("pytorch_model.bin"))
        weights.unlink()
    assert list((tmp_path / "pickled").rglob("pytorch_model.bin"))
    with pytest.raises(OSError, match="safetensors"):
        load_encoder(str(tmp_path / "pickled"))
    # A peft adapter folder holding adapter_model.bin.
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    torch.save({}, adapter / "adapter_model.bin")
    with pytest.raises(ValueError, match="safetensors only"):
        load_trained(adapter, ModelConfig(name=str(tiny_encoder)))


def test_model_code_does_not_run_without_trust_remote_code(tmp_path: Path) -> None:
    from ragtune.generator.config import ModelConfig
    from ragtune.generator.model import load_base

    model, tok = tiny_llama("a b c")
    folder = tmp_path / "remote"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    marker = tmp_path / "code-ran"
    (folder / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaForCausalLM as EvilModel\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilModel"}
    config["model_type"] = "evil-custom"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises((ValueError, KeyError, OSError)):
        load_base(ModelConfig(name=str(folder)))
    assert not marker.exists()
