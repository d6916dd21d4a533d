"""Trial driver for bench/failover.sh (run it through that script, which owns the temp dir and
the last-resort cleanup).

For each mode (async, sync) and each system (Fulcrum at leader_ttl_ms 10000 and 5000, Patroni
at ttl 10), one fresh cluster runs TRIALS trials of each fault:
  postgres        (a) kill -9 of the primary's postmaster only
  agent+postgres  (b) kill -9 of the primary's agent and its postmaster together
  agent-frozen    (c) SIGSTOP of the primary's agent process only; its PostgreSQL keeps running
  node-frozen     (d) SIGSTOP of the primary's agent and every PostgreSQL process of that node
A trial: wait for one primary and two caught-up replicas; start the writer and the probes; after
a warm-up (2 s plus a random 0-5 s), kill; the failover time is from the kill to the first commit
on a connection opened after the kill; keep writing AFTER seconds more; stop; count acknowledged ids missing from the
node that took the last commit (lost writes); check no two nodes accepted writes at one moment;
restart a killed agent so the old primary rejoins before the next trial. A node that does not
rejoin or follow by itself within REJOIN_TIMEOUT is re-cloned and counted (rejoin failures);
a trial that fails outright is reported and the cluster rebuilt.

The freeze faults (freeze_trial) differ: the writer follows /primary (writer.py's Router) and a
Direct client writes straight to the old primary's PostgreSQL; the failover time is from the
SIGSTOP to the writer's first commit on another node; THAW_DELAY s after it everything is
SIGCONTed (PostgreSQL first, the agent last), the writer goes on AFTER s, the direct client and
the probes until the old primary streams as a replica again (nothing is restarted); then count
the old primary's commits acknowledged after the new primary's first commit, and the lost writes
(writer and direct ids) on the final primary. One clock: time.monotonic in this process.
"""
import argparse
import os
import random
import shutil
import signal
import statistics
import sys
import time

import psycopg2

import freeze
from clusters import (MAX_LAG, NODES, FulcrumCluster, NotSupported, PatroniCluster, kill_quietly,
                      processes_mentioning, wait_until)
from writer import Direct, Probes, Writer, double_writers

KILL_FAULTS = ("postgres", "agent+postgres")
FREEZE_FAULTS = ("agent-frozen", "node-frozen")
LETTERS = {"postgres": "a", "agent+postgres": "b", "agent-frozen": "c", "node-frozen": "d"}

WARMUP = 2.0  # seconds of load before the kill, at least
# Plus a random 0..JITTER s: trials follow each other at a steady pace, so without it every kill
# would land at the same phase of the leader's renewal cycle (Fulcrum renews every ttl/2, up to
# 5 s; Patroni every loop_wait) and one lucky or unlucky phase would decide a whole cell. Each
# cell draws the same sequence (seed KILL_SEED), so every system meets the same kill moments.
JITTER = 5.0
KILL_SEED = int(os.environ.get("KILL_SEED", "1"))
AFTER = 2.0  # seconds of load after the first post-kill commit (catches a second writer)
# Freeze faults: the frozen processes are thawed this long after the new primary's first commit.
THAW_DELAY = float(os.environ.get("THAW_DELAY", "3"))
FAILOVER_TIMEOUT = 90.0
READY_TIMEOUT = 180.0
# How long a restarted old primary may take to rejoin as a replica before the benchmark re-clones it
# (and counts a rejoin failure): the rejoin is not timed, but it must not stall the run.
REJOIN_TIMEOUT = float(os.environ.get("REJOIN_TIMEOUT", "90"))
NA = "n/a (not supported by this build)"
TRIAL_ERRORS = (TimeoutError, RuntimeError, OSError, psycopg2.Error)


def log(msg):
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


class Cell:
    def __init__(self):
        self.times, self.lost, self.rates = [], [], []
        self.doubles = 0
        self.rejoin_failures = 0  # trials where a node did not rejoin or follow by itself (re-cloned)
        self.restarts = 0  # freeze faults: trials where the thawed agent exited and was started again
        self.after = []  # freeze faults: old primary's commits acknowledged after the new one's first
        self.after_last = []  # ... and how long after it the last of them came (s), None if none
        self.after_lost = 0  # ... how many of them the final primary lacks
        self.led_again = 0  # trials where the thawed old primary took the lead back
        self.failures = []
        self.note = ""


