"""qdesign.nn.allocator: where a job's memory comes from, never what it computes."""

import platform
import subprocess
import sys

import pytest

from qdesign.nn import allocator

SCRIPT = """
import sys, torch
from qdesign.nn.allocator import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
from qdesign.nn.models import build_model
from qdesign.nn.train import evaluate, make_optimizer, train_epoch
from qdesign.quantize import to_quantized
torch.set_num_threads(1)
torch.manual_seed(0)
cfg = {"type": "cnn", "channel_multipliers": [1, 2], "convs_per_block": 1, "kernel_size": 3, "pool": "max"}
model = to_quantized(build_model(cfg, 32, (1, 28, 28), 10).to(memory_format=torch.channels_last), 4)
x = torch.randn(512, 1, 28, 28).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (512,))
opt = make_optimizer(model.parameters(), {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0})
for _ in range(2):
    train_epoch(model, opt, x, y, 128, torch.Generator().manual_seed(0))
print(evaluate(model, x, y), *(float(p.detach().double().sum()).hex() for p in model.parameters()))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_reused_memory_computes_the_same_numbers():
    """Two epochs of a quantized CNN (activations of 12.8 MB per batch: glibc
    would map them afresh) and its evaluation, with and without the setting,
    in fresh processes: the same weights and error bit for bit."""
    runs = [
        subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=600)
        for mode in ("default", "reuse")
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert runs[0].stdout == runs[1].stdout


def test_the_setting_is_made_once_and_reported():
    first = allocator.reuse_freed_memory()
    assert allocator.reuse_freed_memory() is first
    assert first == (platform.libc_ver()[0] == "glibc")  # elsewhere it does nothing
