#include "site/node_command.h"

#include <cstdio>

#include "core/exit_codes.h"

namespace fulcrum::site {

int runNodeCommand(const config::Site& site, ControlOp op, const std::string& node) {
  const std::string command = "fulcrum " + std::string(controlOpName(op));
  const auto socket = controlSocketPath(site.site.state_dir);
  nlohmann::json answer;
  std::string error;
  bool refused = false;
  if (!askUp(socket, {{"op", controlOpName(op)}, {"node", node}}, kNodeCommandTimeout, answer, error,
             refused)) {
    if (refused) {
      std::fprintf(stderr,
                   "%s: no `fulcrum up` runs site %s here (%s): these commands act on the nodes it runs; "
                   "start it with `fulcrum up %s`\n",
                   command.c_str(), site.site.name.c_str(), error.c_str(), site.display_path.c_str());
    } else {
      std::fprintf(stderr, "%s: %s\n", command.c_str(), error.c_str());
    }
    return core::kExitRuntime;
  }
  const bool ok = answer.value("ok", false);
  const auto text = answer.find(ok ? "message" : "error");
  const std::string said =
      text != answer.end() && text->is_string() ? text->get<std::string>() : answer.dump();
  if (ok) {
    std::printf("%s\n", said.c_str());
    return core::kExitOk;
  }
  std::fprintf(stderr, "%s: %s\n", command.c_str(), said.c_str());
  return answer.value("unknown_node", false) ? core::kExitConfig : core::kExitRuntime;
}

}  // namespace fulcrum::site
