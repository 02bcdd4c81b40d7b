"""Does pretraining on digits 0–4 help a LeNet learn digits 5–9 from few examples? A data-budget sweep.

    nntransfer run examples/digits_transfer.py

On scikit-learn's bundled 8×8 digits (offline), a LeNet learns digits 5–9 from 3, 10 or 30 training examples per
class, or from all of them (about 124 per class), in three ways, with three seeds each:

* baseline (from scratch): trained on 5–9 only;
* transfer (fine-tune all): pretrained on digits 0–4, then every parameter fine-tuned on 5–9, with a new output
  layer (``reset=["readout.7"]``: the pretrained one has learned to rule out 5–9);
* transfer (core frozen): the same pretraining and new output layer; the convolutional core keeps its
  pretrained weights and only the classifier (``readout``) is trained on 5–9.

Model selection: each seed draws 20 validation examples per class of 5–9 (``validation_examples_per_class``)
before any training example, so the budget counts training examples only and every budget of a seed is selected
on the same 100 validation images — more labelled images than the small budgets train on, as in few-shot
benchmarks with a fixed validation set. Every variant trains for at most 200 optimizer steps (batches of 32,
Adam at 0.005), evaluated every 10 steps, stopped after 5 evaluations without improvement, and ends with the
parameters of its best evaluation. Test accuracy is measured on the whole test split of 5–9 (180 images), the
same for every variant, budget and seed. The pretraining step has the same key in every transfer variant and
budget, so it is trained once per seed.

``nntransfer run`` prints the results and writes the report (its comparison and sweep plots show test accuracy
per budget); ``nntransfer results examples/digits_transfer.py`` shows them again.

What the numbers show (test accuracy, mean ± sample std over n = 3 seeds, as the first run printed them):

    training examples per class   3              10             30             all
    baseline (from scratch)       0.811 ± 0.067  0.887 ± 0.034  0.941 ± 0.009  0.969 ± 0.018
    transfer (fine-tune all)      0.754 ± 0.059  0.904 ± 0.003  0.930 ± 0.020  0.967 ± 0.006
    transfer (core frozen)        0.748 ± 0.056  0.828 ± 0.044  0.896 ± 0.028  0.915 ± 0.018

Pretraining on digits 0–4 does not help here: at no budget is a transfer variant better than training from
scratch by more than the seeds' spread. With 3 examples per class both transfer variants are below training from
scratch by about one standard deviation (n = 3: not a clear difference); from 10 examples per class on, fine-tuning
everything and training from scratch are within each other's spread. Keeping the pretrained core frozen gives the
lowest accuracy from 10 examples per class on, lower than training from scratch by more than the spread of
either.

The first run (a fresh database; 39 trainings: 3 pretrainings and 36 steps on 5–9) took 64 s wall on two cores
shared with other work (load average 2–3), 41 s of CPU time in the nntransfer process (38.5 s user, 2.1 s system).
"""
from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

SEEDS = (1, 2, 3)
BUDGETS = (3, 10, 30, None)  # training examples per class of digits 5-9; None: all of them
VALIDATION_PER_CLASS = 20  # drawn first, the same for every budget of a seed

# in_memory: 8x8 images as one tensor, batches by index (no per-image PIL transforms)
digits_0_4 = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], batch_size=32, in_memory=True,
                                comment="digits 0-4")
lenet = ModelConfig(type="lenet")
# num_threads=1: a LeNet on 8x8 images is too small to split over threads; one thread is fastest, and far
# faster when other programs share the cores (set per run, not for the whole process). Runs of a few seconds
# need no checkpoints (save_every_n=0): an interrupted one starts again.
pretrain = TrainerConfig(max_iter=10, optimizer_options={"lr": 0.003}, patience=5, verbose=False, save_every_n=0,
                         num_threads=1, comment="pretrain on 0-4")
# the same optimizer-step budget for every data budget: 200 steps are 200 epochs of 3 examples per class but
# 10 epochs of all of them; evaluated every 10 steps
scratch = TrainerConfig(max_steps=200, eval_every_steps=10, patience=5, optimizer_options={"lr": 0.005},
                        verbose=False, save_every_n=0, num_threads=1, comment="from scratch")
# transfer: a new output layer for the new classes (the pretrained one learned to rule out 5-9)
finetune = scratch.replace(reset=["readout.7"], comment="fine-tune all, new output layer")
finetune_frozen = finetune.replace(freeze=["core.*"], comment="core frozen, new output layer")


def digits_5_9(budget):
    return ImageDatasetConfig(dataset_cls="digits", filter_classes=[5, 6, 7, 8, 9], examples_per_class=budget,
                              validation_examples_per_class=VALIDATION_PER_CLASS, valid_size=0.0, batch_size=32,
                              in_memory=True, comment=f"digits 5-9, {budget or 'all'} per class")


transfer_experiments = {}
for budget in BUDGETS:
    label = f"[examples_per_class={budget or 'all'}]"  # grid-style names: plots group and sweep by the budget
    for seed in SEEDS:
        target = digits_5_9(budget)
        transfer_experiments[Description("baseline (from scratch)" + label, seed)] = TransferExperiment(
            [Experiment(target, lenet, scratch, seed)])
        transfer_experiments[Description("transfer (fine-tune all)" + label, seed)] = TransferExperiment(
            [Experiment(digits_0_4, lenet, pretrain, seed), Experiment(target, lenet, finetune, seed)])
        transfer_experiments[Description("transfer (core frozen)" + label, seed)] = TransferExperiment(
            [Experiment(digits_0_4, lenet, pretrain, seed), Experiment(target, lenet, finetune_frozen, seed)])
