"""Paper 2's linear classification and decision trees: sampler statistics, determinism, the 0/1
metric of classification scenarios, the logistic loss and its refusal, a CLI train on each."""

import json
import math

import pytest
import torch
from support import TINY

from icl.cli import main
from icl.config import load_config, to_dict
from icl.ensemble.module import EnsembleModule
from icl.errors import ICLError
from icl.evaluation.curves import ERRORS, error_curves, scenario_metric
from icl.evaluation.report import curves_csv, write_curves
from icl.rng import Stream, generator
from icl.sampling import DataConfig, PretrainMixture, Sampler
from icl.tasks import TASKS, build_task, metric_of
from icl.train_config import LOSSES, TrainConfig
from icl.training.loss import LOSSES as LOSS_FUNCTIONS
from icl.training.loss import prefix_losses


def draw(name, params, n, n_points, d, seed=0):
    task = build_task(name, params)
    task.check(d)
    p = task.sample_params(n, d, generator(seed, 0, Stream.PARAMS))
    xs = torch.randn(n, n_points, d, generator=generator(seed, 0, Stream.INPUTS))
    return task, p, xs, task.apply(p, xs)


def mixture(*names, noise_std=0.0, n_dims=4):
    specs = [{"name": n, "weight": 1.0 / len(names), "noise_std": noise_std} for n in names]
    return PretrainMixture.from_config(specs, n_dims)


# --- linear classification ---------------------------------------------------------------


def test_classification_labels_are_the_sign_of_w_dot_x_and_balanced():
    n, n_points = 2000, 20
    task, p, xs, ys = draw("linear_classification", {}, n, n_points, 5)
    assert set(ys.unique().tolist()) == {-1.0, 1.0}
    margin = (xs.double() * p["w"].double()[:, None, :]).sum(-1)
    assert torch.equal(ys, torch.sign(margin).float())  # P(y = sign(w.x)) = 1
    # Balanced: E y = 0; y is +-1 so its sd is 1; sequences are independent, points within one
    # share w, so the bound uses the sequence means.
    per_seq = ys.mean(dim=1)
    assert abs(ys.mean().item()) < 5 * per_seq.std().item() / math.sqrt(n)
    assert metric_of(task) == "zero_one" and task.bayes_posterior is None


def test_classification_under_a_curriculum_uses_the_active_dims_only():
    task = build_task("linear_classification", {})
    p = task.sample_params(8, 2, generator(0, 0, Stream.PARAMS))
    assert p["w"].shape == (8, 2)


# --- decision trees ------------------------------------------------------------------------


def recursive_tree(coord, leaf, x, node=0):
    """f(x) of one tree by walking it node by node: breadth-first numbering, right where > 0."""
    internal = len(coord)
    if node >= internal:
        return leaf[node - internal]
    return recursive_tree(coord, leaf, x, 2 * node + 1 + int(x[coord[node]] > 0))


@pytest.mark.parametrize("depth", [1, 3, 4])
def test_tree_matches_a_recursive_per_sequence_evaluation(depth):
    task, p, xs, ys = draw("decision_tree", {"depth": depth}, 6, 9, 4, seed=depth)
    for b in range(6):
        coord, leaf = p["coord"][b].tolist(), p["leaf"][b].tolist()
        expected = [recursive_tree(coord, leaf, xs[b, i].tolist()) for i in range(9)]
        assert ys[b].tolist() == pytest.approx(expected, abs=0)


@pytest.mark.parametrize("depth", [1, 2, 4, 6])
def test_tree_has_two_to_the_depth_leaves_and_uniform_coordinates(depth):
    n, d = 4000, 5
    task = build_task("decision_tree", {"depth": depth})
    p = task.sample_params(n, d, generator(1, 0, Stream.PARAMS))
    assert p["coord"].shape == (n, 2**depth - 1) and p["leaf"].shape == (n, 2**depth)
    assert p["coord"].min() >= 0 and p["coord"].max() < d
    freq = torch.bincount(p["coord"].flatten(), minlength=d).double() / p["coord"].numel()
    sd = math.sqrt((1 / d) * (1 - 1 / d) / p["coord"].numel())
    assert (freq - 1 / d).abs().max().item() < 5 * sd


