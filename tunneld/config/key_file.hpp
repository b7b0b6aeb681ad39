// Private key file safety: the daemon and `tunneld check` refuse a key that
// someone else could read, and say exactly how to fix it.
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>

namespace tunneld {

// Returns an empty string when `path` is a regular file, readable by this
// process, owned by this process's user (or root), and without group/other
// permission bits. Otherwise returns one line naming the problem and the fix,
// e.g. "/etc/tunneld/node.key is group/world readable (mode 0644): run chmod 600
// /etc/tunneld/node.key". `runs_as`: judge for that user instead of this process's (`tunneld check`
// run as root for a daemon that runs as the unit's User=tunneld). root reads
// any key; any other user must own it.
std::string key_file_problem(const std::string& path, std::optional<uid_t> runs_as = std::nullopt);

}  // namespace tunneld
