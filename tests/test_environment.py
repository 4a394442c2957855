"""The environment record that travels with every measured figure."""

from __future__ import annotations

import json
import platform

import torch

from mnerqg_graph.environment import PACKAGES, describe, environment


def test_environment_names_the_libraries_and_kernels_this_process_uses() -> None:
    env = environment("cpu")
    assert env["python"] == platform.python_version()
    assert env["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert set(PACKAGES) <= set(env) and env["transformers"] is not None
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch_threads"] == torch.get_num_threads() and env["device"] == "cpu"
    assert json.loads(json.dumps(env)) == env  # stored as it is in JSON run records
    assert "device" not in environment()


def test_describe_is_one_line_without_absent_libraries() -> None:
    env = environment("cpu") | {"torchvision": None}
    line = describe(env)
    assert "\n" not in line and line.startswith(f"python {env['python']}, torch {env['torch']} (")
    assert f"{env['torch_threads']} threads" in line and "torchvision" not in line
