"""The benchmark scripts' argument handling (their runs are measured, not tested: docs/BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_quality_param_overrides_one_kind():
    bench = _script("benchmark_quality")
    args = bench.parse_args(
        ["--kinds", "classifier-hash,itq", "--param", "classifier-hash:filters=32x64x128", "--param", "classifier-hash:flip=true"]
    )
    assert args.overrides == {"classifier-hash": {"filters": (32, 64, 128), "flip": True}}
    from semhash.models import get_kind

    params = bench.kind_params(get_kind("classifier-hash"), (28, 28, 1), 30, 1.0, 0, args.overrides)
    assert params["filters"] == (32, 64, 128) and params["flip"] is True and params["bits"] == 30
    assert "filters" not in bench.kind_params(get_kind("itq"), (28, 28, 1), 30, 1.0, 0, args.overrides)


@pytest.mark.parametrize("item", ["filters=32x64", "nokind:filters=3", "classifier-hash:nonsense=1", "classifier-hash:noise=2,4"])
def test_benchmark_quality_refuses_bad_params(item, capsys):
    bench = _script("benchmark_quality")
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--param", item])
    assert exit_info.value.code == 2
    assert "--param" in capsys.readouterr().err