def make_cluster(args, system, ttl_ms, synchronous):
    if system == "fulcrum":
        cluster = FulcrumCluster(args.dir, ttl_ms, synchronous, args.fulcrum)
    else:
        cluster = PatroniCluster(args.dir, ttl_ms, synchronous)
    cluster.keep_logs = args.logs
    return cluster


def bring_up(args, system, ttl_ms, synchronous):
    cluster = make_cluster(args, system, ttl_ms, synchronous)
    try:
        cluster.start()
        cluster.wait_ready(READY_TIMEOUT)
        primary, _ = cluster.roles()
        cluster.query(primary, "CREATE TABLE IF NOT EXISTS bench_w (id bigint PRIMARY KEY, "
                               "at timestamptz NOT NULL DEFAULT now());"
                               "CREATE TABLE IF NOT EXISTS bench_probe (node text NOT NULL, "
                               "at timestamptz NOT NULL DEFAULT now())")
        cluster.wait_ready(READY_TIMEOUT)
        return cluster
    except BaseException:
        cluster.stop(hard=True)
        raise


def count_present(cluster, ids):
    """How many of `ids` the current primary holds (retries while roles settle)."""
    def attempt():
        primary = next((n for n in NODES if cluster.code(n, "/primary") == 200), None)
        if primary is None:
            return None
        try:
            rows = cluster.query(primary, "SELECT count(*) FROM bench_w WHERE id = ANY(%s)", (ids,))
        except psycopg2.Error:
            return None
        return (rows[0][0],)
    return wait_until(attempt, timeout=60, interval=0.2, what="a primary to count rows on")[0]


def ensure_ready(cluster):
    """Waits for one primary and two caught-up replicas. A node that is neither after
    REJOIN_TIMEOUT (its agent cannot make it follow) is re-cloned. Returns (roles, re-cloned)."""
    try:
        return cluster.wait_ready(REJOIN_TIMEOUT), 0
    except TimeoutError:
        primaries = [n for n in NODES if cluster.code(n, "/primary") == 200]
        if len(primaries) != 1:
            raise
        stuck = [n for n in NODES if n != primaries[0] and cluster.code(n, f"/replica?lag={MAX_LAG}") != 200]
        for node in stuck:
            tail = cluster.agent_log(node).strip().splitlines()[-1:]
            log(f"{node} is not a streaming replica after {REJOIN_TIMEOUT:.0f} s (agent log ends: {tail}); "
                "re-cloning it")
            cluster.reclone(node)
        return cluster.wait_ready(READY_TIMEOUT), len(stuck)


def trial(cluster, fault, threads, warmup):
    (old, _), stuck = ensure_ready(cluster)
    probes = Probes(cluster, NODES)
    writer = Writer(cluster, NODES, threads)
    probes.start()
    writer.start()
    start = time.monotonic()
    agent = None
    try:
        wait_until(lambda: writer.count() > 0 and time.monotonic() - start >= warmup, timeout=60, interval=0.05,
                   what="the writer's first commits")
        postmaster = cluster.postmaster_pid(old)
        agent = cluster.agent_pid(old) if fault == "agent+postgres" else None
        killed = time.monotonic()
        killed_at = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        writer.set_mark(killed)
        if agent is not None:
            kill_quietly(agent)
        kill_quietly(postmaster)
        wait_until(lambda: writer.first_after is not None, timeout=FAILOVER_TIMEOUT, interval=0.01,
                   what="a commit after the kill")
        failover = writer.first_after - killed
        time.sleep(AFTER)
    finally:
        acks = writer.stop()
        probe_acks = probes.stop()
    before = [a for a in acks if killed - 1.5 <= a.acked < killed]
    rate = len(before) / 1.5
    new = max(acks, key=lambda a: a.acked).node
    ids = [a.id for a in acks]
    lost = len(ids) - count_present(cluster, ids)
    doubles = double_writers(acks + probe_acks)
    rejoined = stuck == 0
    if agent is not None:
        cluster.reap_agent(old)
        rejoined = rejoin(cluster, old) and rejoined
    return Result(failover=failover, lost=lost, doubles=doubles, rate=rate, old=old, new=new, acked=len(ids),
                  rejoined=rejoined, at=killed_at)


class Result:
    def __init__(self, **fields):
        self.after = None  # freeze faults only, as the rest below
        self.after_last = None
        self.after_lost = 0
        self.led_again = False
        self.detail = ""
        self.restarted = False
        self.__dict__.update(fields)


