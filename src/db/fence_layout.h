#pragma once
// The fence file shared by the database agent (writer, db/fence_file.h) and the PostgreSQL
// library fulcrum_fence.so (reader, pgext/fulcrum_fence.c): valid C and C++.
//
// The file is 4096 bytes; this struct sits at offset 0. The agent creates it once and then only
// rewrites the two deadlines in place with aligned 64-bit atomic stores; the postmaster maps it
// read-only (MAP_SHARED) and its children inherit the mapping, so a new deadline reaches every
// PostgreSQL process without a syscall. Never replaced (a rename would leave the server reading
// the old inode) and never truncated (a mapped page past the end of a file faults).
//
// Writes must stop once EITHER clock reaches its deadline: CLOCK_BOOTTIME keeps counting while
// the machine is suspended, CLOCK_REALTIME also moves on while a paused VM's monotonic clocks
// stand still. A forward step of the wall clock only fences early. A deadline of 0 (disarmed),
// a file too short or with another magic or version: fenced.
#include <stdint.h>

#define FULCRUM_FENCE_FILE_SIZE 4096
// "FULCRFN1" read as a little-endian uint64.
#define FULCRUM_FENCE_MAGIC UINT64_C(0x314E4652434C5546)
#define FULCRUM_FENCE_VERSION UINT64_C(1)

typedef struct FulcrumFenceLayout {
  uint64_t magic;
  uint64_t version;
  int64_t deadline_boottime_ns;  // CLOCK_BOOTTIME
  int64_t deadline_realtime_ns;  // CLOCK_REALTIME
} FulcrumFenceLayout;