def test_tree_depth_is_the_number_of_tests_on_every_path():
    # Depth 2 on d = 2 with coordinates (root 0, left child 1, right child 1): the four orthants
    # of the plane reach the four leaves in order, so every leaf is reachable in exactly 2 tests.
    task = build_task("decision_tree", {"depth": 2})
    p = {"coord": torch.tensor([[0, 1, 1]]), "leaf": torch.tensor([[10.0, 11.0, 12.0, 13.0]])}
    xs = torch.tensor([[[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]])
    assert task.apply(p, xs).tolist() == [[10.0, 11.0, 12.0, 13.0]]


def test_tree_leaf_values_are_standard_normal_and_outputs_have_unit_variance():
    n = 20000
    task, p, xs, ys = draw("decision_tree", {}, n, 16, 8, seed=2)
    leaf = p["leaf"].double().flatten()  # n * 16 values
    assert abs(leaf.mean().item()) < 5 / math.sqrt(leaf.numel())
    assert leaf.var().item() == pytest.approx(1.0, abs=5 * math.sqrt(2 / leaf.numel()))
    # y is one leaf value per point: mean 0, variance 1 (points of one tree share its leaves, so
    # the bounds use per-sequence means).
    y = ys.double()
    assert abs(y.mean().item()) < 5 * y.mean(dim=1).std().item() / math.sqrt(n)
    assert (y**2).mean().item() == pytest.approx(1.0, abs=5 * (y**2).mean(dim=1).std().item() / math.sqrt(n))


@pytest.mark.parametrize("depth", [0, -1, 21])
def test_tree_depth_out_of_range_is_refused(depth):
    with pytest.raises(ICLError, match=r"decision_tree\.depth: got .*; allowed: an integer in 1\.\.20"):
        build_task("decision_tree", {"depth": depth}).check(4)


# --- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear_classification", "decision_tree"])
def test_same_seed_and_step_same_batch(name):
    cfg = DataConfig(n_dims=4, n_points=7, batch_size=16, mixture=[{"name": name}])
    a, b = Sampler(cfg, 5).sample_batch(3), Sampler(cfg, 5).sample_batch(3)
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)
    assert not torch.equal(a.ys, Sampler(cfg, 5).sample_batch(4).ys)
    assert not torch.equal(a.ys, Sampler(cfg, 6).sample_batch(3).ys)


def test_both_classes_are_registered():
    assert TASKS["linear_classification"].name == "linear_classification"
    assert TASKS["decision_tree"].name == "decision_tree" and metric_of(build_task("decision_tree")) == "mse"


def test_quadratic_normalize_false_is_paper_2s_scale():
    d = 10
    _, p, xs, ys = draw("quadratic", {"normalize": False}, 4, 6, d)
    expected = torch.einsum("bnd,bd->bn", xs * xs, p["w"]) / math.sqrt(3)
    torch.testing.assert_close(ys, expected)
    *_, ys = draw("quadratic", {"normalize": False}, 4000, 8, d, seed=1)
    assert (ys.double() ** 2).mean().item() == pytest.approx(d, rel=0.08)  # paper 2's variance d


# --- the 0/1 metric ------------------------------------------------------------------------


def test_zero_one_error_of_sign():
    ys = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    assert ERRORS["zero_one"](ys * 0.3, ys).tolist() == [[0.0] * 4]
    assert ERRORS["zero_one"](-ys, ys).tolist() == [[1.0] * 4]
    assert ERRORS["zero_one"](torch.zeros(1, 4), ys).tolist() == [[1.0] * 4]  # no sign: an error


def test_scenario_metric_is_zero_one_only_for_all_classification_mixtures():
    assert scenario_metric(mixture("linear_classification")) == "zero_one"
    assert scenario_metric(mixture("dense_linear")) == "mse"
    assert scenario_metric(mixture("linear_classification", "dense_linear")) == "mse"
    zero_weight = PretrainMixture.from_config(
        [{"name": "linear_classification", "weight": 1.0}, {"name": "dense_linear", "weight": 0.0}], 4
    )
    assert scenario_metric(zero_weight) == "zero_one"


def oracle(sign):
    """A predictor that reads the labels it should not (here the point: a known error)."""
    return lambda xs, ys: sign * ys


def test_curves_of_a_classification_scenario_report_zero_one_and_keep_mse(tmp_path):
    cfg = DataConfig(n_dims=3, n_points=5, batch_size=4, mixture=[{"name": "linear_classification"}])
    sampler = Sampler(cfg, 0)
    result = error_curves({"right": oracle(1.0), "wrong": oracle(-1.0)}, sampler, 30)
    assert result.metric == "zero_one"
    assert (result.errors()["right"] == 0).all() and (result.errors()["wrong"] == 1).all()
    assert (result.sq_errors["right"] == 0).all() and (result.sq_errors["wrong"] == 4).all()
    record = write_curves(result, tmp_path, "cls", "classification")
    assert record["metric"] == "zero_one" and record["convention"] == "mse"
    assert record["curves"]["wrong"]["mean"] == [1.0] * 5 and record["curves_mse"]["wrong"]["mean"] == [4.0] * 5
    rows = curves_csv(record).splitlines()
    assert "0,wrong,1,1,1,zero_one" in rows and "0,wrong,4,4,4,mse" in rows
    assert json.loads((tmp_path / "cls.json").read_text())["metric"] == "zero_one"


