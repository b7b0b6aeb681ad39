#include "tunneld/route/quorum.hpp"

#include <string>

namespace tunneld {

QuorumView quorum_of(std::vector<VoterView> voters, bool required) {
    QuorumView q;
    q.required = required;
    q.voters = voters.size();
    std::string reached, unreachable;
    for (const auto& v : voters) {
        if (v.reachable) {
            ++q.reached;
            reached += (reached.empty() ? "" : ", ") + v.name;
        } else {
            unreachable += (unreachable.empty() ? "" : "; ") + v.name +
                           (v.why.empty() ? "" : " (" + v.why + ")");
        }
    }
    q.members = std::move(voters);
    // No voters at all (a route with no database node in sight) is no majority.
    bool majority = q.voters > 0 && q.reached * 2 > q.voters;
    q.met = !required || majority;
    q.detail = "reaching " + std::to_string(q.reached) + " of " + std::to_string(q.voters) +
               " voters" + (reached.empty() ? "" : " (" + reached + ")") +
               (majority ? "" : ", a majority needs " + std::to_string(q.voters / 2 + 1)) +
               (unreachable.empty() ? "" : "; unreachable: " + unreachable);
    return q;
}

std::optional<std::string> SettledMajority::refusal(const QuorumView& q, Clock::time_point now) {
    std::lock_guard hold(mutex_);
    if (!q.met) {
        since_.reset();
        return q.detail;
    }
    if (!since_) since_ = now;
    auto held = std::chrono::duration_cast<std::chrono::milliseconds>(now - *since_);
    if (held >= settle_) return std::nullopt;
    return q.detail + ", a majority again for " + std::to_string(held.count()) + " ms of " +
           std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(settle_).count()) +
           " ms";
}

}  // namespace tunneld
