// The nftables guard of one node: applies, refreshes and removes the table
// described by the config's `firewall:` block. Used by the daemon and by
// `tunneld firewall show|apply|remove`.
//
// DNS and netlink are reached through two small interfaces, so the decisions
// (what a failed lookup keeps, what a failed commit leaves recorded) are
// unit-tested with scripted fakes, without root or a network.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "firewall/batch.hpp"
#include "firewall/spec.hpp"

namespace tunneld::firewall {

// Name resolution (A and AAAA) of one host.
class Resolver {
  public:
    virtual ~Resolver() = default;
    // The host's addresses (at least one), or what went wrong
    // ("primary.example.net: Name or service not known").
    virtual Result<std::vector<Prefix>> resolve(const std::string& host) = 0;
};
// getaddrinfo(3).
Resolver& system_resolver();

// Resolves peers[].connect hosts to host prefixes (without duplicates). Names
// that do not resolve are reported in `errors` and skipped. For `check` and
// `firewall show`; the running guard keeps last known addresses instead.
struct ResolvedPeers {
    std::vector<Prefix> addresses;
    std::vector<std::string> errors;  // one per name that did not resolve
};
ResolvedPeers resolve_peers(const Config& cfg, Resolver& resolver = system_resolver());

// The kernel's nf_tables.
class Netlink {
  public:
    virtual ~Netlink() = default;
    // Sends the batch; returns once the kernel acknowledged every message.
    // Throws StartupError otherwise (the kernel then applied none of it).
    virtual void commit(const Batch& batch) = 0;
    virtual bool table_exists(const std::string& table) = 0;
};
// libmnl over a netlink socket (nft_socket.hpp).
Netlink& kernel_netlink();

class Guard {
  public:
    explicit Guard(const Config& cfg, Resolver& resolver = system_resolver(),
                   Netlink& netlink = kernel_netlink())
        : cfg_(cfg), resolver_(resolver), netlink_(netlink) {}

    // Resolves the peers, then replaces the whole table in one transaction.
    // Throws StartupError (naming CAP_NET_ADMIN when that is what is missing).
    void apply();
    // Resolves the peers again. A peer whose name does not resolve keeps its
    // last known addresses (a DNS blip must never cut replication); an address
    // goes only when a successful lookup no longer returns it. When the
    // addresses differ from the table's, swaps the set contents in one
    // transaction. Returns a one-line description of the change, or "" when
    // nothing changed. Throws StartupError when the commit fails; nothing is
    // recorded then, so the next refresh tries the same change again.
    std::string refresh();
    // Puts the last applied table back, in one transaction, if it is gone
    // (`nft flush ruleset`, a reload of nftables.service). Returns whether it
    // had to. Throws StartupError.
    bool heal();
    // Whether the table is there now. Throws StartupError when nf_tables
    // cannot be asked.
    bool table_exists() { return netlink_.table_exists(spec_.table); }
    // Replaces the table with the last applied spec, in one transaction (after
    // someone else changed it). Throws StartupError.
    void reapply();
    // Deletes the table (no error if it is gone already).
    void remove();

    // What the kernel acknowledged last.
    const GuardSpec& spec() const { return spec_; }
    // The lookups of the last apply/refresh that failed (their peers kept their
    // last known addresses), and how many lookups have failed since start.
    const std::vector<std::string>& resolve_errors() const { return resolve_errors_; }
    std::uint64_t resolve_failures() const { return resolve_failures_; }

  private:
    // Resolves every peer, falling back to the last known addresses of those
    // that fail. Fills `known` with the result per host; records nothing else.
    std::vector<Prefix> resolve(std::map<std::string, std::vector<Prefix>>& known);

    const Config& cfg_;
    Resolver& resolver_;
    Netlink& netlink_;
    GuardSpec spec_;                                    // as acknowledged by the kernel
    std::vector<Prefix> peers_;                         // the peer addresses in spec_
    std::map<std::string, std::vector<Prefix>> known_;  // last good lookup per host
    std::vector<std::string> resolve_errors_;
    std::uint64_t resolve_failures_ = 0;
};

// Human-readable form of a spec: one line per port with what is allowed.
std::string describe(const GuardSpec& spec);

}  // namespace tunneld::firewall
