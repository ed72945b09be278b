"""`icl bench` from the command line: a smoke run writes its table and JSON, with a FLOP count per
step that the counted FLOPs of the model's own layers confirm; an unknown preset is refused; the
ensemble part (`--ensemble`) measures each M against both solo baselines, and its side at M = 1
trains as the solo side does; `--device` takes a torch device that exists here, and off the CPU
refuses the CPU-only parts in one line."""

import json

import pytest
import torch
from support import check_one_line
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

import icl.bench.ensemble
import icl.bench.run
from icl.bench.cases import Case, batches, train_flops
from icl.bench.sides import ensemble_side, member_configs, our_side, stacked_batches
from icl.cli import main
from icl.model import ICLTransformer


def counted_flops(fn, *args) -> int:
    """FLOPs of ``fn(*args)`` as torch counts them (matmuls and attention; 2 per multiply-add)."""
    # torch has no formula for the CPU flash-attention kernel: count it as sdpa on other devices
    # (the full Q x T scores and weighted values), in case the model picks it at this shape.
    cpu_sdpa = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, **kw: sdpa_flop_count(q, k, v)
    }
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        fn(*args)
    return counter.get_total_flops()


def nominal_forward_flops(model: ICLTransformer, batch: int, n_points: int) -> int:
    """The forward work `icl bench` credits, counted on the model's own layers: the read-in on all
    T = 2N padded tokens, every block on all T tokens with attention over the full T x T (the
    causal mask saves no product), the read-out at the N x tokens."""
    T, E = 2 * n_points, model.cfg.n_embd
    h = torch.randn(batch, T, E)
    causal = torch.full((T, T), float("-inf")).triu(1)
    return (
        counted_flops(model.read_in, torch.randn(batch, T, model.n_dims))
        + sum(counted_flops(block, h, causal) for block in model.blocks)
        + counted_flops(model.read_out, torch.randn(batch, n_points, E))
    )


def test_bench_cli_writes_the_table_and_json_with_the_counted_flops(tmp_path, capsys):
    args = ["bench", "--presets", "tiny", "--shapes", "curriculum_start", "--repeats", "1", "--target-s", "0.01"]
    flags = ["--no-reference", "--no-compile", "--no-memory", "--no-loop", "--no-eval", "--no-bf16"]
    assert main([*args, *flags, "--out", str(tmp_path)]) == 0
    assert "tiny@curriculum_start" in capsys.readouterr().out
    assert "| tiny@curriculum_start | ours |" in (tmp_path / "bench.md").read_text()
    rec = json.loads((tmp_path / "bench.json").read_text())["cases"][0]
    ours = rec["sides"]["ours"]
    assert ours["ms_per_step"] > 0 and 0 < rec["sampling_fraction"] < 1

    cfg = Case("tiny", "curriculum_start").config()
    B, N = cfg.data.batch_size, cfg.data.n_points
    model = ICLTransformer(cfg.model, cfg.data.n_dims)
    nominal = nominal_forward_flops(model, B, N)
    assert rec["flops_per_step"] == 3 * nominal  # the backward counted as twice the forward
    # The model does less than the nominal work (the bench counts the rest as speed): it leaves out
    # the last y token and runs the last of its 3 blocks on the N x tokens alone; its read-in of
    # the y tokens is no matmul. Between those savings and none, at this shape:
    xs, ys = torch.randn(B, N, cfg.data.n_dims), torch.randn(B, N)
    assert 0.8 * nominal < counted_flops(model, xs, ys) < nominal


def test_bench_cli_refuses_an_unknown_preset(capsys):
    assert main(["bench", "--presets", "huge"]) == 2
    err = capsys.readouterr().err
    assert "--presets: got 'huge'; allowed: tiny, " in err and all(p in err for p in ("small", "standard"))


def test_bench_cli_refuses_an_unknown_device(tmp_path, capsys):
    rc = main(["bench", "--ensemble", "--device", "nonsense", "--out", str(tmp_path)])
    check_one_line(rc, capsys.readouterr().err, r"--device: got 'nonsense'.*allowed: cpu or an available accelerator")
    assert not (tmp_path / "bench.json").exists()


def test_bench_cli_off_the_cpu_refuses_the_cpu_only_parts(tmp_path, capsys, monkeypatch):
    # No accelerator here: a device that parses stands in for one (the refusal comes first).
    monkeypatch.setattr(icl.bench.run, "parse_device", lambda name: torch.device("meta"))
    rc = main(["bench", "--ensemble", "--device", "meta", "--no-compile", "--out", str(tmp_path)])
    check_one_line(rc, capsys.readouterr().err, r"CPU only; add --no-reference --no-loop --no-eval --no-bf16 \(")
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.slow  # spawns the two single-thread solo processes of baseline (b): about 7 s
def test_bench_cli_ensemble_measures_each_member_count_against_both_baselines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(icl.bench.ensemble, "MIN_PAIR_S", 0.3)  # baseline (b): a short run will do here
    args = ["bench", "--presets", "tiny", "--shapes", "curriculum_start", "--repeats", "1", "--target-s", "0.01"]
    flags = ["--no-reference", "--no-compile", "--no-memory", "--no-loop", "--no-eval", "--no-bf16"]
    ensemble = ["--ensemble", "--members", "1,2", "--device", "cpu"]
    assert main([*args, *flags, *ensemble, "--out", str(tmp_path)]) == 0
    assert "(b) 2 solo x 1 thread" in capsys.readouterr().out
    assert "| tiny@curriculum_start | ensemble | 2 |" in (tmp_path / "bench.md").read_text()
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["environment"]["device"] == "cpu" and result["environment"]["device_name"]
    (rec,) = result["ensemble"]
    assert "device" not in rec["baselines"]["solo"]  # the CPU record as without --device
    assert rec["case"] == "tiny@curriculum_start"
    assert rec["baselines"]["solo"]["member_steps_per_s"] > 0
    assert rec["baselines"]["two_solo_1_thread"]["member_steps_per_s"] > 0
    assert [e["members"] for e in rec["ensembles"]] == [1, 2]
    flops = train_flops(Case("tiny", "curriculum_start").config())
    for e in rec["ensembles"]:
        assert e["member_steps_per_s"] > 0
        # An ensemble step does the nominal work of M member-steps.
        assert e["gflops"] * 1e9 * e["ms_per_step"] / 1e3 == pytest.approx(e["members"] * flops, rel=1e-9)
        assert e["vs_best"] == pytest.approx(min(e["vs_solo"], e["vs_two_solo"]))


def test_bench_ensemble_side_of_one_member_trains_as_the_solo_side():
    case = Case("tiny", "curriculum_start")
    cfg = case.config()
    data = batches(cfg, 3)
    stacked = stacked_batches(member_configs(case, 2), 3)
    assert all(torch.equal(s[0][0], d[0]) and torch.equal(s[1][0], d[1]) for s, d in zip(stacked, data, strict=True))
    solo, ensemble = our_side(cfg), ensemble_side(member_configs(case, 1), "ensemble_1")
    for xs, ys in data:  # the same loss at every step: same initial weights, same update
        assert ensemble.step(xs[None], ys[None]).item() == pytest.approx(solo.step(xs, ys).item(), rel=1e-5)
