"""Seed 004's synthetic time-series benchmark parts: data, masking metrics, models (issue #15)."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the benchmark modules, last: no shadowing

from time_series_data import (  # noqa: E402
    DATASETS, PROCESSES, class_mean_difference, make_dataset, make_train_test, sample_background,
)
from time_series_models import TCN, LSTMClassifier, accuracy, make_model, train  # noqa: E402

from unhans.explainers import LRP, Gradient  # noqa: E402
from unhans.explainers.time_series_masking import (  # noqa: E402
    D_GRID, cell_precision_recall, cells_per_level, evaluate_saliency, permute_saliency, random_baseline,
    rescale_saliency, saliency_order, top_share_masks,
)

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize("name", list(DATASETS))
def test_dataset_shapes_labels_and_boxes(name):
    data = make_dataset(name, n=64, seed=3)
    spec = DATASETS[name]
    assert data.x.shape == (64, 50, 50) and data.x.dtype == np.float32
    assert data.y.shape == (64,) and data.y.dtype == np.int64 and set(np.unique(data.y)) == {0, 1}
    assert data.informative_mask.shape == (64, 50, 50) and data.informative_mask.dtype == bool
    t0, t1, f0, f1 = data.boxes.T
    assert (t1 - t0 == spec.time_size).all() and (f1 - f0 == spec.feature_size).all()
    assert (t0 >= 0).all() and (t1 <= 50).all() and (f0 >= 0).all() and (f1 <= 50).all()
    rebuilt = np.zeros_like(data.informative_mask)
    for i, (a, b, c, d) in enumerate(data.boxes):
        rebuilt[i, c:d, a:b] = True  # (n, F, T): features first
    assert (rebuilt == data.informative_mask).all()


def test_static_boxes_sit_where_the_paper_puts_them():
    middle = make_dataset("middle_box", n=8)
    assert middle.name == "middle"
    assert middle.informative_mask[:, 10:40, 10:40].all() and middle.informative_mask.sum() == 8 * 900
    rare_time = make_dataset("rare_time", n=4).informative_mask  # 6 time steps × 40 features
    assert rare_time[:, 5:45, 22:28].all() and rare_time.sum() == 4 * 240
    rare_feature = make_dataset("rare_feature", n=4).informative_mask  # 40 time steps × 6 features
    assert rare_feature[:, 22:28, 5:45].all() and rare_feature.sum() == 4 * 240


def test_moving_and_positional_boxes():
    moving = make_dataset("moving_box", n=300, seed=1)
    assert len(np.unique(moving.boxes[:, 0])) > 10 and len(np.unique(moving.boxes[:, 2])) > 10
    assert moving.boxes[:, 0].max() <= 19 and moving.boxes[:, 2].max() <= 19
    for name, fixed, free in (("positional_time", 2, 0), ("positional_feature", 0, 2)):
        data = make_dataset(name, n=300, seed=2)
        # the fixed axis' start says the class (1 for class 1, 29 for class 0); the other wanders
        assert (data.boxes[:, fixed] == np.where(data.y == 1, 1, 29)).all(), name
        assert len(np.unique(data.boxes[:, free])) > 10, name
        # +μ for both classes: the box is the signal, not its sign
        assert abs(data.x[data.informative_mask].mean() - 1.0) < 0.05, name


def test_datasets_are_deterministic_per_seed():
    a = make_dataset("moving_middle", "harmonic", n=32, seed=5)
    b = make_dataset("moving_middle", "harmonic", n=32, seed=5)
    assert (a.x == b.x).all() and (a.y == b.y).all() and (a.boxes == b.boxes).all()
    c = make_dataset("moving_middle", "harmonic", n=32, seed=6)
    assert not (a.x == c.x).all() and not (a.boxes == c.boxes).all()
    train_set, test_set = make_train_test("middle", n_train=16, n_test=16, seed=0)
    assert not np.allclose(train_set.x, test_set.x)
    assert (a.background_sampler(4, 9) == a.background_sampler(4, 9)).all()
    assert not (a.background_sampler(4, 9) == a.background_sampler(4, 10)).all()


@pytest.mark.parametrize("process", PROCESSES)
def test_processes_give_finite_class_free_backgrounds(process):
    values = sample_background(process, 200, seed=0)
    assert values.shape == (200, 50, 50) and values.dtype == np.float32 and np.isfinite(values).all()
    assert values.std() > 0.2
    assert (values == sample_background(process, 200, seed=0)).all()
    data = make_dataset("middle", process, n=600, seed=0)
    inside, outside = class_mean_difference(data)
    assert abs(inside - 2.0) < 0.15 and abs(outside) < 0.1, (inside, outside)


def test_class_means_differ_by_two_mu_in_the_box_only():
    data = make_dataset("middle", n=2000, seed=0)
    diff = data.x[data.y == 1].mean(0) - data.x[data.y == 0].mean(0)  # (F, T), cell std ≈ 0.045
    box = data.informative_mask[0]
    assert abs(diff[box].mean() - 2.0) < 0.05 and diff[box].min() > 1.7
    assert abs(diff[~box].mean()) < 0.02 and np.abs(diff[~box]).max() < 0.3
    assert 0.4 < data.y.mean() < 0.6


# ---------------------------------------------------------------------------------------------- metrics


def test_rescaling_and_cells_per_level_by_hand():
    saliency = torch.tensor([[[-4.0, 3.0], [2.0, 1.0]]])  # |R| 4 3 2 1 → rescaled 1, 2/3, 1/3, 0 (total 2)
    assert torch.allclose(rescale_saliency(saliency), torch.tensor([[[1.0, 2 / 3], [1 / 3, 0.0]]]))
    masks = top_share_masks(saliency, [0.0, 0.5, 0.6, 0.9, 1.0])
    # shares of the top 1, 2, 3 cells: 0.5, 0.833, 1.0 → k = 0, 1, 2, 3, 4
    assert masks.flatten(1).sum(1).tolist() == [0, 1, 2, 3, 4]
    assert masks[1, 0, 0, 0] and masks[2, 0].flatten().tolist() == [True, True, False, False]
    assert top_share_masks(torch.ones(1, 2, 2), [0.3]).sum() == 2  # a constant map counts as uniform: 2 of 4


def test_ties_are_broken_at_random_not_by_index():
    weights = torch.ones(200, 10)
    first = saliency_order(weights, seed=0)[:, 0]
    assert len(torch.unique(first)) == 10  # every cell comes first for some sample
    assert (saliency_order(weights, seed=0) == saliency_order(weights, seed=0)).all()


def _reference_precision_recall(weights, informative, k):
    """The repo's per-sample loop (getPrecisionRecall.py), for checking the batched version."""
    precision, recall = [], []
    for level in range(k.shape[0]):
        p_sum = r_sum = p_count = r_count = 0.0
        for i in range(weights.shape[0]):
            top = set(torch.argsort(weights[i], descending=True, stable=True)[: int(k[level, i])].tolist())
            true = set(torch.nonzero(informative[i]).flatten().tolist())
            tp = sum(float(weights[i, j]) for j in top & true)
            fp = sum(float(weights[i, j]) for j in top - true)
            fn = sum(float(weights[i, j]) for j in true - top)
            if tp + fp > 0:
                p_sum, p_count = p_sum + tp / (tp + fp), p_count + 1
            if tp + fn > 0:
                r_sum, r_count = r_sum + tp / (tp + fn), r_count + 1
        precision.append(p_sum / p_count if p_count else float("nan"))
        recall.append(r_sum / r_count if r_count else float("nan"))
    return torch.tensor(precision, dtype=torch.float64), torch.tensor(recall, dtype=torch.float64)


