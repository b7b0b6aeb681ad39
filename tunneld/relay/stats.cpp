#include "tunneld/relay/stats.hpp"

namespace tunneld {

const char* to_string(Direction d) { return d == Direction::inbound ? "inbound" : "outbound"; }

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void Traffic::set_error(std::string e) {
    std::lock_guard lock(mutex_);
    last_error_ = std::move(e);
    last_error_at_ = unix_now();
}

std::pair<std::string, std::int64_t> Traffic::last_error() const {
    std::lock_guard lock(mutex_);
    return {last_error_, last_error_at_};
}

Traffic& Stats::traffic(Direction d, const std::string& peer, const std::string& service) {
    std::lock_guard lock(mutex_);
    auto& slot = traffic_[{d, peer, service}];
    if (!slot) slot = std::make_unique<Traffic>();
    return *slot;
}

std::vector<std::pair<Stats::TrafficKey, Traffic*>> Stats::all_traffic() const {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<TrafficKey, Traffic*>> out;
    for (const auto& [key, t] : traffic_) out.emplace_back(key, t.get());
    return out;
}

void Stats::count_handshake(Direction d, HandshakeFailure f) {
    handshakes_[static_cast<int>(d)][static_cast<std::size_t>(f)]++;
}

std::uint64_t Stats::handshakes(Direction d, HandshakeFailure f) const {
    return handshakes_[static_cast<int>(d)][static_cast<std::size_t>(f)].load();
}

void Stats::count_key_exchange(Direction d, const std::string& group) {
    std::lock_guard lock(mutex_);
    ++key_exchanges_[{d, group.empty() ? "none" : group}];
}

std::map<std::pair<Direction, std::string>, std::uint64_t> Stats::key_exchanges() const {
    std::lock_guard lock(mutex_);
    return key_exchanges_;
}

void Stats::count_close(Direction d, CloseReason r) {
    closes_[static_cast<int>(d)][static_cast<std::size_t>(r)]++;
}

std::uint64_t Stats::closes(Direction d, CloseReason r) const {
    return closes_[static_cast<int>(d)][static_cast<std::size_t>(r)].load();
}

void Stats::count_reload(const Result<void>& done) {
    std::lock_guard lock(mutex_);
    (done ? reloads_.ok : reloads_.failed)++;
    reloads_.last_at = unix_now();
    reloads_.last_error = done ? "" : done.error().what;
}

Stats::Reloads Stats::reloads() const {
    std::lock_guard lock(mutex_);
    return reloads_;
}

}  // namespace tunneld
