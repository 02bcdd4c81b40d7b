"""KnowledgeDistillation: online distillation from the previous step's model, run in the loop (Hinton, Vinyals &
Dean, 2015)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..handover import teacher_forward
from .base import MainLoopModule, Option, PassTerms, register_module


def distillation_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    t = float(temperature)
    return t * t * F.kl_div(F.log_softmax(student_logits.float() / t, dim=-1),
                            F.log_softmax(teacher_logits.float() / t, dim=-1), reduction="batchmean", log_target=True)


@register_module("KnowledgeDistillation")
class KnowledgeDistillation(MainLoopModule):
    """Training loss ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * task loss``.

    The teacher is the previous step of a TransferExperiment: its trained model runs on every training batch, on
    the same inputs as the student (after the modules before this one, e.g. augmentation), in eval mode and without
    gradients. The step may start from a fresh initialisation (``transfer_parameters=False``, e.g. a smaller
    student). Unlike the ``Distillation`` loss, which reads logits a teacher step stored once (``data_transfer=True``),
    the teacher sees exactly the student's (augmented, noisy) inputs. Validation and test measure the task's loss.

    Options (``module_options["KnowledgeDistillation"]``): ``temperature`` (T > 0, default 4.0), ``alpha``
    (in [0, 1], default 0.9). The distillation term's mean per training pass is logged as ``distillation``.
    """

    options_declared = {
        "temperature": Option(4.0, float, "T: softens both distributions"),
        "alpha": Option(0.9, float, "weight of the distillation term; the task's loss gets 1 - alpha"),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        if not options["temperature"] > 0:
            raise ConfigError(f"module_options[{key!r}]['temperature'] must be > 0, got {options['temperature']}")
        if not 0 <= options["alpha"] <= 1:
            raise ConfigError(f"module_options[{key!r}]['alpha'] must be in [0, 1], got {options['alpha']}")

    def __init__(self, trainer):
        super().__init__(trainer)
        self.teacher = self.handover.teacher(self.device, self.name)
        self.terms = PassTerms()

    def pre_epoch(self, model, mode, **options):
        if mode == "Training":
            self.terms = PassTerms()

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode == "Training":
            with torch.no_grad():
                shared_memory["teacher_logits"] = teacher_forward(self.teacher, inputs, task_key)
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self.mode != "Training":
            return outputs, loss, targets
        teacher = self.shared_memory["teacher_logits"]
        if teacher.shape != outputs.shape:
            raise ConfigError(f"{self.name}: the teacher's outputs {tuple(teacher.shape)} and the student's "
                              f"{tuple(outputs.shape)} differ; distillation needs the same classes")
        term = distillation_term(outputs, teacher, self.option("temperature"))
        self.terms.add(self.task_key, term)
        alpha = self.option("alpha")
        self.shared_memory["task_loss_weight"] = self.shared_memory.get("task_loss_weight", 1.0) * (1 - alpha)
        return outputs, loss + alpha * term, targets

    def post_epoch(self, model):
        if self.mode == "Training":
            self.terms.log(self, "distillation")

    def state_dict(self) -> dict:
        return {"terms": self.terms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.terms.load_state_dict(state["terms"])
