#include "tunneld/app/log_format.hpp"

#include <spdlog/pattern_formatter.h>

#include "tunneld/base/printable.hpp"

namespace tunneld {

namespace {

constexpr std::size_t kMaxMessage = 16 * 1024;

// "<3>" ... "<7>": the priority prefix journald reads from a service's stderr
// (sd-daemon(3)), so `journalctl -p warning` shows warnings and errors.
class JournalPriority final : public spdlog::custom_flag_formatter {
  public:
    void format(const spdlog::details::log_msg& msg, const std::tm&,
                spdlog::memory_buf_t& dest) override {
        const char* p = "<7>";
        switch (msg.level) {
            case spdlog::level::critical:
                p = "<2>";
                break;
            case spdlog::level::err:
                p = "<3>";
                break;
            case spdlog::level::warn:
                p = "<4>";
                break;
            case spdlog::level::info:
                p = "<6>";
                break;
            default:
                break;
        }
        dest.append(p, p + 3);
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<JournalPriority>();
    }
};

// The message itself, escaped (printable.hpp): the one place every log line's
// text passes, so no caller can forget it.
class SafeMessage final : public spdlog::custom_flag_formatter {
  public:
    void format(const spdlog::details::log_msg& msg, const std::tm&,
                spdlog::memory_buf_t& dest) override {
        std::string_view text(msg.payload.data(), msg.payload.size());
        if (is_printable(text) && text.size() <= kMaxMessage) {
            dest.append(text.data(), text.data() + text.size());
            return;
        }
        auto safe = printable(text, kMaxMessage);
        dest.append(safe.data(), safe.data() + safe.size());
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<SafeMessage>();
    }
};

}  // namespace

std::unique_ptr<spdlog::formatter> make_log_formatter(bool journal) {
    auto f = std::make_unique<spdlog::pattern_formatter>();
    f->add_flag<JournalPriority>('*').add_flag<SafeMessage>('&');
    f->set_pattern(journal ? "%*%&" : "%Y-%m-%dT%H:%M:%S.%e %^%l%$ %&");
    return f;
}

}  // namespace tunneld