def wall_clock():
    return time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"


def freeze_trial(cluster, fault, threads, warmup):
    """Faults (c) agent-frozen and (d) node-frozen; see the module's docstring."""
    (old, _), stuck = ensure_ready(cluster)
    probes = Probes(cluster, NODES)
    writer = Writer(cluster, NODES, threads, follow=True)
    direct = Direct(cluster, old)
    probes.start()
    writer.start()
    direct.start()
    start = time.monotonic()
    try:
        wait_until(lambda: writer.count() > 0 and direct.count() > 0 and time.monotonic() - start >= warmup,
                   timeout=60, interval=0.05, what="the writer's and the direct client's first commits")
        frozen = time.monotonic()
        frozen_at = wall_clock()
        writer.set_mark(frozen, old=old)
        try:
            entries = cluster.freeze_agent(old) if fault == "agent-frozen" else cluster.freeze_node(old)
            running = freeze.wait_stopped(entries)
            if running:
                raise RuntimeError(f"{old}: pids {running} did not stop")
            wait_until(lambda: writer.first_after is not None, timeout=FAILOVER_TIMEOUT, interval=0.01,
                       what="a commit on another node after the freeze")
            failover = writer.first_after - frozen
            time.sleep(THAW_DELAY)
        finally:
            # Everything recorded, the latest stopped first: PostgreSQL, then the agent.
            thawed_pids = len(freeze.thaw_all(cluster.frozen_record))
            thawed = time.monotonic()
        time.sleep(AFTER)
        writer.stop()
        outcome, restarted = await_rejoin(cluster, old, writer.first_node)
    finally:
        acks = writer.stop()
        direct_acks = direct.stop()
        probe_acks = probes.stop()
    if outcome == "timeout":
        tail = cluster.agent_log(old).strip().splitlines()[-1:]
        log(f"{old} did not rejoin within {REJOIN_TIMEOUT:.0f} s of the thaw (agent log ends: {tail}); "
            "re-cloning it")
        cluster.reclone(old)
    # The new primary's first commit: the earliest any client (writer or probe) got acknowledged
    # by another node after the freeze -- the earliest proof that two timelines exist.
    first_new = min(a.acked for a in acks + probe_acks if a.node != old and a.acked > frozen)
    after = [a for a in acks + direct_acks + probe_acks if a.node == old and a.acked > first_new]
    by_client = {c: sum(1 for a in after if a.client == c) for c in ("writer", "held", "fresh", "probe")}
    rate = len([a for a in acks if frozen - 1.5 <= a.acked < frozen]) / 1.5
    new = max(acks, key=lambda a: a.acked).node
    ids = [a.id for a in acks + direct_acks]
    lost = len(ids) - count_present(cluster, ids)
    # Which of the late acks the final primary lacks (probes carry no id): a commit the old
    # primary had replicated before the freeze but acknowledged only after the thaw is late, not
    # lost; one it took on its own timeline is gone.
    after_ids = [a.id for a in after if a.id is not None]
    after_lost = len(after_ids) - count_present(cluster, after_ids) if after_ids else 0
    doubles = double_writers(acks + direct_acks + probe_acks)
    detail = (f"new primary's first commit {first_new - frozen:.2f} s after the freeze, thawed {thawed_pids} "
              f"pids at +{thawed - frozen:.2f} s; old primary acked {len(after)} after it")
    if after:
        detail += (" (" + ", ".join(f"{c} {n}" for c, n in by_client.items() if n) + "; "
                   f"{sum(1 for a in after if a.opened < frozen)} on connections opened before the freeze, "
                   f"{sum(1 for a in after if a.sent > first_new)} sent after it, {after_lost} lost; "
                   f"last +{max(a.acked for a in after) - first_new:.2f} s)")
    if outcome == "leads":
        detail += f"; the old primary {old} LEADS AGAIN ({writer.first_node} stepped down)"
    return Result(failover=failover, lost=lost, doubles=doubles, rate=rate, old=old, new=new, acked=len(ids),
                  rejoined=outcome != "timeout" and stuck == 0, at=frozen_at, after=len(after),
                  after_lost=after_lost, restarted=restarted, led_again=outcome == "leads",
                  after_last=(max(a.acked for a in after) - first_new) if after else None, detail=detail)


