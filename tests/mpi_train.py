#!/usr/bin/python3
"""Data-parallel training under mpirun (README, "Data-parallel training");
python3 standard library only. One part per CTest test:

  equal     mpirun -np 2 with --batch B gives, for 20 steps, the losses and
            parameters of one process with --batch 2B (float32
            reduction-order tolerance): mlp SGD (momentum, Nesterov, weight
            decay, clipping), mlp AdamW with class targets of which a third
            are -100 (the ranks hold different numbers of valid targets, so
            their shares of the loss differ), MAT off and MAT on.
  mat       frozen modules' gradients are not sent: on every step
            comm_bytes, counted by the code that sends, is 4 bytes x (the
            always-on parameters + the active modules' parameters) and
            comm_saved the frozen modules' (mlp: whole layers; gpt-tiny:
            attention heads, column slices of a fused QKV weight); the
            2-rank run equals the 1-process run.
  resume    2 ranks: 10 steps + checkpoint + --resume 10 == 20 steps
            (losses and checkpoint bytes); resuming with one process and
            the same global batch continues the same training; another
            global batch is a clear error; --out is written by rank 0.
  failures  a stopped rank: the others stop within --mpi-timeout, saying
            which rank does not answer; a killed rank ends the job; ranks
            started with other options, and a launcher that is not Open
            MPI's, are clear errors; nothing hangs.
  compile   a `matc compile` trainer under mpirun -np 2 equals matc train
            under mpirun -np 2 (losses, checkpoint bytes).

usage: mpi_train.py MATC SRCDIR PART
Exit 77 (skipped) when mpirun is not installed.
"""
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import ckpt

matc, src, part = sys.argv[1], sys.argv[2], sys.argv[3]
mpirun = shutil.which("mpirun")
if not mpirun:
    print("skip: no mpirun (install openmpi-bin)")
    sys.exit(77)
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1",
           # containers often forbid the cross-process copies Open MPI's shared-memory transport tries first
           OMPI_MCA_btl_vader_single_copy_mechanism="none",
           OPENBLAS_NUM_THREADS="1")
mlp = os.path.join(src, "models/mlp/model.onnx")
gpt = os.path.join(src, "tests/models/gpt-tiny/model.onnx")
mlp_data = [mlp, "--data", "pb:" + os.path.join(src, "tests/train/mlp/data"), "--eval-fraction", "0"]
failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures += 1


def run(cmd, tmp, name, rc=0, timeout=280):
    p = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=env, timeout=timeout)
    if rc is not None and p.returncode != rc:
        print(p.stdout + p.stderr)
        sys.exit("FAIL %s: exit status %d, expected %d" % (name, p.returncode, rc))
    return p


def one(args, tmp, name, rc=0):
    return run([matc, "train"] + args, tmp, name, rc)


def two(args, tmp, name, rc=0, prog=None):
    return run([mpirun, "-np", "2", prog or matc] + ([] if prog else ["train"]) + args, tmp, name, rc)


