// The nftables guard of one node: applies, refreshes and removes the table
// described by the config's `firewall:` block. Used by the daemon and by
// `tunneld firewall show|apply|remove`.
#pragma once
#include <map>
#include <string>

#include "firewall/nft_socket.hpp"
#include "firewall/spec.hpp"

namespace tunneld::firewall {

class Guard {
public:
    explicit Guard(const Config& cfg) : cfg_(cfg) {}

    // Resolves the peers, then replaces the whole table in one transaction.
    // Throws StartupError (naming CAP_NET_ADMIN when that is what is missing).
    void apply();
    // Resolves the peers again; when their addresses changed, swaps the set
    // contents in one transaction (rules and counters stay). Returns a one-line
    // description of the change, or "" when nothing changed. Throws StartupError.
    std::string refresh();
    // Puts the last applied table back, in one transaction, if it is gone
    // (`nft flush ruleset`, a reload of nftables.service). Returns whether it
    // had to. Throws StartupError.
    bool heal();
    // Replaces the table with the last applied spec, in one transaction (after
    // someone else changed it). Throws StartupError.
    void reapply();
    // Deletes the table (no error if it is gone already).
    void remove();

    const GuardSpec& spec() const { return spec_; }
    const std::vector<std::string>& resolve_errors() const { return resolve_errors_; }

private:
    GuardSpec build();

    const Config& cfg_;
    GuardSpec spec_;
    std::vector<Prefix> peers_;
    std::vector<std::string> resolve_errors_;
};

// Human-readable form of a spec: one line per port with what is allowed.
std::string describe(const GuardSpec& spec);

}  // namespace tunneld::firewall