def test_batched_weighted_precision_recall_matches_the_loop():
    generator = torch.Generator().manual_seed(0)
    weights = torch.rand(6, 30, generator=generator, dtype=torch.float64)  # distinct: no ties
    informative = torch.rand(6, 30, generator=generator) < 0.3
    informative[0] = False  # a sample without informative cells: no recall, precision 0
    order = saliency_order(weights)
    k = cells_per_level(weights.gather(1, order), torch.tensor(D_GRID, dtype=torch.float64))
    precision, recall = cell_precision_recall(weights.gather(1, order), informative.gather(1, order), k)
    ref_p, ref_r = _reference_precision_recall(weights, informative, k)
    assert torch.allclose(precision, ref_p, equal_nan=True) and torch.allclose(recall, ref_r, equal_nan=True)
    assert torch.isnan(precision[0]) and recall[-1] == 1.0  # nothing masked at d = 0; all at d = 1


class BoxMean(torch.nn.Module):
    """Class-1 logit = mean of the informative box of the 'middle' set (class 0's is 0)."""

    def forward(self, x):
        score = x[:, 10:40, 10:40].mean((1, 2))
        return torch.stack([torch.zeros_like(score), score], 1)


def test_oracle_saliency_is_precise_and_beats_the_random_baseline():
    data = make_dataset("middle", n=100, seed=0)
    x, y, informative = data.tensors()
    oracle = informative.float()
    result = evaluate_saliency(BoxMean(), x, y, oracle, informative, data.background_sampler, time_and_features=True)
    inner = slice(1, 10)
    assert torch.allclose(result.cells.precision[inner], torch.ones(9))
    assert torch.allclose(result.cells.recall[inner], torch.tensor(D_GRID[inner]), atol=0.002)  # recall ≈ d
    assert abs(result.aup - 0.8) < 1e-6 and abs(result.aupr - 0.8) < 0.01 and abs(result.aur - 0.4) < 0.002
    assert torch.allclose(result.time.precision[inner], torch.ones(9))
    assert torch.allclose(result.features.precision[inner], torch.ones(9))
    random = random_baseline(BoxMean(), x, y, oracle, informative, data.background_sampler, time_and_features=True)
    # a randomly placed binary map: precision = the informative share of cells, 900 / 2500
    assert abs(random.aup - 0.8 * 0.36) < 0.02 and random.aupr < result.aupr - 0.4
    assert random.time.aup < result.time.aup - 0.2
    assert set(result.summary()) >= {"AUPR", "AUP", "AUR", "AUC", "time_AUP", "feature_AUPR"}