def children(pid):
    """The processes whose parent is pid (from /proc: no procps needed)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open("/proc/%s/stat" % d).read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d))
    return sorted(out)


def steps(path):
    return ckpt.log_steps(path)


def tensors(path):
    """name -> list of floats of every float32 tensor in a checkpoint (raw
    bytes for other types)."""
    out = {}
    for name, (dt, _, data) in ckpt.checkpoint_tensors(path).items():
        out[name] = list(struct.unpack("<%df" % (len(data) // 4), data)) if dt == 1 else data
    return out


def npy(path, shape, vals):
    """An int64 NPY file."""
    hdr = "{'descr': '<i8', 'fortran_order': False, 'shape': (%s), }" % (
        ", ".join(map(str, shape)) + ("," if len(shape) == 1 else ""))
    hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
        f.write(struct.pack("<%dq" % len(vals), *vals))


def compare(tmp, a, b, what, loss_tol=2e-5, param_tol=2e-5):
    """Logs a.jsonl, b.jsonl and checkpoints A/, B/: losses within loss_tol
    relative (the log keeps 6 digits), every parameter within param_tol of
    the largest magnitude of its tensor. Returns the worst errors."""
    la = [r["loss"] for r in steps(os.path.join(tmp, a + ".jsonl"))]
    lb = [r["loss"] for r in steps(os.path.join(tmp, b + ".jsonl"))]
    lerr = max(abs(x - y) / abs(x) for x, y in zip(la, lb)) if la and len(la) == len(lb) else float("inf")
    ta = tensors(os.path.join(tmp, a.upper(), "checkpoint.matc"))
    tb = tensors(os.path.join(tmp, b.upper(), "checkpoint.matc"))
    perr, worst = 0.0, ""
    for k, x in ta.items():
        if not isinstance(x, list):
            continue
        y = tb.get(k)
        if not isinstance(y, list) or len(y) != len(x):
            perr, worst = float("inf"), k
            break
        scale = max(max(abs(v) for v in x), 1e-30)
        e = max(abs(u - v) for u, v in zip(x, y)) / scale
        if e > perr:
            perr, worst = e, k
    check(len(la) == 20 and lerr <= loss_tol and perr <= param_tol,
          "%s: 20 losses within %.1e (worst %.2e), parameters within %.1e (worst %.2e, %s)" %
          (what, loss_tol, lerr, param_tol, perr, worst))
    return lerr, perr


def module_params(model):
    """module name -> parameter count, and the always-on count (matc inspect --json)."""
    p = subprocess.run([matc, "inspect", model, "--json"], capture_output=True, text=True)
    j = json.loads(p.stdout)
    mods = {m["name"]: m["params"] for m in j["modules"]}
    return mods, j["module_totals"]["params_always_on"]


def check_bytes(path, mods, always, what):
    """comm_bytes = 4 x (always-on + active modules' parameters) on every step; comm_saved the rest."""
    state, ok, frozen = None, True, 0
    for r in steps(path):
        if "state" in r:
            state = r["state"]
        want = 4 * (always + sum(n for m, n in mods.items() if state[m]))
        saved = 4 * sum(n for m, n in mods.items() if not state[m])
        if r["comm_bytes"] != want or r["comm_saved"] != saved:
            ok = False
            print("step %d: comm_bytes %d comm_saved %d, expected %d and %d (state %s)" %
                  (r["step"], r["comm_bytes"], r["comm_saved"], want, saved, state))
        frozen += saved > 0
    check(ok and frozen > 0, "%s: every step sends exactly the always-on and active modules' gradients (%d steps "
          "with frozen modules, whose bytes are not sent)" % (what, frozen))


def part_equal(tmp):
    sgd = mlp_data + ["--steps", "20", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--nesterov",
                      "--weight-decay", "1e-3", "--clip", "1.0", "--seed", "3"]
    one(sgd + ["--batch", "4", "--log", "a.jsonl", "--checkpoint", "A"], tmp, "1 process, SGD")
    p = two(sgd + ["--batch", "2", "--log", "b.jsonl", "--checkpoint", "B"], tmp, "2 ranks, SGD")
    check("data parallel over 2 ranks" in p.stderr and "global batch 4 = 2 x 2" in p.stderr,
          "the run says it is data parallel with a global batch of 4")
    rows = steps(os.path.join(tmp, "b.jsonl"))
    check(all(r["ranks"] == 2 and r["comm_bytes"] == 4 * 269322 and r["comm_saved"] == 0 for r in rows),
          "log: ranks 2, comm_bytes = all 269,322 parameters x 4 bytes, nothing saved without MAT")
    compare(tmp, "a", "b", "mlp SGD-momentum, Nesterov, weight decay, clip: -np 2 --batch 2 == --batch 4")

    # AdamW on targets of which about a third are -100: the ranks' shares differ.
    r = random.Random(7)
    n = 64
    xs = [r.randrange(2) for _ in range(n * 784)]
    ys = [-100 if r.random() < 0.35 else r.randrange(10) for _ in range(n)]
    with open(os.path.join(tmp, "x.npy"), "wb") as f:   # float32 images from 0/1 pixels
        hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, 1, 28, 28), }" % n
        hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
        f.write(struct.pack("<%df" % len(xs), *xs))
    npy(os.path.join(tmp, "y.npy"), (n,), ys)
    adam = [mlp, "--data", "npy:x.npy,y.npy", "--eval-fraction", "0", "--steps", "20", "--optimizer", "adamw", "--lr",
            "0.002", "--weight-decay", "0.01", "--seed", "5"]
    one(adam + ["--batch", "8", "--log", "c.jsonl", "--checkpoint", "C"], tmp, "1 process, AdamW")
    two(adam + ["--batch", "4", "--log", "d.jsonl", "--checkpoint", "D"], tmp, "2 ranks, AdamW")
    compare(tmp, "c", "d", "mlp AdamW, a third of the targets -100: -np 2 --batch 4 == --batch 8", param_tol=1e-4)

    # MAT on: rank 0 probes, every rank applies the same decisions.
    mat = sgd + ["--mat", "on", "--mat-warmup", "4", "--mat-refresh", "4", "--mat-alpha", "2", "--mat-group", "all",
                 "--mat-probe-samples", "8"]
    one(mat + ["--batch", "4", "--log", "e.jsonl", "--checkpoint", "E"], tmp, "1 process, MAT")
    two(mat + ["--batch", "2", "--log", "f.jsonl", "--checkpoint", "F"], tmp, "2 ranks, MAT")
    compare(tmp, "e", "f", "mlp with MAT on: -np 2 --batch 2 == --batch 4")
    se = [(r["step"], r.get("state"), r["active"]) for r in steps(os.path.join(tmp, "e.jsonl"))]
    sf = [(r["step"], r.get("state"), r["active"]) for r in steps(os.path.join(tmp, "f.jsonl"))]
    check(se == sf and any(a < 2 for _, _, a in sf), "MAT: the same decisions at every probe, modules frozen")
    ta, tb = tensors(os.path.join(tmp, "E/checkpoint.matc")), tensors(os.path.join(tmp, "F/checkpoint.matc"))
    check(ta["matc.guards"] == tb["matc.guards"], "MAT: the same guard bytes in both checkpoints")


