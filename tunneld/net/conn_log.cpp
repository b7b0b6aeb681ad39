#include "tunneld/net/conn_log.hpp"

#include <spdlog/spdlog.h>

namespace tunneld {

void log_open(const ConnInfo& c, bool resumed, const std::string& group) {
    spdlog::info("conn={} {} open peer={} remote={} local={}{}{}{}{} resumed={}{}{}", c.id,
                 c.direction, c.peer, c.remote, c.local,
                 c.service.empty() ? "" : " service=", c.service,
                 c.route.empty() ? "" : " route=", c.route, resumed ? "yes" : "no",
                 group.empty() ? "" : " group=", group);
}

void log_close(const ConnInfo& c, const RelayResult& r) {
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - c.start).count();
    auto level = r.reason == CloseReason::finished ? spdlog::level::info : spdlog::level::warn;
    spdlog::log(level,
                "conn={} {} close peer={} remote={} local={}{}{}{}{} rx={} tx={} duration={:.3f}s "
                "reason={}{}{}",
                c.id, c.direction, c.peer.empty() ? "-" : c.peer, c.remote,
                c.local.empty() ? "-" : c.local, c.service.empty() ? "" : " service=", c.service,
                c.route.empty() ? "" : " route=", c.route, r.from_tls, r.to_tls, secs,
                to_string(r.reason), r.detail.empty() ? "" : " detail=", r.detail);
}

void log_handshake_failure(const ConnInfo& c, const HandshakeResult& h) {
    spdlog::warn("conn={} {} handshake failed peer={} remote={}{}{} reason={} detail=\"{}\"", c.id,
                 c.direction, c.peer.empty() ? "-" : c.peer, c.remote,
                 c.service.empty() ? "" : " service=", c.service, to_string(h.failure), h.detail);
}

void log_route_refusal(const ConnInfo& c, CloseReason reason, const std::string& detail,
                       std::uint64_t count) {
    spdlog::warn(
        "conn={} {} close peer=- remote=- local={} route={} reason={} detail=\"{}\"{}", c.id,
        c.direction, c.local, c.route, to_string(reason), detail,
        count > 1 ? " (" + std::to_string(count) + " refused since the last such line)" : "");
}

std::uint64_t RefusalLog::note(const std::string& source,
                               std::chrono::steady_clock::time_point now) {
    std::lock_guard lock(mutex_);
    if (sources_.size() >= 4096 && !sources_.count(source)) {
        std::erase_if(sources_, [&](const auto& e) {
            return now - e.second.logged_at >= interval_ && !e.second.pending;
        });
        if (sources_.size() >= 4096) return note_locked("(many sources)", now);
    }
    return note_locked(source, now);
}

std::uint64_t RefusalLog::note_locked(const std::string& source,
                                      std::chrono::steady_clock::time_point now) {
    auto [it, fresh] = sources_.try_emplace(source);
    auto& e = it->second;
    ++e.pending;
    if (!fresh && now - e.logged_at < interval_) return 0;
    e.logged_at = now;
    return std::exchange(e.pending, 0);
}

}  // namespace tunneld
