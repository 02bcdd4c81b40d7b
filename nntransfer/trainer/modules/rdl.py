"""RDL: representational distance learning (McClure & Kriegeskorte, Frontiers in Computational Neuroscience 2016):
the student's representational dissimilarity matrices are pulled towards a teacher's, batch by batch."""
from __future__ import annotations

import torch

from ...errors import ConfigError
from ...models.representations import capture, layer_names
from ..handover import teacher_forward
from .base import CapturingModule, Option, PassTerms, register_module

DISTANCES = ("correlation", "euclidean", "cosine")
COMPARISONS = ("mse", "correlation")


def rdm(representations: torch.Tensor, distance: str = "correlation") -> torch.Tensor:
    """The representational dissimilarity matrix ``[B, B]`` of a batch of representations (flattened per example):

    * ``"correlation"``: ``1 - Pearson correlation`` of two patterns (invariant to scaling and shifting a pattern);
    * ``"cosine"``: ``1 - cosine similarity`` (invariant to scaling a pattern);
    * ``"euclidean"``: the Euclidean distance (invariant to rotating and translating the representation space).
    """
    x = representations.flatten(1).float()
    if distance == "euclidean":
        squared = x.pow(2).sum(1)
        # clamped before the root: rounding can make a distance of 0 slightly negative, and its root has no gradient
        return (squared[:, None] + squared[None, :] - 2 * x @ x.T).clamp(min=0).add(1e-12).sqrt()
    if distance == "correlation":
        x = x - x.mean(dim=1, keepdim=True)
    elif distance != "cosine":
        raise ConfigError(f"RDL distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-8)
    return 1 - x @ x.T


def rdm_loss(student: torch.Tensor, teacher: torch.Tensor, distance: str = "correlation",
             comparison: str = "mse") -> torch.Tensor:
    """How far the student's RDM is from the teacher's, over the pairs of different examples (the upper triangle):
    ``"mse"`` (the mean squared difference, McClure & Kriegeskorte's loss) or ``"correlation"`` (1 - the Pearson
    correlation of the two RDMs: invariant to scaling the dissimilarities as a whole)."""
    n = student.shape[0]
    if n < 2:
        return student.float().sum() * 0.0  # no pair: nothing to compare (keeps the graph)
    rows, cols = torch.triu_indices(n, n, offset=1, device=student.device)
    s = rdm(student, distance)[rows, cols]
    t = rdm(teacher, distance)[rows, cols].detach()
    if comparison == "mse":
        return (s - t).pow(2).mean()
    if comparison != "correlation":
        raise ConfigError(f"RDL comparison must be one of {', '.join(COMPARISONS)}, got {comparison!r}")
    s, t = s - s.mean(), t - t.mean()
    return 1 - (s * t).sum() / (s.norm() * t.norm()).clamp(min=1e-12)


def check_layers(model, names: list[str], whose: str) -> None:
    """ConfigError naming the layers ``model`` does not have (and some it has)."""
    known = layer_names(model)
    missing = [name for name in names if name not in known]
    if missing:
        raise ConfigError(f"{whose} has no layer(s) {missing}; its layers: {', '.join(known[:30])}")


@register_module("RDL")
class RDL(CapturingModule):
    """Adds ``weight * sum_l w_l * loss(RDM(student_l), RDM(teacher_l))`` to every training batch's loss.

    The teacher is the previous step's trained model, run on the same (e.g. augmented) inputs as the student, in
    eval mode and without gradients (``source="model"``; the step may start from a fresh initialisation:
    ``transfer_parameters=False``); or representations handed over per example as transfer data, which training
    batches carry as ``extra`` (``source="transfer_data"``: the ``"logits"`` of a step with ``data_transfer=True``,
    or the outputs of the layers it names in ``transfer_layers``, under the layers' names).

    Options (``module_options["RDL"]``):

    * ``layers``: the student's layers (``model.named_modules()`` names): a list, or ``{layer: weight}``;
    * ``teacher_layers``: ``{student layer: teacher layer (or transfer-data name)}`` where they differ (default:
      the same name);
    * ``distance``: ``"correlation"`` (default), ``"euclidean"`` or ``"cosine"`` (see :func:`rdm`);
    * ``comparison``: ``"mse"`` (default) or ``"correlation"`` between the two RDMs (see :func:`rdm_loss`);
    * ``weight``: factor of the whole term (default 1.0); ``source``: ``"model"`` (default) or ``"transfer_data"``.

    The term's mean per training pass is logged as ``rdl``.
    """

    options_declared = {
        "layers": Option(types=(list, dict), help="the student's layers: [names] or {name: weight}"),
        "teacher_layers": Option({}, dict, "{student layer: teacher layer or transfer-data name} where they differ"),
        "distance": Option("correlation", str, "'correlation', 'euclidean' or 'cosine'"),
        "comparison": Option("mse", str, "'mse' or 'correlation' between the RDMs"),
        "weight": Option(1.0, float, "factor of the term"),
        "source": Option("model", str, "'model' (the previous step's model) or 'transfer_data'"),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        if not options["layers"]:
            raise ConfigError(f"module_options[{key!r}]['layers'] is empty; name the student's layers to compare")
        for name, allowed in (("distance", DISTANCES), ("comparison", COMPARISONS), ("source", ("model",
                                                                                               "transfer_data"))):
            if options[name] not in allowed:
                raise ConfigError(f"module_options[{key!r}][{name!r}] must be one of {', '.join(allowed)}, "
                                  f"got {options[name]!r}")
        unknown = sorted(set(options["teacher_layers"]) - set(options["layers"]))
        if unknown:
            raise ConfigError(f"module_options[{key!r}]['teacher_layers'] names {unknown}, which are not in 'layers'")

    def __init__(self, trainer):
        super().__init__(trainer)
        layers = self.option("layers")
        self.layer_weight = dict(layers) if isinstance(layers, dict) else {name: 1.0 for name in layers}
        self.layers = list(self.layer_weight)
        self.teacher_layer = {layer: self.option("teacher_layers").get(layer, layer) for layer in self.layers}
        self.teacher = None
        if self.option("source") == "model":
            self.teacher = self.handover.teacher(self.device, self.name)
            check_layers(self.teacher, list(self.teacher_layer.values()), f"{self.name}: the teacher")
        check_layers(self.model, self.layers, f"{self.name}: the model")
        self._teacher_reps: dict | None = None
        self.terms = PassTerms()

    def pre_epoch(self, model, mode, **options):
        if mode == "Training":
            self.terms = PassTerms()

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode != "Training":
            return model, inputs
        if self.teacher is not None:
            with torch.no_grad(), capture(self.teacher, list(self.teacher_layer.values())) as reps:
                teacher_forward(self.teacher, inputs, task_key)
            self._teacher_reps = dict(reps)
        else:
            extra = shared_memory.get("extra") or {}
            missing = [name for name in self.teacher_layer.values() if name not in extra]
            if missing:
                raise ConfigError(f"{self.name} with source='transfer_data' reads the teacher's representations "
                                  f"{missing} from the batch's transfer data, which has {sorted(extra)}: set "
                                  "teacher_layers to names it has (e.g. 'logits'), or use source='model'")
            self._teacher_reps = {name: extra[name] for name in self.teacher_layer.values()}
        self.start_capture(self.layers)
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        reps = self.end_capture()
        if reps is None:
            return outputs, loss, targets
        term = None
        for layer in self.layers:
            teacher = self._teacher_reps[self.teacher_layer[layer]]
            part = self.layer_weight[layer] * rdm_loss(reps[layer], teacher, self.option("distance"),
                                                       self.option("comparison"))
            term = part if term is None else term + part
        self._teacher_reps = None
        self.terms.add(self.task_key, term)
        return outputs, loss + self.option("weight") * term, targets

    def post_epoch(self, model):
        if self.mode == "Training":
            self.terms.log(self, "rdl")

    def state_dict(self) -> dict:
        return {"terms": self.terms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.terms.load_state_dict(state["terms"])