def part_mat(tmp):
    # mlp: whole layers freeze (alpha 2 keeps only the largest lambda).
    mods, always = module_params(mlp)
    mat = mlp_data + ["--steps", "20", "--lr", "0.05", "--momentum", "0.9", "--seed", "3", "--mat", "on",
                      "--mat-warmup", "4", "--mat-refresh", "4", "--mat-alpha", "2", "--mat-group", "all",
                      "--mat-probe-samples", "8"]
    two(mat + ["--batch", "2", "--log", "m.jsonl"], tmp, "2 ranks, mlp MAT")
    check_bytes(os.path.join(tmp, "m.jsonl"), mods, always, "mlp (layers)")
    # gpt-tiny: heads are column slices of the fused QKV weight and row
    # slices of the output projection; a frozen head's slices stay home.
    r = random.Random(5)
    n, s, v = 48, 16, 65
    npy(os.path.join(tmp, "gx.npy"), (n, s), [r.randrange(v) for _ in range(n * s)])
    npy(os.path.join(tmp, "gy.npy"), (n, s), [-100 if r.random() < 0.4 else r.randrange(v) for _ in range(n * s)])
    mods, always = module_params(gpt)
    # (SGD: AdamW would turn the float noise of gradients that are zero in
    # exact arithmetic, such as the key bias's, into whole steps.)
    g = [gpt, "--data", "npy:gx.npy,gy.npy", "--eval-fraction", "0", "--steps", "20", "--optimizer", "sgd", "--lr",
         "0.2", "--momentum", "0.9", "--seed", "1", "--mat", "on", "--mat-warmup", "4", "--mat-refresh", "4",
         "--mat-probe-samples", "8"]
    one(g + ["--batch", "4", "--log", "g1.jsonl", "--checkpoint", "G1"], tmp, "1 process, gpt-tiny MAT")
    two(g + ["--batch", "2", "--log", "g2.jsonl", "--checkpoint", "G2"], tmp, "2 ranks, gpt-tiny MAT")
    check_bytes(os.path.join(tmp, "g2.jsonl"), mods, always, "gpt-tiny (heads, fused QKV)")
    heads = [m for m in mods if ".head" in m]
    frozen_heads = any(not rr["state"][m] for rr in steps(os.path.join(tmp, "g2.jsonl")) if "state" in rr
                       for m in heads)
    check(frozen_heads, "gpt-tiny: some attention head was frozen")
    compare(tmp, "g1", "g2", "gpt-tiny with MAT (heads frozen), 40% of the targets -100: -np 2 == 1 process")


