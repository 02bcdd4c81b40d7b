"""The robustness evaluation: the final model tested under Gaussian noise (pixel units, clamped) and on corruption
test sets, stored per level with the results, shown by results_frame, plotted in the report."""
import numpy as np
import pandas as pd
import pytest
import torch

from nntransfer import Experiment, train
from nntransfer.analysis import results_frame, robustness_plot, write_report
from nntransfer.analysis.frames import Entry
from nntransfer.configs import ConfigError, ImageDatasetConfig, ModelConfig, TrainerConfig

from bias_helpers import fit, image_net, pixel_batches

LEVELS = [0.0, 0.2, 1.0]


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory):
    """A corruption test set of the digits test split (every image inverted), as corrupted_test_dir expects."""
    from nntransfer.dataset.sources import load_source

    source = load_source("digits", "", False)
    folder = tmp_path_factory.mktemp("corrupted")
    np.save(folder / "inverted.npy", 255 - source.test_images[..., 0])
    np.save(folder / "labels.npy", source.test_labels)
    return str(folder)


def digits_experiment(seed=1, in_memory=False, corrupted_test_dir=None, **trainer):
    dataset = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2], examples_per_class=60, batch_size=64,
                                 in_memory=in_memory, corrupted_test_dir=corrupted_test_dir)
    return Experiment(dataset, ModelConfig(type="lenet"),
                      TrainerConfig(max_iter=4, optimizer_options={"lr": 0.01}, verbose=False, save_every_n=0,
                                    num_threads=1, noise_robustness=LEVELS, **trainer), seed)


@pytest.mark.parametrize("in_memory", [False, True])
def test_accuracy_at_noise_zero_equals_the_clean_test_accuracy_and_every_level_is_stored(in_memory, corrupted):
    result = train(digits_experiment(in_memory=in_memory, corrupted_test_dir=corrupted))
    robustness = result.output["robustness"]
    assert robustness["noise_levels"] == LEVELS
    noise = robustness["noise"]["img_classification"]
    assert list(noise) == ["0", "0.2", "1"]
    assert noise["0"] == result.test["img_classification"]  # level 0: exactly the clean test pass
    assert noise["1"]["accuracy"] < noise["0"]["accuracy"] - 0.1  # strong noise hurts
    assert set(noise["0.2"]) == {"loss", "accuracy"}
    # the corruption test sets of the step, with their results
    assert robustness["corruptions"] == {"img_classification_inverted": result.test["img_classification_inverted"]}
    # seeded: the same parameters always get the same numbers (the noise does not come from the training RNG)
    again = train(digits_experiment(in_memory=in_memory, corrupted_test_dir=corrupted))
    assert again.output["robustness"] == robustness


def test_results_frame_and_report_show_the_robustness_per_level(tmp_path, corrupted):
    found = []
    for name, trainer in (("plain", {}), ("noise-trained", {"main_loop_modules": ["NoiseAugmentation"]})):
        for seed in (1, 2):
            result = train(digits_experiment(seed=seed, in_memory=True, corrupted_test_dir=corrupted, **trainer))
            found.append(Entry(name, seed, 0, "TrainedModel", dict(result.key), "done", result.score, result.output))
    frame = results_frame(found)
    columns = [c for c in frame.columns if c.startswith("noise/")]
    assert columns[:2] == ["noise/img_classification/0/loss", "noise/img_classification/0/accuracy"]
    assert len(columns) == 2 * len(LEVELS)
    assert (frame["noise/img_classification/0/accuracy"] == frame["test/img_classification/accuracy"]).all()
    index = write_report(found, tmp_path / "report")
    page = index.read_text()
    assert "<h2>Robustness</h2>" in page and "robustness_img_classification.png" in page
    assert (tmp_path / "report" / "robustness_img_classification.png").stat().st_size > 10_000
    assert "img_classification_inverted/accuracy" in page  # the corruption table


def test_robustness_plot_draws_each_experiment_s_mean_against_the_noise_level():
    rows = []
    for name, slope in (("a", 0.5), ("b", 0.2)):
        for seed, offset in ((1, 0.0), (2, 0.02)):
            rows.append({"name": name, "seed": seed, "step": 0, "state": "done",
                         **{f"noise/t/{level:g}/accuracy": 0.9 - slope * level + offset for level in (0.0, 0.5, 0.1)}})
    fig = robustness_plot(pd.DataFrame(rows))
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    assert list(lines[0].get_xdata()) == [0.0, 0.1, 0.5]  # the levels in order
    assert list(lines[0].get_ydata()) == pytest.approx([0.91, 0.86, 0.66])  # the mean of the seeds
    assert len(ax.collections) >= 2  # a band of the seeds' spread per line (and the seeds as points)
    with pytest.raises(ValueError, match="set TrainerConfig.noise_robustness"):
        robustness_plot(pd.DataFrame([{"name": "a", "seed": 1, "step": 0, "state": "done", "test/t/accuracy": 1.0}]))


def test_noise_robustness_is_checked_before_training():
    with pytest.raises(ConfigError, match="noise standard deviations"):
        TrainerConfig(noise_robustness=[0.1, -0.2])
    with pytest.raises(ConfigError, match="no 'mean' and 'std'"):
        fit(noise_robustness=[0.1])  # the toy points do not say how they were normalised
    with pytest.raises(ConfigError, match="in_eval=True"):
        fit(image_net(), pixel_batches(), noise_robustness=[0.1], main_loop_modules=["NoiseAugmentation"],
            module_options={"NoiseAugmentation": {"in_eval": True}})
    # a config that does not set the field keeps the key it had before the field existed
    assert TrainerConfig().get_key() == TrainerConfig(noise_robustness=[]).get_key()
    assert TrainerConfig().get_key() != TrainerConfig(noise_robustness=[0.1]).get_key()


def test_noise_in_pixel_units_leaves_clean_inputs_untouched_and_clamps_to_the_pixel_range():
    from nntransfer.trainer.noise import PixelSpace, add_noise

    x = torch.randn(4, 2, 3, 3)
    space = PixelSpace((0.3, 0.6), (0.2, 0.4))
    assert torch.equal(add_noise(x, torch.zeros(4), space, clamp=True), x)
    low, high = space.bounds(x)
    noisy = add_noise(x, torch.full((4,), 5.0), space, clamp=True)
    assert torch.all(noisy >= low) and torch.all(noisy <= high)
    assert torch.allclose(low.flatten(), torch.tensor([-1.5, -1.5])) and torch.allclose(high.flatten(),
                                                                                          torch.tensor([3.5, 1.0]))
