"""Does a LeNet teacher's knowledge help a small MLP that sees few labelled examples?

    nntransfer run examples/digits_distillation.py

On scikit-learn's bundled 8×8 digits (offline), two students, two seeds each, 20 labelled examples per class:

* labels only: an MLP trained with cross-entropy on its labels;
* distilled: the same MLP trained with the built-in ``Distillation`` loss (temperature 4, alpha 0.9) on the
  logits of a LeNet teacher trained on the whole training split.

The teacher is step 0 of the distilled transfer experiments (``data_transfer=True``: it hands its logits for
every training, validation and test example to later steps, keyed by example). Both students' seeds share
one teacher (seed 0), trained once. The student starts from a fresh initialisation
(``transfer_parameters=False``: an MLP has none of LeNet's parameters) and receives, for each of its own
examples, the teacher's logits for exactly that example — whatever its seed, split or selection.
"""
from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

SEEDS = (1, 2)
TEACHER_SEED = 0

digits = ImageDatasetConfig(dataset_cls="digits", batch_size=64, comment="digits, whole training split")
few_labels = digits.replace(examples_per_class=20, valid_size=0.2, batch_size=32, comment="digits, 20 per class")
lenet = ModelConfig(type="lenet")
mlp = ModelConfig(type="mlp", hidden_sizes=[64], comment="MLP, one hidden layer")

teach = TrainerConfig(max_iter=8, optimizer_options={"lr": 0.003}, data_transfer=True, verbose=False,
                      comment="teacher")
# a fixed budget for both students (40 validation examples are too few to stop early on)
labels_only = TrainerConfig(max_iter=60, optimizer_options={"lr": 0.003}, early_stopping=False, restore_best=False,
                            save_every_n=20, verbose=False, comment="student, labels only")
distilled = labels_only.replace(loss_functions={"img_classification": "Distillation"},
                                loss_options={"Distillation": {"temperature": 4.0, "alpha": 0.9}},
                                transfer_parameters=False, comment="student, distilled")

teacher = Experiment(digits, lenet, teach, TEACHER_SEED)
transfer_experiments = {}
for seed in SEEDS:
    transfer_experiments[Description("MLP: labels only", seed)] = TransferExperiment(
        [Experiment(few_labels, mlp, labels_only, seed)])
    transfer_experiments[Description("MLP: distilled from LeNet", seed)] = TransferExperiment(
        [teacher, Experiment(few_labels, mlp, distilled, seed)])