def part_resume(tmp):
    opts = mlp_data + ["--lr", "0.05", "--momentum", "0.9", "--seed", "3"]
    two(opts + ["--batch", "2", "--steps", "20", "--log", "a.jsonl", "--checkpoint", "A"], tmp, "20 steps")
    two(opts + ["--batch", "2", "--steps", "10", "--log", "b.jsonl", "--checkpoint", "B"], tmp, "10 steps")
    shutil.copytree(os.path.join(tmp, "B"), os.path.join(tmp, "C"))
    shutil.copy(os.path.join(tmp, "b.jsonl"), os.path.join(tmp, "c.jsonl"))
    p = two(opts + ["--batch", "2", "--steps", "20", "--log", "b.jsonl", "--checkpoint", "B", "--resume", "B",
                    "--out", "trained.onnx"], tmp, "resumed to 20 steps")
    check("resuming from B/checkpoint.matc at step 10" in p.stderr, "resume message (once, from rank 0)")
    strip = lambda path: [re.sub(r',"(comm_)?ms":[0-9.e+-]*', "", l) for l in open(os.path.join(tmp, path))]
    check(strip("a.jsonl") == strip("b.jsonl"), "2 ranks: 10 + 10 resumed steps == 20 steps (log lines)")
    same = open(os.path.join(tmp, "A/checkpoint.matc"), "rb").read() == \
        open(os.path.join(tmp, "B/checkpoint.matc"), "rb").read()
    check(same, "2 ranks: the final checkpoints are byte-identical")
    head = open(os.path.join(tmp, "A/checkpoint.matc"), "rb").read(400)
    check(b"\nranks=2\n" in head and b"\nbatch=2\n" in head, "the checkpoint records ranks=2 and batch=2")
    check(os.path.getsize(os.path.join(tmp, "trained.onnx")) > 1000000 and
          p.stderr.count("trained model written") == 1, "--out written once (rank 0)")
    # One process with the same global batch (4) continues the same training.
    p = one(opts + ["--batch", "4", "--steps", "20", "--log", "c.jsonl", "--resume", "C"], tmp, "resharded")
    check("global batch of 4 is kept" in p.stderr, "resuming 2 ranks' checkpoint on 1 rank keeps the global batch")
    la = [r["loss"] for r in steps(os.path.join(tmp, "a.jsonl"))]
    lc = [r["loss"] for r in steps(os.path.join(tmp, "c.jsonl"))]
    check(len(lc) == 20 and max(abs(x - y) / x for x, y in zip(la, lc)) < 2e-5,
          "resharded to 1 process: the same 20 losses (float32 reduction order)")
    # Another global batch: a clear error, on one process and on three ranks.
    p = one(opts + ["--batch", "2", "--steps", "30", "--resume", "C"], tmp, "other global batch", rc=1)
    check("written by a run of 2 ranks with a global batch of 4" in p.stderr and "ranks x --batch = 4" in p.stderr,
          "1 process, --batch 2: error naming both global batches")
    p = run([mpirun, "-np", "3", matc, "train"] + opts + ["--batch", "2", "--steps", "30", "--resume", "C"], tmp,
            "3 ranks", rc=None)
    check(p.returncode != 0 and "global batch of 4" in p.stderr and "this run's is 6" in p.stderr,
          "3 ranks x --batch 2: error, exit %d" % p.returncode)


