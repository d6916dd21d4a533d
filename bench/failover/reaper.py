"""Runs a command (Patroni) below a child subreaper that reaps every process orphaned under it.

Patroni starts PostgreSQL the way pg_ctl does: a helper process starts the postmaster and exits,
so the postmaster is reparented to init. On this machine kind, init (the VM's process manager)
reaps orphans slowly: a killed postmaster stays a zombie, Patroni's liveness check still sees
it, and a whole loop_wait goes by before Patroni reacts. Patroni solves this itself when it runs
as PID 1 (it forks and reaps like init); here the same is done with PR_SET_CHILD_SUBREAPER, so
the benchmark measures Patroni and not the sandbox's init.

Usage: reaper.py PIDFILE COMMAND [ARGS...] -- writes the command's pid to PIDFILE, forwards
SIGTERM/SIGINT/SIGHUP to it, reaps everything, and exits with its status once no child is left.
A forwarded signal is followed by SIGCONT: the freeze faults SIGSTOP patroni, and a stopped
process would leave the signal pending until someone thaws it.
"""
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main():
    pidfile, argv = sys.argv[1], sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"reaper: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    child = os.fork()
    if child == 0:
        os.execvp(argv[0], argv)
    tmp = pidfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{child}\n")
    os.rename(tmp, pidfile)

    def forward(signo, _frame):
        try:
            os.kill(child, signo)
            os.kill(child, signal.SIGCONT)
        except ProcessLookupError:
            pass

    for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signo, forward)
    status = 0
    while True:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        if pid == child:
            status = os.waitstatus_to_exitcode(wait_status)
    sys.exit(status if status >= 0 else 128 - status)


if __name__ == "__main__":
    main()