def test_curves_of_a_regression_scenario_are_mse_only(tmp_path):
    cfg = DataConfig(n_dims=3, n_points=5, batch_size=4, mixture=[{"name": "decision_tree"}])
    result = error_curves({"wrong": oracle(-1.0)}, Sampler(cfg, 0), 10)
    assert result.metric == "mse" and result.metric_errors is None
    record = write_curves(result, tmp_path, "tree", "trees", convention="mse_over_d")
    assert record["metric"] == "mse" and "curves_mse" not in record
    assert all(row.endswith(",mse_over_d") for row in curves_csv(record).splitlines()[1:])


# --- the training loss ---------------------------------------------------------------------


def test_every_allowed_loss_is_implemented():
    assert set(LOSSES) == set(LOSS_FUNCTIONS)


def test_logistic_loss_is_the_binary_cross_entropy_of_sigmoid_pred():
    g = torch.Generator().manual_seed(0)
    preds = 5 * torch.randn(3, 8, 6, generator=g)
    ys = torch.where(torch.randn(3, 8, 6, generator=g) > 0, 1.0, -1.0)
    loss, per_position = prefix_losses(preds, ys, "logistic")
    bce = torch.nn.functional.binary_cross_entropy_with_logits(preds, (ys + 1) / 2, reduction="none")
    torch.testing.assert_close(per_position, bce.mean(dim=-2))
    torch.testing.assert_close(loss, bce.mean(dim=(-2, -1)))
    squared, _ = prefix_losses(preds, ys)
    torch.testing.assert_close(squared, ((preds - ys) ** 2).mean(dim=(-2, -1)))
    assert torch.isfinite(prefix_losses(torch.full((1, 2), 1e4), torch.tensor([[-1.0, 1.0]]), "logistic")[0])


def test_unknown_loss_is_refused():
    with pytest.raises(ICLError, match=r"^train\.loss: got 'hinge'; allowed: squared, logistic$"):
        TrainConfig(loss="hinge").check()


@pytest.mark.parametrize(
    "names,noise_std",
    [(("dense_linear",), 0.0), (("linear_classification", "decision_tree"), 0.0), (("linear_classification",), 0.1)],
)
def test_logistic_loss_is_refused_unless_every_component_is_noiseless_classification(names, noise_std):
    with pytest.raises(ICLError) as err:
        TrainConfig(loss="logistic").check_mixture(mixture(*names, noise_std=noise_std))
    line = str(err.value)
    assert "\n" not in line and line.startswith("train.loss: got 'logistic' with data.mixture component(s)")
    assert "allowed: logistic only where every component is a classification class" in line


@pytest.mark.parametrize("loss", LOSSES)
def test_the_ensemble_trains_on_train_loss(loss):
    cfg = load_config([], [*TINY, "data.mixture=[{name: linear_classification}]", f"train.loss={loss}"])
    module = EnsembleModule([to_dict(cfg), to_dict(cfg)])
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(2, 8, 6, 3, generator=g)
    ys = torch.where(torch.randn(2, 8, 6, generator=g) > 0, 1.0, -1.0)
    got = module.training_step((0, xs, ys), 0)
    torch.testing.assert_close(got, prefix_losses(module.model(xs, ys), ys, loss)[0].sum())


def test_logistic_loss_is_accepted_for_classification_and_squared_for_anything():
    TrainConfig(loss="logistic").check_mixture(mixture("linear_classification"))
    TrainConfig().check_mixture(mixture("dense_linear", "linear_classification", noise_std=0.5))


# --- a tiny CLI train on each new class ----------------------------------------------------


@pytest.mark.parametrize("name", ["linear_classification", "decision_tree"])
def test_cli_trains_and_evaluates_each_new_class(tmp_path, name, capsys):
    argv = ["train", *TINY, "train.steps=3", f"out_dir={tmp_path}", "name=run", f"data.mixture=[{{name: {name}}}]"]
    assert main(argv) == 0, capsys.readouterr().err
    run_dir = tmp_path / "run"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    record = json.loads((run_dir / "eval" / "in_distribution" / f"in_dist.{name}.json").read_text())
    metric = "zero_one" if name == "linear_classification" else "mse"
    assert record["metric"] == metric and ("curves_mse" in record) == (metric == "zero_one")
    if metric == "zero_one":  # 0/1 errors are fractions of prompts
        assert all(0 <= v <= 1 for stats in record["curves"].values() for v in stats["mean"])