def await_rejoin(cluster, node, new):
    """After a thaw, until REJOIN_TIMEOUT: ("rejoined", restarted) once the old primary `node`
    streams as a replica; ("leads", restarted) once it is the primary again and the new primary
    `new` is not (three checks in a row: the old one took the lead back); ("timeout", restarted)
    otherwise. An agent that exited meanwhile is started again once (as a service manager would)
    and reported."""
    deadline = time.monotonic() + REJOIN_TIMEOUT
    restarted = False
    leads = 0
    while True:
        code = cluster.agents[node].poll()
        if code is not None and not restarted:
            log(f"{node}'s agent exited ({code}) after the thaw; starting it again")
            cluster.start_agent(node)
            restarted = True
        if cluster.code(node, f"/replica?lag={MAX_LAG}") == 200:
            return "rejoined", restarted
        if cluster.code(node, "/primary") == 200 and cluster.code(new, "/primary") != 200:
            leads += 1
            if leads >= 3:
                return "leads", restarted
        else:
            leads = 0
        if time.monotonic() > deadline:
            return "timeout", restarted
        time.sleep(0.2)


def rejoin(cluster, node):
    """Restarts the killed old primary's agent; True once it streams as a replica, False when it
    did not within REJOIN_TIMEOUT and had to be re-cloned."""
    cluster.start_agent(node)
    try:
        wait_until(lambda: cluster.code(node, f"/replica?lag={MAX_LAG}") == 200, timeout=REJOIN_TIMEOUT,
                   interval=0.2, what=f"{node} rejoining as a replica")
        return True
    except TimeoutError:
        tail = cluster.agent_log(node).strip().splitlines()[-1:]
        log(f"{node} did not rejoin within {REJOIN_TIMEOUT:.0f} s (agent log ends: {tail}); re-cloning it")
        cluster.reclone(node)
        return False


def run_cell(args, cluster, key, cell, fault):
    system, ttl_ms, mode, _ = key
    rng = random.Random(KILL_SEED)
    for i in range(1, args.trials + 1):
        action = "freeze" if fault in FREEZE_FAULTS else "kill"
        label = f"[{system} ttl={ttl_ms / 1000:g}s {mode} {action} {fault}] trial {i}/{args.trials}"
        try:
            warmup = WARMUP + rng.uniform(0.0, JITTER)
            r = (freeze_trial if fault in FREEZE_FAULTS else trial)(cluster, fault, args.threads, warmup)
        except TRIAL_ERRORS as e:
            cell.failures.append(str(e).splitlines()[0])
            log(f"{label}: FAILED: {e}")
            for node in NODES:
                tail = cluster.agent_log(node)[-1500:] if os.path.exists(
                    os.path.join(cluster.dir, node + ".log")) else ""
                print(f"--- {node} log tail ---\n{tail}", flush=True)
            log("rebuilding the cluster")
            cluster.stop(hard=True)
            cluster = bring_up(args, system, ttl_ms, mode == "sync")
            continue
        cell.times.append(r.failover)
        cell.lost.append(r.lost)
        cell.rates.append(r.rate)
        if r.after is not None:
            cell.after.append(r.after)
            cell.after_last.append(r.after_last)
            cell.after_lost += r.after_lost
            cell.led_again += r.led_again
        if r.doubles:
            cell.doubles += 1
        if not r.rejoined:
            cell.rejoin_failures += 1
        if r.restarted:
            cell.restarts += 1
        log(f"{label}: {r.failover:.2f} s, lost {r.lost} of {r.acked} acknowledged, "
            f"{'TWO WRITERS ' + str(r.doubles) + ', ' if r.doubles else ''}"
            f"{r.rate:.0f} commits/s before, primary {r.old} -> {r.new}"
            f"{'' if r.rejoined else ', a node re-cloned'}{', agent restarted' if r.restarted else ''}, "
            f"{'frozen' if action == 'freeze' else 'killed'} at {r.at} UTC" + (f"; {r.detail}" if r.detail else ""))
    return cluster


