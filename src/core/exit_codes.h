#pragma once
// Process exit codes of every command (contract §2).
namespace fulcrum::core {

inline constexpr int kExitOk = 0;       // ok, including a clean stop on SIGINT/SIGTERM
inline constexpr int kExitRuntime = 1;  // runtime failure (a port in use, a missing docroot...)
inline constexpr int kExitConfig = 2;   // bad usage or bad configuration

}  // namespace fulcrum::core
