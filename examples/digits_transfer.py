"""Does pretraining on digits 0–4 help learning digits 5–9?

    nntransfer run examples/digits_transfer.py

Three variants, two seeds each, on scikit-learn's bundled 8×8 digits (offline):

* baseline: a LeNet trained on digits 5–9 from scratch;
* transfer: pretrained on digits 0–4, then fine-tuned on 5–9 (all parameters);
* transfer, core frozen: the same, but the convolutional core keeps its pretrained weights and only
  the classifier (``readout``) is trained on 5–9.

The pretraining step is shared by both transfer variants (same key), so it is trained once per seed.
Few training examples per class (``examples_per_class``) make the value of pretraining visible.
"""
from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

SEEDS = (1, 2)

digits_0_4 = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], batch_size=32,
                                comment="digits 0-4")
digits_5_9 = ImageDatasetConfig(dataset_cls="digits", filter_classes=[5, 6, 7, 8, 9], examples_per_class=30,
                                valid_size=0.3, batch_size=16, comment="digits 5-9, 30 per class")
lenet = ModelConfig(type="lenet")
pretrain = TrainerConfig(max_iter=15, optimizer_options={"lr": 0.003}, patience=5, verbose=False, comment="pretrain")
finetune = TrainerConfig(max_iter=30, optimizer_options={"lr": 0.001}, patience=10, verbose=False, comment="finetune")
finetune_frozen = finetune.replace(freeze=["core.*"], comment="finetune, core frozen")

transfer_experiments = {}
for seed in SEEDS:
    transfer_experiments[Description("baseline: 5-9 from scratch", seed)] = TransferExperiment(
        [Experiment(digits_5_9, lenet, finetune, seed)])
    transfer_experiments[Description("transfer: 0-4 -> 5-9", seed)] = TransferExperiment(
        [Experiment(digits_0_4, lenet, pretrain, seed), Experiment(digits_5_9, lenet, finetune, seed)])
    transfer_experiments[Description("transfer: 0-4 -> 5-9, core frozen", seed)] = TransferExperiment(
        [Experiment(digits_0_4, lenet, pretrain, seed), Experiment(digits_5_9, lenet, finetune_frozen, seed)])
