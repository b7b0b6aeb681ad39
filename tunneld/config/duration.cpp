#include "tunneld/config/duration.hpp"

#include <cctype>
#include <charconv>
#include <cstdint>
#include <limits>

namespace tunneld {

std::optional<Duration> parse_duration(std::string_view text) {
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    if (digits == 0 || digits == text.size()) return std::nullopt;
    std::int64_t value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, value);
    if (ec != std::errc() || ptr != text.data() + digits) return std::nullopt;
    std::string_view unit = text.substr(digits);
    std::int64_t scale = 0;
    if (unit == "ms")
        scale = 1;
    else if (unit == "s")
        scale = 1000;
    else if (unit == "m")
        scale = 60'000;
    else if (unit == "h")
        scale = 3'600'000;
    else
        return std::nullopt;
    if (value > std::numeric_limits<std::int64_t>::max() / scale) return std::nullopt;
    return Duration(value * scale);
}

std::string format_duration(Duration d) {
    auto ms = d.count();
    if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
    if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
    if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || end == text.data()) return std::nullopt;
    std::string unit(end, text.data() + text.size());
    for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    static const std::pair<const char*, int> units[] = {
        {"", 0},  {"b", 0},  {"kb", 1},  {"kib", 1}, {"k", 1},  {"mb", 2},  {"mib", 2},
        {"m", 2}, {"gb", 3}, {"gib", 3}, {"g", 3},   {"tb", 4}, {"tib", 4}, {"t", 4}};
    for (const auto& [name, power] : units) {
        if (unit != name) continue;
        std::uint64_t v = n;
        for (int i = 0; i < power; ++i) {
            if (v > (UINT64_MAX >> 10)) return std::nullopt;
            v <<= 10;
        }
        return v;
    }
    return std::nullopt;
}

}  // namespace tunneld
