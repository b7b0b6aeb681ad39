// The netlink conversation with nf_tables. One socket per operation, so no
// stale reply from an earlier one can be mistaken for an answer.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "firewall/batch.hpp"

struct mnl_socket;  // libmnl

namespace tunneld::firewall {

// The owner of a libmnl socket (the deleter is defined where libmnl is included).
struct MnlSocketClose {
    void operator()(::mnl_socket* s) const;
};
using MnlSocketPtr = std::unique_ptr<::mnl_socket, MnlSocketClose>;

struct DropCounter {
    std::uint64_t packets = 0, bytes = 0;
};

// Sends `batch` and waits for the kernel's acknowledgement of every message.
// Throws StartupError when any message fails (the kernel then applies none of
// the batch), naming what that message did and why; permission problems say
// that CAP_NET_ADMIN is needed.
void commit(const Batch& batch);

// The drop counters of the guard's rules in `table`, by protected port.
// Empty when the table does not exist. Throws StartupError on netlink errors.
std::map<std::uint16_t, DropCounter> read_drop_counters(const std::string& table);

// Whether `table` (family inet) exists.
bool table_exists(const std::string& table);

// Changes that other processes make to one table, read from nf_tables' netlink
// event group (NFNLGRP_NFTABLES): a `flush ruleset`, an added element, a deleted
// rule. Our own process's transactions are told apart by the netlink port id
// of the socket that committed them (commit() remembers its recent ones): the
// pid the kernel reports is a thread id, and inside a PID namespace (LXC,
// OpenVZ, nspawn VPSes) one of the initial namespace, so it cannot be used.
class TableEvents {
  public:
    struct Change {
        std::uint32_t pid = 0;  // 0: the kernel did not say (then only a missing table is acted on)
        std::string process;    // e.g. "nft"
        bool overrun = false;   // events were lost (socket buffer full): assume a change
    };

    explicit TableEvents(std::string table);  // subscribes; throws StartupError
    ~TableEvents();
    TableEvents(const TableEvents&) = delete;
    TableEvents& operator=(const TableEvents&) = delete;

    int fd() const;  // readable when events are queued
    // Reads everything queued, without blocking; one Change per foreign
    // transaction that touched the table.
    std::vector<Change> read();

  private:
    std::string table_;
    MnlSocketPtr nl_;
    bool touched_ = false;  // an event of the current transaction named our table
};

// Reads one buffer of nf_tables event messages (as received from the event
// group): sets `touched` when a message names `table`, and at each NEWGEN (the
// end of a transaction) appends a Change when the transaction touched it and
// `own(port id)` says it was not ours. Bytes from the kernel, but parsed
// defensively (fuzzed): malformed messages are skipped.
void parse_table_events(const void* data, std::size_t size, const std::string& table, bool& touched,
                        const std::function<bool(std::uint32_t)>& own,
                        std::vector<TableEvents::Change>& out);

// A sequence number for the next batch (unique within this process).
std::uint32_t next_seq(std::uint32_t messages);

}  // namespace tunneld::firewall
