"""aerplane: a training control plane for RLVR with Adaptive Entropy Regularization (AER).

The package holds the pure algorithm (`aerplane.core`), the transports and plumbing shared by every service
(`aerplane.common`), and one folder per service: `coefficient`, `generation`, `reward`, `learner`, plus `launcher`
for `aerplane up`. Importing it is cheap; heavy libraries (torch, vLLM) are imported where they are used.
"""

__version__ = "0.1.0"
