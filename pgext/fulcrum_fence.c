// fulcrum_fence: a PostgreSQL 15 server library that stops a primary from taking writes once
// the database agent's leader lease may have expired, without the agent having to run. The
// agent (a frozen process, a stuck syscall) cannot be trusted to stop its server in time; this
// library runs inside every PostgreSQL process and reads the deadline the agent last armed from
// a shared file mapping (src/db/fence_layout.h).
//
// Loaded by the agent through shared_preload_libraries on the postmaster's command line, with
// fulcrum.fence_file naming the file. Once the fence holds (either clock past its deadline):
//   - a transaction that wrote (has an XID) cannot commit or PREPARE: SQLSTATE 25006;
//   - COMMIT PREPARED is refused (it commits another XID, with no pre-commit callback of ours);
//   - a commit whose record was already flushed when the fence took hold is not acknowledged:
//     the client's socket is shut down, so the client sees a lost connection, never "COMMIT";
//   - a background worker sends the postmaster SIGQUIT (immediate shutdown: no shutdown
//     checkpoint and no more WAL streamed, so replicas do not diverge from the new primary).
// The checks above hold even for a server that was frozen whole (SIGSTOP, a paused VM) and then
// thawed: they read the clocks at each commit, nothing has to wake up first.
//
// `SELECT current_setting('fulcrum.fenced', true)` answers "on" or "off" as of now, in any
// session, with no CREATE EXTENSION (NULL when the library is not loaded).
//
// Cost per commit of a writing transaction: a few loads and four clock_gettime calls, all in the
// vDSO (two before the commit record, two after it): no syscall.

// clang-format off
#include "postgres.h"  // first, as in every PostgreSQL source file
// clang-format on

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "db/fence_layout.h"
#include "fmgr.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/guc.h"
#include "utils/wait_event.h"

PG_MODULE_MAGIC;

void _PG_init(void);
PGDLLEXPORT void fulcrum_fence_main(Datum arg);

#define NS_PER_MS INT64CONST(1000000)
// The background worker rereads the file at least this often (a deadline moved earlier, a
// disarm, a monotonic clock that stood still while the machine was suspended).
#define WORKER_MAX_SLEEP_MS 1000

static char* fence_file_path = NULL;
static bool fenced_placeholder = true;  // fulcrum.fenced's storage: its value comes from the show hook
static const FulcrumFenceLayout* fence = NULL;  // the mapping; NULL: fenced for good
static ProcessUtility_hook_type prev_process_utility = NULL;

static int64 now_ns(clockid_t clock) {
  struct timespec ts;

  if (clock_gettime(clock, &ts) != 0) {
    return -1;
  }
  return (int64)ts.tv_sec * INT64CONST(1000000000) + ts.tv_nsec;
}

// Nanoseconds until the fence holds; 0 when it holds now (fail closed on anything unexpected).
static int64 fence_remaining_ns(void) {
  int64 boot_deadline;
  int64 real_deadline;
  int64 boot_now;
  int64 real_now;
  int64 left;

  if (fence == NULL || __atomic_load_n(&fence->magic, __ATOMIC_RELAXED) != FULCRUM_FENCE_MAGIC ||
      __atomic_load_n(&fence->version, __ATOMIC_RELAXED) != FULCRUM_FENCE_VERSION) {
    return 0;
  }
  boot_deadline = __atomic_load_n(&fence->deadline_boottime_ns, __ATOMIC_RELAXED);
  real_deadline = __atomic_load_n(&fence->deadline_realtime_ns, __ATOMIC_RELAXED);
  if (boot_deadline <= 0 || real_deadline <= 0) {
    return 0;
  }
  boot_now = now_ns(CLOCK_BOOTTIME);
  real_now = now_ns(CLOCK_REALTIME);
  if (boot_now < 0 || real_now < 0) {
    return 0;
  }
  left = Min(boot_deadline - boot_now, real_deadline - real_now);
  return left > 0 ? left : 0;
}

static bool fence_holds(void) {
  return fence_remaining_ns() == 0;
}

static void refuse_write(void) {
  ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                  errmsg("this node's leader lease has expired: it accepts no writes"),
                  errhint("Fulcrum's fence (fulcrum_fence) stops writes on a primary whose database agent "
                          "has not renewed its leader lease in time; another node may lead now. Write to "
                          "the current primary.")));
}