def test_permutation_keeps_each_samples_values():
    saliency = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(0))
    permuted = permute_saliency(saliency, seed=1)
    assert torch.equal(permuted.flatten(1).sort(1).values, saliency.flatten(1).sort(1).values)
    assert not torch.equal(permuted, saliency)


def test_accuracy_curve_units_and_replacement():
    data = make_dataset("middle", n=200, seed=1)
    x, y, informative = data.tensors()
    result = evaluate_saliency(BoxMean(), x, y, informative.float(), informative, data.background_sampler)
    assert result.accuracy[0] == 100.0  # the box mean separates the classes perfectly
    assert 30 < result.accuracy[-1] < 70  # everything replaced by background: chance
    expected_share = torch.tensor(D_GRID) * 0.36  # the box's cells, 900 of 2500, in proportion to d …
    expected_share[-1] = 1.0  # … and at d = 1 every cell
    assert torch.allclose(result.masked_share, expected_share, atol=0.002)
    # percent × d over [0, 1]: the seed's Table 1 scale (at most 100)
    assert abs(result.auc - float(torch.trapezoid(result.accuracy.double(), torch.tensor(D_GRID)))) < 1e-6
    assert 80 < result.auc <= 100
    # replacement values given as a tensor: zeros wipe the box signal out at d = 1
    zeros = evaluate_saliency(BoxMean(), x, y, informative.float(), informative, torch.zeros_like(x))
    assert zeros.accuracy[-1] == 100.0 * float((y == 0).float().mean())  # score 0 → argmax class 0
    with pytest.raises(ValueError):
        evaluate_saliency(BoxMean(), x, y, informative.float()[:, :10], informative, data.background_sampler)
    with pytest.raises(ValueError):
        evaluate_saliency(BoxMean(), x, y, informative.float(), informative, data.background_sampler, [0.5, 0.2])


# ---------------------------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def tiny_tcn():
    threads = torch.get_num_threads()  # module scope: set up before the single_thread fixture
    torch.set_num_threads(1)
    try:
        train_set, test_set = make_train_test("small_middle", n_train=400, n_test=200, seed=0)
        model = train(make_model("tcn", seed=0, channels=(8, 8)), train_set.x, train_set.y, epochs=5, seed=0)
    finally:
        torch.set_num_threads(threads)
    return model, test_set


def test_tiny_tcn_learns_and_oracle_masking_hurts_it_more_than_random(tiny_tcn):
    model, data = tiny_tcn
    x, y, informative = data.tensors()
    assert accuracy(model, x, y) >= 0.95
    oracle = evaluate_saliency(model, x, y, informative.float(), informative, data.background_sampler)
    random = random_baseline(model, x, y, informative.float(), informative, data.background_sampler)
    assert oracle.accuracy[0] == random.accuracy[0] >= 95
    assert oracle.accuracy[9] < 85 and random.accuracy[9] >= 95  # d = 0.9: most of the box vs. scattered cells
    assert oracle.auc < random.auc - 3


def test_gradient_saliency_beats_random_on_the_tcn(tiny_tcn):
    model, data = tiny_tcn
    x, y, informative = data.tensors()
    saliency = Gradient(model)(x, y)
    result = evaluate_saliency(model, x, y, saliency, informative, data.background_sampler)
    random = random_baseline(model, x, y, saliency, informative, data.background_sampler)
    assert result.aupr > random.aupr + 0.1 and result.aup > random.aup + 0.1  # seen: 0.28–0.47 vs 0.06


def test_models_read_features_by_time():
    x = torch.randn(3, 50, 50, generator=torch.Generator().manual_seed(0))
    for model in (TCN(), LSTMClassifier()):
        assert model(x).shape == (3, 2)
    tcn = TCN().eval()
    changed = x.clone()
    changed[:, :, 30:] += 1.0
    with torch.no_grad():  # causal: the block outputs before step 30 ignore later steps
        assert torch.allclose(tcn.blocks(x)[:, :, :30], tcn.blocks(changed)[:, :, :30], atol=1e-6)
        assert not torch.allclose(tcn.blocks(x)[:, :, 30:], tcn.blocks(changed)[:, :, 30:])
    a, b = make_model("tcn", seed=4), make_model("tcn", seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_lrp_explains_the_tcn():
    model = make_model("tcn", seed=0).eval()
    with torch.no_grad():  # bias-free: LRP conserves the explained logit
        for module in model.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    x, target = torch.randn(4, 50, 50, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 0, 1])
    relevance = LRP(model, epsilon=1e-9)(x, target)
    assert relevance.shape == x.shape and torch.isfinite(relevance).all()
    logits = model(x).gather(1, target[:, None])[:, 0].detach()
    assert torch.allclose(relevance.sum((1, 2)), logits, rtol=0.05, atol=0.01)
