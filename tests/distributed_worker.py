"""Run by tests/test_distributed.py under torchrun: the real `digitcnn train` command, with the shard each
process draws and the weights each process ends with recorded beside the run folder."""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

import digitcnn.jobs
import digitcnn.train
from digitcnn import distributed
from digitcnn.cli import main

out = Path(sys.argv[sys.argv.index("--out") + 1])
drawn: list[list[int]] = []
real_shard_indices, real_fit = digitcnn.train.shard_indices, digitcnn.jobs.fit


def recording_shard_indices(permutation, rank, world_size):
    shard = real_shard_indices(permutation, rank, world_size)
    drawn.append(shard.tolist())
    return shard


def recording_fit(model, *args, **kwargs):
    history = real_fit(model, *args, **kwargs)
    rank = distributed.rank()
    state = {name: value.detach().contiguous() for name, value in model.state_dict().items()}
    save_file(state, str(out.parent / f"rank{rank}.safetensors"))
    (out.parent / f"rank{rank}-shards.json").write_text(json.dumps(drawn))
    return history


digitcnn.train.shard_indices = recording_shard_indices
digitcnn.jobs.fit = recording_fit
sys.exit(main(sys.argv[1:]))
