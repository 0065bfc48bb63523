"""Cluster resource estimates grow with the network and the data, and with retries."""

from qdesign.config import validate_config
from qdesign.resources import mem_mb, runtime_min

from .conftest import tiny_study


def study(**kw):
    return validate_config({"studies": {"s": tiny_study(**kw)}})["studies"]["s"]


def test_wider_networks_and_bigger_data_get_more():
    digits, mnist = study(), study(dataset="mnist")
    assert mem_mb(mnist, 4096) > mem_mb(mnist, 32) > mem_mb(digits, 32)
    assert runtime_min(mnist, 1024, "float", "cpu", 1) > runtime_min(mnist, 32, "float", "cpu", 1)
    assert runtime_min(mnist, 1024, "float", "cpu", 1) > runtime_min(mnist, 1024, "float", "cuda", 1)
    assert runtime_min(mnist, 1024, "float", "cpu", 1) >= runtime_min(mnist, 1024, "float", "cpu", 4)


def test_retries_ask_for_more():
    s = study(dataset="mnist")
    assert mem_mb(s, 256, attempt=2) > mem_mb(s, 256, attempt=1)
    assert runtime_min(s, 256, "retrain", "cpu", 1, attempt=3) == 3 * runtime_min(s, 256, "retrain", "cpu", 1)


def test_estimates_are_whole_and_positive():
    s = study(dataset="cifar10", model={"type": "cnn", "widths": [128], "channel_multipliers": [1, 2, 4]})
    m, t = mem_mb(s, 128), runtime_min(s, 128, "float", "cuda", 2)
    assert isinstance(m, int) and m % 100 == 0 and m >= 800
    assert isinstance(t, int) and t >= 5
