"""The learner process's weight hand-off: the acting side takes only whole, newer weights, never blocking."""

import torch
import torch.multiprocessing as mp
from torch import nn

from msdp_policy.learner_process import SharedWeights


def test_weights_are_taken_when_newer_and_whole_and_a_torn_copy_is_dropped():
    learner, actor = nn.Linear(3, 2), nn.Linear(3, 2)
    shared = SharedWeights(learner, mp.get_context("spawn"))
    seen = shared.read_into(actor, -1)
    assert torch.equal(actor.weight, learner.weight) and seen == 0

    with torch.no_grad():
        learner.weight.add_(1.0)
    shared.sequence.value += 1  # the learner is writing: nothing is taken
    assert shared.read_into(actor, seen) == seen and not torch.equal(actor.weight, learner.weight)
    shared.sequence.value -= 1
    shared.publish(learner)
    assert shared.read_into(actor, seen) == 2 and torch.equal(actor.weight, learner.weight)
    assert shared.read_into(actor, 2) == 2  # nothing newer

    before = actor.weight.clone()
    with torch.no_grad():
        learner.weight.add_(1.0)
    shared.publish(learner)
    copy = actor.load_state_dict

    def write_during_copy(state, *args, **kwargs):  # the learner publishes while the actor copies
        shared.sequence.value += 2
        actor.load_state_dict = copy
        return copy(state, *args, **kwargs)

    actor.load_state_dict = write_during_copy
    assert shared.read_into(actor, 2) == 2 and torch.equal(actor.weight, before)  # torn: the old weights kept
