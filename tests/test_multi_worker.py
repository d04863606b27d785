"""Two MultiWorkerMirroredStrategy workers on loopback train like one worker with the same global
batch; restarting both resumes; a dead worker makes the other fail instead of hang."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_LINE = re.compile(r"step (\d+)/\d+ loss ([0-9.]+) nats/px")


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _train_cmd(data_dir, run_dir, steps, extra=()):
  return [sys.executable, "-m", "text2pixel.binaries.train", "--preset", "tiny", "--data_dir",
          data_dir, "--run_dir", run_dir, "--train_steps", str(steps), "--log_every", "5",
          "--checkpoint_every", "10", "--eval_every", "100000", "--sample_every", "100000",
          *extra]


def _start_workers(data_dir, run_dir, steps, timeout_s=15):
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  procs = []
  for index in range(2):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                   "index": index}}))
    procs.append(subprocess.Popen(
        _train_cmd(data_dir, run_dir, steps, ["--strategy", "multi_worker",
                                              "--collective_timeout_s", str(timeout_s)]),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  return procs


def _losses(output):
  return {int(m.group(1)): float(m.group(2)) for m in STEP_LINE.finditer(output)}


@pytest.mark.slow
def test_two_workers_match_one_worker_resume_and_survive_a_death(mnist_captions_dir, tmp_path):
  single = subprocess.run(_train_cmd(mnist_captions_dir, str(tmp_path / "single"), 20), cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]

  run_dir = str(tmp_path / "multi")
  procs = _start_workers(mnist_captions_dir, run_dir, 20)
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
  one, two = _losses(single.stdout), _losses(outputs[0])
  assert sorted(one) == sorted(two) == [5, 10, 15, 20]
  np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)],
                             rtol=2e-3)
  assert os.path.exists(os.path.join(run_dir, "checkpoints", "ckpt-20.index"))
  assert not any(n.startswith("worker_tmp") for n in os.listdir(run_dir))

  # Both started again: they resume from step 20 and train on. Then worker 1 is killed: worker 0
  # must exit with an error, not hang. (Starting both again after that is this same resume.)
  procs = _start_workers(mnist_captions_dir, run_dir, 100000)
  deadline = time.time() + 300
  index = os.path.join(run_dir, "checkpoints", "checkpoint")
  while time.time() < deadline and "ckpt-30" not in open(index).read():
    time.sleep(0.5)
  assert "ckpt-30" in open(index).read(), "the restarted workers did not train on"
  procs[1].kill()
  try:
    out0 = procs[0].communicate(timeout=240)[0]
  except subprocess.TimeoutExpired:
    procs[0].kill()
    pytest.fail("the surviving worker hung after its peer died")
  assert "at step 20" in out0 and "resumed from" in out0, out0[-3000:]
  assert procs[0].returncode != 0
  assert "error" in out0.lower()
