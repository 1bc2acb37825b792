"""What every benchmark records beside its figures: the machine and the software, and where the JSON goes."""

import json
import os
import platform
import sys

import torch

from digitcnn.files import atomic_write
from digitcnn.train import native_bfloat16

# A CPU's model name alone does not tell these machines apart ("AMD EPYC" is a Zen 3 with AVX2 on one, a Zen 4 with
# AVX-512 and bfloat16 on another), and they train 1.8x apart: the JSON names which of these the CPU has.
VECTOR_EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def machine() -> dict:
    cpu, flags, family = platform.processor() or "", set(), {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name":
                    cpu = value
                elif key == "flags":
                    flags = set(value.split())
                elif key in ("cpu family", "model") and key not in family:
                    family[key] = value
                if key == "processor" and value != "0":  # the first core tells
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_family_model": "/".join(family.values()) or None,
        "vector_extensions": [name for name in VECTOR_EXTENSIONS if name in flags],
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
