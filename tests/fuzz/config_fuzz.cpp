// Fuzzes the topology loader: any bytes must give either a site or a list of positioned errors,
// never a crash, a hang or an exception escaping loadSiteString.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config/loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto result = fulcrum::config::loadSiteString(text, "/nonexistent-fuzz-dir/site.toml");
  for (const auto& error : result.errors) {
    // Every error must render as FILE:LINE:COL: key: message.
    if (error.toString().rfind("/nonexistent-fuzz-dir/site.toml:", 0) != 0) {
      std::abort();
    }
  }
  return 0;
}
