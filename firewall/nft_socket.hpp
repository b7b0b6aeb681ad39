// The netlink conversation with nf_tables. One socket per operation, so no
// stale reply from an earlier one can be mistaken for an answer.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "firewall/batch.hpp"

namespace tunneld::firewall {

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

// A sequence number for the next batch (unique within this process).
std::uint32_t next_seq(std::uint32_t messages);

}  // namespace tunneld::firewall
