// Text that came from outside (a peer's pong, an HTTP request, a DNS answer, a
// file's contents, a certificate field) made safe to write where a line or a
// field boundary means something: the journal (a newline starts a new entry,
// "<0>" at a line start sets its priority), an sd_notify datagram (a newline
// starts a new assignment: "\nWATCHDOG=trigger"), a log line, a one-line
// summary. Dependency-free, usable from every folder.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace tunneld {

// Longest text kept from one outside field by default: an error message, a
// status word. Longer text is cut and ends in "...".
inline constexpr std::size_t kPrintableMax = 512;

// `text` with every byte that is not printable ASCII (below 0x20, 0x7f, and
// 0x80 and up, which includes broken UTF-8) written as "\xNN", cut to at most
// `max` bytes of output (then ending in "..."). The result never holds a
// control character, so it can neither start a line nor end a field.
inline std::string printable(std::string_view text, std::size_t max = kPrintableMax) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(text.size() < max ? text.size() : max);
    for (unsigned char c : text) {
        const bool plain = c >= 0x20 && c < 0x7f;
        const std::size_t need = plain ? 1 : 4;
        if (out.size() + need > max) {
            // Room for the ellipsis: drop whole characters (never half an escape).
            while (!out.empty() && out.size() + 3 > max) {
                auto cut =
                    out.size() >= 4 && out[out.size() - 4] == '\\' && out[out.size() - 3] == 'x'
                        ? 4u
                        : 1u;
                out.resize(out.size() - cut);
            }
            if (max >= 3) out += "...";
            return out;
        }
        if (plain) {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// True when `text` holds no byte that printable() would escape.
inline bool is_printable(std::string_view text) {
    for (unsigned char c : text)
        if (c < 0x20 || c >= 0x7f) return false;
    return true;
}

}  // namespace tunneld
