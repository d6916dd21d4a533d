"""Freezing processes with SIGSTOP and thawing them with SIGCONT, for faults (c) and (d).

A stopped process ignores everything but SIGKILL and SIGCONT: SIGTERM stays pending, and a
stopped PostgreSQL backend whose postmaster was killed never notices. So every pid this module
stops is first written to a record file in the run dir (with its start time, so a reused pid is
never signalled), and each cleanup path -- the trial's `finally`, Cluster.stop and failover.sh's
last-resort sweep -- thaws what the record still lists before it kills anything.
"""
import os
import signal
import time


def stat(pid):
    """(state, ppid, start time in clock ticks) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[19])


def descendants(root):
    """Pids of every live descendant of `root`, parents before their children."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = stat(int(entry))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry))
    found, queue = [], [root]
    while queue:
        for child in sorted(children.get(queue.pop(0), [])):
            found.append(child)
            queue.append(child)
    return found


def _read(record):
    try:
        with open(record) as f:
            return [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except OSError:
        return []


def _write(record, entries):
    tmp = record + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(f"{pid} {start}\n" for pid, start in entries)
    os.rename(tmp, record)


def stop(record, pids):
    """SIGSTOPs `pids` in order, each recorded first. Returns the (pid, start) pairs stopped."""
    done = []
    for pid in pids:
        st = stat(pid)
        if st is None:
            continue
        _write(record, _read(record) + [(pid, st[2])])
        try:
            os.kill(pid, signal.SIGSTOP)
            done.append((pid, st[2]))
        except ProcessLookupError:
            pass
    return done


def wait_stopped(entries, timeout=2.0):
    """Pids among `entries` not yet in the stopped state after `timeout` (a process in an
    uninterruptible sleep stops when that ends); [] when all are stopped or gone. A zombie (a
    backend that exited as its postmaster was stopped, so nobody reaps it yet) counts as gone."""
    deadline = time.monotonic() + timeout
    while True:
        running = [pid for pid, start in entries
                   if (st := stat(pid)) is not None and st[2] == start and st[0] not in "TtZX"]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.01)


def cont(record, entries):
    """SIGCONTs `entries` in order (those still the same process) and drops them from the record."""
    for pid, start in entries:
        st = stat(pid)
        if st is not None and st[2] == start:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    gone = set(entries)
    _write(record, [e for e in _read(record) if e not in gone])


def thaw_all(record):
    """SIGCONTs everything the record lists, latest stopped first (so an agent, stopped first,
    is thawed last); returns those entries. Safe to call when nothing is recorded."""
    entries = _read(record)
    if entries:
        cont(record, list(reversed(entries)))
    return entries


def alive(entry):
    """Whether the recorded process still runs (a zombie does not)."""
    st = stat(entry[0])
    return st is not None and st[2] == entry[1] and st[0] != "Z"
