// Durations as written in the config: an integer with a unit, "250ms", "30s",
// "5m", "1h". A bare number or an unknown unit is refused (is "30" seconds or ms?).
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tunneld {

using Duration = std::chrono::milliseconds;

// Parses `text`; returns nullopt when it is not <digits><ms|s|m|h> or overflows.
std::optional<Duration> parse_duration(std::string_view text);

// Formats as the largest unit that represents `d` exactly ("90s", "1500ms", "2h").
std::string format_duration(Duration d);

// Sizes: "16MB" -> 16777216; accepts B, kB, MB, GB, TB (1024-based,
// case-insensitive, also KiB/MiB/...), or a plain number of bytes. nullopt when invalid.
std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace tunneld
