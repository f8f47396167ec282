"""What a pre-training family gives train/pretrain.py: one `LayerTrainer` per layer it trains without labels.

A family whose section names the procedure "pretrain" (models/families.py) answers
`section.layer_trainers(model, batch_size) -> [LayerTrainer, ...]`, bottom layer first. Each says:

    unit          the module whose parameters the update changes (a dA, a cA, an RBM, or a family's own)
    kind          the update rule: "denoising" | "contractive" | "cd" (CD-k / PCD-k) for the chapters' rules, which
                  deeptut.accel may replace by a fused form of the same arithmetic (by the unit's type and
                  this rule), or any other name for a rule only `reference` computes
    options       the rule's settings besides the step size (corruption_level; contraction_level,
                  floor_division; k, persistent)
    reference     lr -> update(x [batch, n_in], generator, chain, update_index) -> (cost, chain): one
                  minibatch of training, in place, the cost computed before the update (a Theano
                  function's output); chain is the PCD chain's state (None for the others)
    chain_width   PCD: the chain's hidden units (one chain per minibatch row, zeros at the layer's start);
                  None: no chain
    line          (layer, epoch, costs [n] or [n, 2]) -> (the tutorial's printed line, metrics fields)

Nothing here names a family: the family's section picks the builders and the printed line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

Update = Callable[[torch.Tensor, torch.Generator, "torch.Tensor | None", int], tuple[torch.Tensor, Any]]
Line = Callable[[int, int, np.ndarray], tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class LayerTrainer:
    unit: nn.Module
    kind: str
    reference: Callable[[float], Update]
    line: Line
    options: dict[str, Any] = field(default_factory=dict)
    chain_width: int | None = None

    def initial_chain(self, batch_size: int, device: torch.device) -> torch.Tensor | None:
        """PCD's chain at the start of the layer: hidden state zeros [batch_size, chain_width] (rbm.py)."""
        if self.chain_width is None:
            return None
        return torch.zeros(batch_size, self.chain_width, device=device)


# --- the printed lines ---------------------------------------------------------------------------------


def mean_line(template: str, **extra: Any) -> Line:
    """A line of one number, the epoch's mean cost (float64, as numpy.mean(c)): `template` formats layer,
    epoch and cost ("Training epoch {epoch}, cost  {cost}": dA.py, with its two spaces)."""
    def line(layer: int, epoch: int, costs: np.ndarray) -> tuple[str, dict[str, Any]]:
        cost = float(np.mean(costs))
        return template.format(layer=layer, epoch=epoch, cost=cost), {"cost": cost, **extra}
    return line


STACKED_LINE = "Pre-training layer {layer}, epoch {epoch}, cost  {cost}"  # SdA.py, DBN.py


def rbm_cost_kind(persistent: bool) -> dict[str, str]:
    """What the RBM's monitoring cost is: rbm.py's pseudo-likelihood proxy (PCD) or DBN.py's reconstruction
    cross-entropy (CD)."""
    return {"cost_kind": "pseudo-likelihood" if persistent else "reconstruction"}


# --- the chapters' rules -------------------------------------------------------------------------------


def denoising(unit: nn.Module, corruption_level: float, line: Line) -> LayerTrainer:
    """dA.py / SdA.py: SGD on the reconstruction cross-entropy of the input corrupted with corruption_level."""
    def reference(lr: float) -> Update:
        return lambda x, g, chain, i: (unit.get_cost_updates(x, corruption_level, lr, g), None)
    return LayerTrainer(unit, "denoising", reference, line, {"corruption_level": corruption_level})


def contractive(unit: nn.Module, contraction_level: float, batch_size: int, floor_division: bool) -> LayerTrainer:
    """cA.py: SGD on reconstruction + contraction_level x the Jacobian penalty, divided by the minibatch size
    (n_batchsize) the way `floor_division` says; it prints its two numbers (models/ca.py)."""
    unit.n_batchsize = batch_size  # the penalty's divisor (cA.py's n_batchsize)
    # the division's kind is a training setting, not in model.json (model_args leaves it out), so the
    # model built from model_args has the default (true division): set the config's here
    unit.floor_division = floor_division

    def reference(lr: float) -> Update:
        def update(x, g, chain, i):
            L_rec, L_jacob = unit.get_cost_updates(x, contraction_level, lr)
            return torch.stack([L_rec, L_jacob]), None
        return update

    def line(layer: int, epoch: int, costs: np.ndarray) -> tuple[str, dict[str, Any]]:
        from deeptut.models.ca import epoch_means, tutorial_printed_values

        rec, jnorm = epoch_means(list(map(tuple, costs)))
        # cA.py prints rows 0 and 1 of its cost array (models/ca.py); the tutorial arithmetic (floor
        # division) prints those, deeptut's own the epoch means it meant
        shown = tutorial_printed_values(list(map(tuple, costs))) if floor_division and len(costs) > 1 \
            else (rec, jnorm)
        return (f"Training epoch {epoch}, reconstruction cost  {shown[0]}  jacobian norm  {shown[1]}",
                {"cost": rec, "jacobian_norm": jnorm})

    return LayerTrainer(unit, "contractive", reference, line,
                        {"contraction_level": contraction_level, "floor_division": floor_division})


def rbm(unit: nn.Module, k: int, persistent: bool, template: str) -> LayerTrainer:
    """rbm.py / DBN.py: CD-k (the chain started at a sample of h given the data) or PCD-k (the chain's hidden
    state kept across updates). The cost: the pseudo-likelihood proxy at visible bit update_index modulo
    n_visible (rbm.py's bit_i_idx) under PCD, the reconstruction cross-entropy under CD."""
    def reference(lr: float) -> Update:
        def update(x, g, chain, i):
            return unit.get_cost_updates(x, lr, chain if persistent else None, k, g, i % unit.n_visible)
        return update
    return LayerTrainer(unit, "cd", reference, mean_line(template, **rbm_cost_kind(persistent)),
                        {"k": k, "persistent": persistent}, unit.n_hidden if persistent else None)
