#pragma once
// A secret kept in a file of its own (a password, an admin token), shared by every process of a
// site that needs it: the first one to look creates it, the others read it.
#include <filesystem>
#include <functional>
#include <string>

namespace fulcrum::core {

// The first line of `path` (trailing spaces and CRs dropped) into `value`; when the file does not
// exist, `make()` written there with mode 0600 — in full under a private name, then linked into
// place, so a process racing us sees no file or the whole secret, never a partial one, and the
// first link wins (the loser reads the winner's). False with `error` set on failure (unreadable,
// empty, or `make()` returned "").
bool loadOrCreateSecretFile(const std::filesystem::path& path, const std::function<std::string()>& make,
                            std::string& value, std::string& error);

}  // namespace fulcrum::core