def table(cells, trials):
    head = ["system", "ttl", "mode", "fault", "trials", "median s", "min s", "max s", "lost writes",
            "old primary's acks after new primary's first commit", "latest such ack, s after",
            "double-writer incidents", "commits/s before", "rejoin failures"]
    rows = []
    for (system, ttl_ms, mode, fault), cell in cells.items():
        base = [system, f"{ttl_ms / 1000:g} s", mode, f"({LETTERS[fault]}) {fault}"]
        if cell.note:
            rows.append(base + [cell.note] + [""] * (len(head) - len(base) - 1))
            continue
        t = cell.times
        lost = sum(cell.lost)
        lost_text = f"{lost}" + (f" (in {sum(1 for x in cell.lost if x)}/{len(t)} trials)" if lost else "")
        if not t:
            lost_text = "-"
        stats = ([f"{statistics.median(t):.2f}", f"{min(t):.2f}", f"{max(t):.2f}"] if t else ["-"] * 3)
        done = f"{len(t)}/{trials}" + (f" ({len(cell.failures)} failed)" if cell.failures else "")
        rate = f"{statistics.median(cell.rates):.0f}" if cell.rates else "-"
        rejoins = str(cell.rejoin_failures) if t else "-"
        if cell.restarts:
            rejoins += f" ({cell.restarts} agent restarts)"
        if cell.led_again:
            rejoins += f" (old primary led again in {cell.led_again})"
        after, latest = "-", "-"
        if cell.after:
            total = sum(cell.after)
            after = f"{total}" + (f" (in {sum(1 for x in cell.after if x)}/{len(cell.after)} trials, "
                                  f"{cell.after_lost} lost)" if total else "")
            lasts = [x for x in cell.after_last if x is not None]
            latest = f"{max(lasts):.2f}" if lasts else "-"
        rows.append(base + [done] + stats + [lost_text, after, latest, str(cell.doubles), rate, rejoins])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def sweep(directory):
    """The last resort (failover.sh's exit trap): whatever a freeze fault left stopped is thawed,
    every process whose command line names the run dir -- agents, patroni, postmasters, etcd --
    is killed, so is every once-frozen process still alive (a backend), then the dir is removed."""
    thawed = freeze.thaw_all(os.path.join(directory, "frozen.pids"))
    for _ in range(50):
        pids = processes_mentioning(directory)
        if not pids:
            break
        for pid in pids:
            kill_quietly(pid)
        time.sleep(0.2)
    for entry in thawed:
        if freeze.alive(entry):
            kill_quietly(entry[0])
    shutil.rmtree(directory, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--fulcrum", required=True)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--systems", default="fulcrum:10000,fulcrum:5000,patroni:10000")
    p.add_argument("--modes", default="async,sync")
    p.add_argument("--faults", default="postgres,agent+postgres,agent-frozen,node-frozen")
    p.add_argument("--logs", default="", help="keep every cluster's logs in this directory")
    p.add_argument("--cleanup", action="store_true", help="only kill what runs from --dir and remove it")
    args = p.parse_args()
    if args.cleanup:
        sweep(args.dir)
        return
    systems = [(s.split(":")[0], int(s.split(":")[1])) for s in args.systems.split(",")]
    modes, faults = args.modes.split(","), args.faults.split(",")
    unknown = [f for f in faults if f not in KILL_FAULTS + FREEZE_FAULTS]
    if unknown:
        sys.exit(f"run.py: unknown fault {', '.join(unknown)} (known: {', '.join(KILL_FAULTS + FREEZE_FAULTS)})")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # Rows grouped for comparison: fault, then mode, then system.
    cells = {(s, ttl, m, f): Cell() for f in faults for m in modes for (s, ttl) in systems}
    log(f"failover benchmark: {args.trials} trials per cell, {args.threads} writer threads, "
        f"systems {args.systems}, modes {args.modes}, faults {args.faults}")
    cluster = None
    try:
        for mode in modes:
            for system, ttl_ms in systems:
                log(f"starting {system} (ttl {ttl_ms / 1000:g} s, {mode})")
                try:
                    cluster = bring_up(args, system, ttl_ms, mode == "sync")
                    for fault in faults:
                        key = (system, ttl_ms, mode, fault)
                        cluster = run_cell(args, cluster, key, cells[key], fault)
                    cluster.stop()
                except NotSupported as e:
                    log(f"{system} {mode}: {NA}: {e}")
                    for fault in faults:
                        cells[(system, ttl_ms, mode, fault)].note = NA
                except TRIAL_ERRORS as e:
                    log(f"{system} {mode}: giving up on this cluster: {e}")
                    if cluster is not None:
                        cluster.stop(hard=True)  # harmless when already stopped
                cluster = None
    finally:
        if cluster is not None:
            cluster.stop(hard=True)
        print()
        print(table(cells, args.trials), flush=True)


if __name__ == "__main__":
    main()
