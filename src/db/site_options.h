#pragma once
// The db role's settings from the topology file: the etcd client and the elector of one node.
#include <string_view>

#include "config/config.h"
#include "db/elector.h"
#include "db/etcd_client.h"

namespace fulcrum::db {

// [etcd] endpoints. A call's timeout follows db.leader_ttl_ms (a quarter of it, 200 ms..2 s):
// a renewal must fail fast enough to leave time for retries before the lease fences itself.
// `tls`: the node's client TLS under [security] internal_tls (null: http).
EtcdClientOptions etcdClientOptions(const config::Site& site,
                                    std::shared_ptr<core::ClientTransportFactory> tls = nullptr);
// The elector of db node `node`: key /fulcrum/<site.name>/leader, timing from db.leader_ttl_ms.
ElectorOptions electorOptions(const config::Site& site, std::string_view node);

}  // namespace fulcrum::db
