// The table-event watcher's netlink parser: a buffer of nf_tables event
// messages as recv() would return it.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "firewall/nft_socket.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // recv() gives an aligned buffer; so does this copy.
    std::vector<std::uint32_t> aligned((size + 3) / 4);
    if (size) std::memcpy(aligned.data(), data, size);
    bool touched = false;
    std::vector<tunneld::firewall::TableEvents::Change> changes;
    tunneld::firewall::parse_table_events(
        aligned.data(), size, "tunneld", touched, [](std::uint32_t port) { return port == 4242; },
        changes);
    return 0;
}
