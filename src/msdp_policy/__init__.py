"""Policy: the asymmetric actor-critic, the learner, the transition log and the policy node."""
