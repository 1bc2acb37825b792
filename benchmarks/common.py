"""What every benchmark records beside its figures: the machine and the software, and where the JSON goes."""

import json
import os
import platform
import sys

import torch

from digitcnn.files import atomic_write
from digitcnn.train import native_bfloat16


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # "auto" precision trains in bfloat16 on such a CPU (train.resolved_precision): timings differ by it
        "native_bfloat16": native_bfloat16(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }


def write_result(path: str, result: dict, tiny: bool = False) -> None:
    """Writes the JSON result; a --tiny smoke run goes beside it with .tiny so it never overwrites a real one."""
    if tiny:
        path = path.replace(".json", ".tiny.json")
    atomic_write(path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
