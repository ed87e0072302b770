"""The precision resolver: ``auto`` is bf16 only on native-bf16 hardware, with the hardware mocked
both ways; forced bf16 warns; every run records what it resolved to."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from ragtune import precision
from ragtune.cli import main
from ragtune.config import ConfigError, load_config
from ragtune.retriever.config import RetrieverConfig
from tests.conftest import DEMO


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch):
    """Set what torch reports about the CPU: ``cpu(onednn_bf16, amx, avx512_bf16)``."""

    def set_cpu(onednn: bool, amx: bool = False, avx512_bf16: bool = False) -> None:
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        precision._cpu_native_bf16.cache_clear()
        precision._warn_emulated.cache_clear()

    yield set_cpu
    precision._cpu_native_bf16.cache_clear()
    precision._warn_emulated.cache_clear()


@pytest.mark.parametrize(
    ("onednn", "amx", "avx512_bf16", "expected"),
    [
        (True, True, False, "bf16"),  # Sapphire Rapids and later: AMX
        (True, False, True, "bf16"),  # Zen 4 / Cooper Lake: AVX512-BF16
        (True, False, False, "fp32"),  # AVX-512 without bf16 instructions (oneDNN would emulate)
        (False, False, False, "fp32"),  # AVX2 only: bf16 matmuls ~80x slower than fp32
        (False, True, True, "fp32"),  # bf16 hardware, but oneDNN capped below it (ONEDNN_MAX_CPU_ISA)
    ],
)
def test_auto_is_bf16_only_where_the_cpu_runs_it_natively(cpu, onednn, amx, avx512_bf16, expected) -> None:
    cpu(onednn, amx, avx512_bf16)
    assert precision.native_bf16("cpu") is (expected == "bf16")
    assert precision.resolve_precision("auto", "cpu") == expected
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    info = precision.hardware("auto", "cpu")
    assert info["precision"] == expected and info["precision_setting"] == "auto"
    assert info["native_bf16"] is (expected == "bf16") and info["amx"] is amx
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_forced_bf16_without_native_support_warns_once(cpu, caplog: pytest.LogCaptureFixture) -> None:
    cpu(False)
    with caplog.at_level(logging.WARNING, logger="ragtune.precision"):
        assert precision.resolve_precision("bf16", "cpu") == "bf16"  # forced: still honoured
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SLOWER than fp32" in warnings[0] and "10-80x" in warnings[0]
    caplog.clear()
    cpu(True, amx=True)
    with caplog.at_level(logging.WARNING, logger="ragtune.precision"):
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
    assert not caplog.records  # native: nothing to warn about


def test_cuda_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.resolve_precision("auto", "cuda:0") == "fp32"


def test_autocast_and_inference_dtype_follow_the_resolution(cpu) -> None:
    cpu(False)
    with precision.autocast("auto", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    assert precision.inference_dtype("auto", "cpu") == torch.float32
    cpu(True, amx=True)
    with precision.autocast("auto", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert precision.inference_dtype("auto", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve_precision("fp16")


def test_the_old_bf16_keys_name_their_replacement(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("train:\n  bf16: true\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.bf16'.*precision: auto \| fp32 \| bf16"):
        load_config(path, [], RetrieverConfig)
    with pytest.raises(ConfigError, match=r"'precision'.*not one of"):
        load_config(None, ["precision=fp16"], RetrieverConfig)
    assert load_config(None, [], RetrieverConfig).precision == "auto"


@pytest.mark.parametrize("native", [True, False])
def test_a_cli_run_records_the_resolved_precision(cpu, tmp_path: Path, tiny_encoder: Path, native) -> None:
    cpu(native, amx=native)
    out = tmp_path / "run"
    args = [
        f"data.beir_dir={DEMO}",
        f"model.name={tiny_encoder}",
        "model.max_passage_length=64",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.hard_negatives=0",
        "data.val_fraction=0",
        f"output_dir={out}",
    ]
    assert main(["retriever", "train", *args]) == 0
    expected = "bf16" if native else "fp32"
    info = json.loads((out / "hardware.json").read_text())
    assert info["precision"] == expected and info["precision_setting"] == "auto"
    assert info["native_bf16"] is native and info["cpu"] and info["threads"] >= 1
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["hardware"]["precision"] == expected
    text = (out / "config.yaml").read_text()
    assert text.splitlines()[0].startswith(f"# ragtune run: precision {expected} (auto) on ")
    assert yaml.safe_load(text)["precision"] == "auto"  # the setting stays portable
    # and the saved config loads back as a config (the header is a comment)
    assert load_config(out / "config.yaml", [], RetrieverConfig).precision == "auto"


def test_the_hardware_command_prints_what_auto_resolves_to(cpu, capsys: pytest.CaptureFixture) -> None:
    cpu(False)
    assert main(["hardware", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["precision"] == "fp32" and info["native_bf16"] is False
    assert info == precision.hardware("auto")
    cpu(True, avx512_bf16=True)
    assert main(["hardware"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("precision=auto  -> precision bf16 (auto) on ") and len(lines) == 3


@pytest.mark.parametrize("tied", [False, True])
def test_frozen_linears_in_bf16_give_the_same_step_as_autocast(cpu, tied: bool) -> None:
    """LoRA under bf16 autocast: the frozen base weights stored in bf16 once give the same loss and
    the same LoRA gradients as re-casting them in every forward pass; trainable weights, norms,
    embeddings and a tied LM head stay fp32; under fp32 nothing is cast."""
    import copy

    from ragtune.generator.config import PeftConfig
    from ragtune.generator.model import apply_peft
    from tests.conftest import tiny_llama

    cpu(True, amx=True)  # native bf16, so auto resolves to bf16
    model, _ = tiny_llama("a b c d e f g h i j k l")
    if tied:
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.get_input_embeddings().weight
    model = apply_peft(model, PeftConfig(method="lora", r=4, alpha=8))
    cast = copy.deepcopy(model)
    assert precision.store_frozen_linears(copy.deepcopy(model), "fp32") == 0
    n = precision.store_frozen_linears(cast, "auto")
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    bf16 = {name for name, p in cast.named_parameters() if p.dtype == torch.bfloat16}
    # 2 layers x 7 projections, plus the LM head when it is its own weight
    assert n == 14 + (not tied) and len(bf16) == n
    assert bf16 <= frozen and not any("lora_" in name or "norm" in name or "embed" in name for name in bf16)
    assert ("lm_head" in " ".join(bf16)) is (not tied)

    ids = torch.randint(4, 16, (3, 9))
    results = []
    for m in (model, cast):
        with precision.autocast("auto"):
            loss = m(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        results.append((loss.detach(), {k: p.grad for k, p in m.named_parameters() if p.requires_grad}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], rtol=0, atol=0)
