#include "tunneld/net/connection_table.hpp"

#include <openssl/x509.h>

#include <boost/asio/post.hpp>
#include <vector>

namespace tunneld {

Admission::~Admission() {
    if (c_) table_.release(c_);
}

Admission ConnectionTable::admit(boost::asio::any_io_executor executor, std::uint64_t id,
                                 bool counted, std::string route, std::string target) {
    std::lock_guard lock(mutex_);
    if (counted && counted_ >= max_) return Admission(*this, nullptr);
    auto c = std::make_shared<LiveConnection>();
    c->executor = std::move(executor);
    c->id = id;
    c->counted = counted;
    c->route = std::move(route);
    c->target = std::move(target);
    if (counted) ++counted_;
    live_.emplace(id, c);
    return Admission(*this, std::move(c));
}

Admission ConnectionTable::admit_local(boost::asio::any_io_executor executor, std::uint64_t id,
                                       const std::string& listener, std::string route,
                                       std::string target, bool needs_quorum) {
    std::lock_guard lock(mutex_);
    auto& n = local_[listener];
    if (n >= max_local_) return Admission(*this, nullptr);
    ++n;
    auto c = std::make_shared<LiveConnection>();
    c->executor = std::move(executor);
    c->id = id;
    c->listener = listener;
    c->route = std::move(route);
    c->target = std::move(target);
    c->needs_quorum = needs_quorum;
    live_.emplace(id, c);
    return Admission(*this, std::move(c));
}

bool ConnectionTable::count(LiveConnection& c) {
    std::lock_guard lock(mutex_);
    if (c.counted) return true;
    if (counted_ >= max_) return false;
    c.counted = true;
    ++counted_;
    return true;
}

void ConnectionTable::release(const std::shared_ptr<LiveConnection>& c) {
    c->alive = false;
    c->close = nullptr;
    c->quiesce = nullptr;
    std::function<void()> notify;
    {
        std::lock_guard lock(mutex_);
        if (c->probe) --probes_;
        if (c->counted) --counted_;
        if (!c->listener.empty())
            if (auto it = local_.find(c->listener); it != local_.end() && --it->second == 0)
                local_.erase(it);
        if (!c->probe_identity.empty())
            if (auto it = probes_by_identity_.find(c->probe_identity);
                it != probes_by_identity_.end() && --it->second == 0)
                probes_by_identity_.erase(it);
        if (!c->backend_source.empty()) backend_sources_.erase(c->backend_source);
        live_.erase(c->id);
        if (live_.size() == probes_) notify = on_empty_;
    }
    if (notify) notify();
}

void ConnectionTable::on_empty(std::function<void()> f) {
    std::lock_guard lock(mutex_);
    on_empty_ = std::move(f);
}

bool ConnectionTable::mark_probe(LiveConnection& c, const std::string& identity) {
    std::lock_guard lock(mutex_);
    if (c.probe) return true;
    auto& n = probes_by_identity_[identity];
    if (n >= kMaxProbesPerIdentity) return false;
    ++n;
    c.probe_identity = identity;
    ++probes_;
    c.probe = true;
    if (c.counted) --counted_;
    c.counted = false;
    return true;
}

void ConnectionTable::note_backend_source(LiveConnection& c, const std::string& source,
                                          const std::string& identity) {
    std::lock_guard lock(mutex_);
    if (!c.backend_source.empty()) backend_sources_.erase(c.backend_source);
    c.backend_source = source;
    backend_sources_[source] = identity;
}

std::string ConnectionTable::peer_of_backend_source(const std::string& source) const {
    std::lock_guard lock(mutex_);
    auto it = backend_sources_.find(source);
    return it == backend_sources_.end() ? std::string() : it->second;
}

std::size_t ConnectionTable::size() const {
    std::lock_guard lock(mutex_);
    return live_.size() - probes_;
}

std::vector<std::shared_ptr<LiveConnection>> ConnectionTable::live_now() const {
    std::vector<std::shared_ptr<LiveConnection>> all;
    std::lock_guard lock(mutex_);
    for (const auto& [id, c] : live_) all.push_back(c);
    return all;
}

void ConnectionTable::close_all(bool probes_only) {
    for (auto& c : live_now())
        boost::asio::post(c->executor, [c, probes_only] {
            if (c->alive && c->close && (c->probe || !probes_only)) c->close();
        });
}

void ConnectionTable::quiesce_all() {
    for (auto& c : live_now())
        boost::asio::post(c->executor, [c] {
            if (c->alive && c->quiesce) c->quiesce();
        });
}

void ConnectionTable::close_revoked(std::function<bool(X509*)> revoked) {
    auto check = std::make_shared<const std::function<bool(X509*)>>(std::move(revoked));
    for (auto& c : live_now())
        boost::asio::post(c->executor, [c, check] {
            if (c->alive && c->close && c->peer_cert && (*check)(c->peer_cert.get())) {
                c->revoked = true;
                c->close();
            }
        });
}

void ConnectionTable::close_expired() {
    for (auto& c : live_now())
        boost::asio::post(c->executor, [c] {
            if (c->alive && c->close && c->peer_cert &&
                X509_cmp_current_time(X509_get0_notAfter(c->peer_cert.get())) <= 0) {
                c->expired = true;
                c->close();
            }
        });
}

std::size_t ConnectionTable::close_routed(const std::string& route, const std::string& target,
                                          const std::string& why, CloseReason reason) {
    return close_marked(
        [&](const LiveConnection& c) { return c.route == route && c.target == target; }, why,
        reason);
}

std::size_t ConnectionTable::close_needing_quorum(const std::string& why) {
    return close_marked([](const LiveConnection& c) { return c.needs_quorum; }, why,
                        CloseReason::no_quorum);
}

std::size_t ConnectionTable::close_marked(const std::function<bool(const LiveConnection&)>& which,
                                          const std::string& why, CloseReason reason) {
    std::vector<std::shared_ptr<LiveConnection>> hit;
    {
        std::lock_guard lock(mutex_);
        for (auto& [id, c] : live_)
            if (which(*c)) hit.push_back(c);
    }
    for (auto& c : hit)
        boost::asio::post(c->executor, [c, why, reason] {
            if (c->alive && c->close) {
                c->switched = why;
                c->switched_reason = reason;
                c->close();
            }
        });
    return hit.size();
}

ConnectionTable::Refusal ConnectionTable::begin_handshake(const std::string& source, int per_source,
                                                          int total) {
    std::lock_guard lock(mutex_);
    if (handshakes_total_ >= total) return Refusal::total;
    auto [it, fresh] = handshakes_.try_emplace(source, 0);
    if (it->second >= per_source) return Refusal::per_source;
    ++it->second;
    ++handshakes_total_;
    return Refusal::none;
}

void ConnectionTable::end_handshake(const std::string& source) {
    std::lock_guard lock(mutex_);
    auto it = handshakes_.find(source);
    if (it == handshakes_.end()) return;
    --handshakes_total_;
    if (--it->second <= 0) handshakes_.erase(it);
}

}  // namespace tunneld