def part_failures(tmp):
    opts = mlp_data + ["--lr", "0.01", "--momentum", "0.9", "--batch", "2"]
    # A stopped rank (SIGSTOP: alive, silent): the other gives up after the timeout.
    log = open(os.path.join(tmp, "stop.err"), "w")
    p = subprocess.Popen([mpirun, "-np", "2", matc, "train"] + opts + ["--steps", "1000000", "--mpi-timeout", "5",
                                                                       "--log", "s.jsonl"],
                         cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=env)
    ranks = []
    for _ in range(600):
        time.sleep(0.1)
        if os.path.exists(os.path.join(tmp, "s.jsonl")) and len(open(os.path.join(tmp, "s.jsonl")).readlines()) > 20:
            ranks = children(p.pid)
            break
    check(len(ranks) == 2, "two rank processes under mpirun (%s)" % ranks)
    stopped = max(ranks) if ranks else None
    t0 = time.time()
    if stopped:
        os.kill(stopped, signal.SIGSTOP)
    try:
        rc = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = None
    took = time.time() - t0
    if stopped:
        try:
            os.kill(stopped, signal.SIGKILL)
        except OSError:
            pass
    log.close()
    err = open(os.path.join(tmp, "stop.err")).read()
    check(rc not in (0, None) and took < 40, "a stopped rank: the job ends, exit %s, %.1f s after the stop (timeout 5 s)"
          % (rc, took))
    check(re.search(r"rank [01] of 2 \(.*\): step \d+: .* did not complete within 5 s",
                    err) is not None and re.search(r"rank [01] \(.*\) does not answer", err) is not None,
          "the message names the step, the collective, the timeout and the silent rank")
    if failures:
        print(err[-3000:])
    # A killed rank: mpirun ends the job at once.
    p = subprocess.Popen([mpirun, "-np", "2", matc, "train"] + opts + ["--steps", "1000000", "--log", "k.jsonl"],
                         cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    for _ in range(600):
        time.sleep(0.1)
        if os.path.exists(os.path.join(tmp, "k.jsonl")) and len(open(os.path.join(tmp, "k.jsonl")).readlines()) > 20:
            break
    out = children(p.pid)
    t0 = time.time()
    if out:
        os.kill(out[-1], signal.SIGKILL)
    try:
        text = p.communicate(timeout=60)[0]
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        text, rc = "", None
    check(rc not in (0, None) and time.time() - t0 < 30 and "exited on signal 9" in text,
          "a killed rank: mpirun ends the job (exit %s, %.1f s)" % (rc, time.time() - t0))
    # Ranks started with different options: the first difference is named.
    p = run([mpirun, "-np", "1", matc, "train"] + opts + ["--steps", "3", "--lr", "0.05", ":", "-np", "1", matc,
                                                           "train"] + opts + ["--steps", "3", "--lr", "0.02"],
            tmp, "different --lr", rc=None, timeout=120)
    check(p.returncode != 0 and re.search(r'rank 1 \(.*\) would run other training than rank 0 .*--lr.*"0.02, '
                                          r'constant, 0" there, "0.05, constant, 0" on rank 0', p.stderr),
          "ranks with different --lr: error naming the option and both values")
    p = run([mpirun, "-np", "1", matc, "train"] + opts + ["--steps", "3", ":", "-np", "1", matc, "train"] +
            opts[:-2] + ["--batch", "3", "--steps", "3"], tmp, "different --batch", rc=None, timeout=120)
    check(p.returncode != 0 and re.search(r'--batch is "3" there, "2" on rank 0', p.stderr),
          "ranks with different --batch: error naming it")
    # A launcher of another MPI (MPICH's sets PMI_SIZE): this one sees a world of 1.
    q = subprocess.run([matc, "train"] + opts + ["--steps", "2"], cwd=tmp, capture_output=True, text=True,
                       timeout=120, env=dict(env, PMI_SIZE="2", PMI_RANK="0"))
    check(q.returncode == 1 and "the launcher started 2 processes, but MPI_Init gives this one a world of 1"
          in q.stderr, "a foreign launcher's environment: a clear error, exit %d" % q.returncode)
    # Bad option values.
    q = subprocess.run([matc, "train"] + opts + ["--mpi-timeout", "0"], capture_output=True, text=True)
    check(q.returncode == 2 and "--mpi-timeout 0: needs a positive number" in q.stderr, "--mpi-timeout 0: usage")


def part_compile(tmp):
    opts = mlp_data + ["--lr", "0.05", "--momentum", "0.9", "--seed", "3", "--batch", "2"]
    run([matc, "compile", "-o", "trainer"] + opts, tmp, "compile")
    two(opts + ["--steps", "20", "--log", "a.jsonl", "--checkpoint", "A"], tmp, "matc train, 2 ranks")
    two(["--steps", "20", "--log", "b.jsonl", "--checkpoint", "B"], tmp, "trainer, 2 ranks",
        prog=os.path.join(tmp, "trainer"))
    strip = lambda path: [re.sub(r',"(comm_)?ms":[0-9.e+-]*', "", l) for l in open(os.path.join(tmp, path))]
    check(strip("a.jsonl") == strip("b.jsonl") and len(strip("a.jsonl")) == 20,
          "the compiled trainer under mpirun -np 2 logs what matc train does")
    # (the header names the model: the trainer's is its embedded copy)
    same = tensors(os.path.join(tmp, "A/checkpoint.matc")) == tensors(os.path.join(tmp, "B/checkpoint.matc"))
    check(same, "... and writes the same tensors to its checkpoint")


with tempfile.TemporaryDirectory() as tmp:
    if part == "equal":
        part_equal(tmp)
    elif part == "mat":
        part_mat(tmp)
    elif part == "resume":
        part_resume(tmp)
    elif part == "failures":
        part_failures(tmp)
    elif part == "compile":
        part_compile(tmp)
    else:
        sys.exit("unknown part " + part)

sys.exit(1 if failures else 0)
