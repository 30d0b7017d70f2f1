"""This process's place among the processes ``torchrun`` started (one process: rank 0 of 1).

``torchrun --nproc_per_node G -m tracefield <verb> ...`` starts G processes per node and
tells each where it stands through the environment: ``RANK`` (among all processes of all
nodes), ``WORLD_SIZE`` and ``LOCAL_RANK`` (on its node, which picks its GPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Workers:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Workers":
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size == 1:
            return cls()
        return cls(rank=int(os.environ.get("RANK", "0")), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
