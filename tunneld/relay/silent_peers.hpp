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

// The identities whose probe pings arrive here (health/probe.hpp serve_probe),
// and when the last one did: proof that the link from them works. A witness
// (which may have no inbound listener to probe) is reachable while its pings
// arrive, and a peer this node finds silent is dialled again as soon as one
// arrives rather than after this node's own probe gets through.
class HeardPeers {
  public:
    using Clock = std::chrono::steady_clock;
    void note(const std::string& identity, Clock::time_point at = Clock::now()) {
        std::lock_guard lock(mutex_);
        last_[identity] = at;
    }
    std::optional<Clock::time_point> last(const std::string& identity) const {
        std::lock_guard lock(mutex_);
        auto it = last_.find(identity);
        if (it == last_.end()) return std::nullopt;
        return it->second;
    }

  private:
    mutable std::mutex mutex_;
    std::map<std::string, Clock::time_point> last_;
};

}  // namespace tunneld