// The commit record is already flushed (and, in synchronous mode, replicated): the transaction
// cannot be rolled back any more, only left unacknowledged.
//
// Why not ERROR or FATAL here (checked against PostgreSQL's xact.c): CommitTransaction() calls
// the XACT_EVENT_COMMIT callbacks after RecordTransactionCommit() and ProcArrayEndTransaction(),
// inside HOLD_INTERRUPTS(), while the transaction still has its XID. An ERROR longjmps to the
// abort path (AbortCurrentTransaction -> AbortTransaction -> RecordTransactionAbort), and a
// FATAL runs proc_exit's ShutdownPostgres -> AbortOutOfAnyTransaction, which reaches the same
// RecordTransactionAbort: it finds the XID committed in pg_xact and PANICs ("cannot abort
// transaction %u, it was already committed"), a crash restart of the whole server (tried on
// 15.20 with an ERROR here: exactly that PANIC, then "terminated by signal 6"). The
// acknowledgement (CommandComplete, ReadyForQuery) is only sent after CommitTransaction returns,
// so shutting the socket down now is early enough: those writes fail, the backend marks the
// client connection lost and exits at its next interrupt check, outside the transaction.
static void withhold_acknowledgement(const char* what) {
  if (MyProcPort != NULL && MyProcPort->sock != PGINVALID_SOCKET) {
    shutdown(MyProcPort->sock, SHUT_RDWR);
  }
  // After the shutdown: the client cannot receive this warning either, only the server log.
  ereport(WARNING, (errmsg("fulcrum fence: %s committed after this node's leader lease expired; its "
                           "acknowledgement is withheld and the client connection closed",
                           what)));
}

static void fence_xact_callback(XactEvent event, void* arg) {
  TransactionId xid;

  if (event != XACT_EVENT_PRE_COMMIT && event != XACT_EVENT_PRE_PREPARE && event != XACT_EVENT_COMMIT) {
    return;
  }
  // Cheapest test first: a transaction that wrote nothing has no XID and is never refused.
  xid = GetTopTransactionIdIfAny();
  if (!TransactionIdIsValid(xid) || !fence_holds()) {
    return;
  }
  if (event == XACT_EVENT_COMMIT) {
    char what[48];  // no palloc here: an out-of-memory ERROR after the commit would PANIC

    snprintf(what, sizeof(what), "transaction %u", xid);
    withhold_acknowledgement(what);
  } else if (!RecoveryInProgress()) {
    refuse_write();
  }
}

static void fence_process_utility(PlannedStmt* pstmt, const char* query_string, bool read_only_tree,
                                  ProcessUtilityContext context, ParamListInfo params,
                                  QueryEnvironment* query_env, DestReceiver* dest, QueryCompletion* qc) {
  Node* statement = pstmt->utilityStmt;
  bool commit_prepared =
      IsA(statement, TransactionStmt) && ((TransactionStmt*)statement)->kind == TRANS_STMT_COMMIT_PREPARED;

  if (commit_prepared && !RecoveryInProgress() && fence_holds()) {
    refuse_write();
  }
  if (prev_process_utility != NULL) {
    prev_process_utility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
  } else {
    standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
  }
  // The prepared transaction's commit record is written now; as after any commit, a fence that
  // took hold meanwhile withholds the acknowledgement (an ERROR would only abort our own,
  // empty, transaction and misreport a done commit as failed).
  if (commit_prepared && fence_holds()) {
    withhold_acknowledgement("a prepared transaction (COMMIT PREPARED)");
  }
}

static const char* show_fenced(void) {
  return fence_holds() ? "on" : "off";
}

