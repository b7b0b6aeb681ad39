// The peers whose address has gone silent, as the probe (probe.hpp) found: its
// connect, handshake or pong timed out, and nothing has answered since. A new
// data connection to such a peer is refused at once (reset) instead of waiting
// timeouts.connect for a SYN that will not be answered, the way HAProxy treats
// a server its checks marked down: a client with a list of addresses (etcd's,
// Patroni's, libpq's) moves on to the next in milliseconds. A peer that refuses
// or fails its handshake is not "silent": dialling it costs nothing, and the
// data path may differ from the probe's (an older tunneld without the probe).
#pragma once
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace tunneld {

class SilentPeers {
  public:
    using Clock = std::chrono::steady_clock;

    // `peer` is silent since `since` (kept if it already was), because of `why`.
    void mark(const std::string& peer, std::string why, Clock::time_point since = Clock::now()) {
        std::lock_guard lock(mutex_);
        if (auto it = silent_.find(peer); it != silent_.end())
            it->second.why = std::move(why);
        else
            silent_.emplace(peer, Entry{std::move(why), since});
    }
    // It answered again.
    void clear(const std::string& peer) {
        std::lock_guard lock(mutex_);
        silent_.erase(peer);
    }
    // Why a connection to `peer` is not dialled now, or nullopt to dial it.
    std::optional<std::string> why(const std::string& peer,
                                   Clock::time_point now = Clock::now()) const {
        std::lock_guard lock(mutex_);
        auto it = silent_.find(peer);
        if (it == silent_.end()) return std::nullopt;
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - it->second.since);
        char secs[32];
        std::snprintf(secs, sizeof secs, "%.1f", static_cast<double>(ms.count()) / 1000.0);
        return "not dialled: the probe has had no answer from " + peer + " for " + secs + " s (" +
               it->second.why + ")";
    }

  private:
    struct Entry {
        std::string why;
        Clock::time_point since;
    };
    mutable std::mutex mutex_;
    std::map<std::string, Entry> silent_;
};

}  // namespace tunneld