// Sleeps until the deadline (at most WORKER_MAX_SLEEP_MS at a time); once the fence holds on a
// server out of recovery, stops the whole server at once.
void fulcrum_fence_main(Datum arg) {
  bool stop_sent = false;

  pqsignal(SIGTERM, die);  // as standard background workers: FATAL at the next interrupt check
  BackgroundWorkerUnblockSignals();
  for (;;) {
    int64 left;
    long timeout_ms;

    CHECK_FOR_INTERRUPTS();
    left = fence_remaining_ns();
    if (left == 0 && !RecoveryInProgress()) {
      if (!stop_sent) {
        ereport(LOG, (errmsg("fulcrum fence: this node's leader lease has expired: immediate shutdown")));
        kill(PostmasterPid, SIGQUIT);
        stop_sent = true;  // the postmaster's SIGQUIT ends this process next
      }
      left = WORKER_MAX_SLEEP_MS * NS_PER_MS;
    }
    timeout_ms = left >= WORKER_MAX_SLEEP_MS * NS_PER_MS ? WORKER_MAX_SLEEP_MS
                                                         : (long)((left + NS_PER_MS - 1) / NS_PER_MS);
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout_ms, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  }
}

static void map_fence_file(void) {
  int fd;
  struct stat st;
  void* mapped;

  fd = open(fence_file_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ereport(WARNING, (errmsg("fulcrum fence: cannot open \"%s\": %m; this server accepts no writes",
                             fence_file_path)));
    return;
  }
  if (fstat(fd, &st) != 0 || st.st_size < FULCRUM_FENCE_FILE_SIZE) {
    ereport(WARNING, (errmsg("fulcrum fence: \"%s\" is shorter than %d bytes; this server accepts no writes",
                             fence_file_path, FULCRUM_FENCE_FILE_SIZE)));
    close(fd);
    return;
  }
  mapped = mmap(NULL, FULCRUM_FENCE_FILE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (mapped == MAP_FAILED) {
    ereport(WARNING,
            (errmsg("fulcrum fence: cannot map \"%s\": %m; this server accepts no writes", fence_file_path)));
    return;
  }
  fence = (const FulcrumFenceLayout*)mapped;
}

static void register_worker(void) {
  BackgroundWorker worker;
  Dl_info self;

  // The worker's process finds its entry point by library name: ours is an absolute path
  // outside $libdir, so name it exactly as it was loaded.
  if (dladdr((void*)fulcrum_fence_main, &self) == 0 || self.dli_fname == NULL) {
    ereport(ERROR, (errmsg("fulcrum fence: cannot find the path of this library")));
  }
  if (strlen(self.dli_fname) >= BGW_MAXLEN) {
    ereport(ERROR, (errmsg("fulcrum fence: library path \"%s\" is longer than %d bytes", self.dli_fname,
                           BGW_MAXLEN - 1)));
  }
  memset(&worker, 0, sizeof(worker));
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  worker.bgw_restart_time = 1;
  strlcpy(worker.bgw_library_name, self.dli_fname, BGW_MAXLEN);
  strlcpy(worker.bgw_function_name, "fulcrum_fence_main", BGW_MAXLEN);
  strlcpy(worker.bgw_name, "fulcrum fence", BGW_MAXLEN);
  strlcpy(worker.bgw_type, "fulcrum fence", BGW_MAXLEN);
  RegisterBackgroundWorker(&worker);
}

void _PG_init(void) {
  // The mapping must be made by the postmaster, before any child exists, to be inherited.
  if (!process_shared_preload_libraries_in_progress) {
    ereport(ERROR, (errmsg("fulcrum_fence must be loaded through shared_preload_libraries")));
  }
  DefineCustomStringVariable("fulcrum.fence_file", "The fence file written by Fulcrum's database agent.",
                             NULL, &fence_file_path, "", PGC_POSTMASTER, 0, NULL, NULL, NULL);
  DefineCustomBoolVariable("fulcrum.fenced",
                           "Whether this node's leader lease may have expired, as of now (read-only).", NULL,
                           &fenced_placeholder, true, PGC_INTERNAL, GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
                           NULL, NULL, show_fenced);
  MarkGUCPrefixReserved("fulcrum");
  if (fence_file_path == NULL || fence_file_path[0] == '\0') {
    ereport(ERROR, (errmsg("fulcrum_fence needs fulcrum.fence_file (the database agent passes it)")));
  }
  map_fence_file();
  RegisterXactCallback(fence_xact_callback, NULL);
  prev_process_utility = ProcessUtility_hook;
  ProcessUtility_hook = fence_process_utility;
  register_worker();
}
